"""What a sink reads verified blobs through, wherever they are kept."""

from __future__ import annotations

from typing import BinaryIO, Protocol


class BlobSource(Protocol):
    """Verified blobs by digest. A sink never learns where or how they are stored."""

    def has(self, digest: str) -> bool:
        """Whether verified bytes for `digest` are here."""

    def size(self, digest: str) -> int: ...

    def read(self, digest: str) -> bytes:
        """The whole blob; meant for small ones (manifests, configs), which are often kept in memory."""

    def open(self, digest: str) -> BinaryIO:
        """The blob's bytes, unbuffered; OSError when they cannot be read."""

    def local_path(self, digest: str) -> str | None:
        """A regular file holding exactly the verified bytes, when there is one (to hardlink or copy in the
        kernel); None when the blob can only be opened."""

"""What a sink reads verified blobs through, wherever they are kept."""

from __future__ import annotations

from typing import BinaryIO, Protocol

from regcarve.model.inventory import Inventory


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


class InventoryBlobs:
    """What a BlobSource filled by one read shares: verified state and sizes from the inventory, small
    JSON from memory. Subclasses say where the bytes are (`open`, `local_path`)."""

    def __init__(self, inventory: Inventory):
        self._records = inventory.blobs
        self._json = inventory.json_blobs

    def has(self, digest: str) -> bool:
        rec = self._records.get(digest)
        return rec is not None and rec.verified

    def size(self, digest: str) -> int:
        return self._records[digest].size

    def read(self, digest: str) -> bytes:
        data = self._json.get(digest)
        if data is None:
            with self.open(digest) as f:
                data = f.read()
        return data

    def open(self, digest: str) -> BinaryIO:
        raise NotImplementedError

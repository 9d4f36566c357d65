"""A content-addressed blob store on the output filesystem.

A blob is written under a temporary name while it is hashed and renamed to `sha256/<hex>`
only when its bytes match the digest. Files in the store were therefore verified when they
were made; a rerun reuses one whose size is right instead of writing it again (the archive's
bytes are still hashed on every run).
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from regcarve.blobs.files import looks_like_json
from regcarve.blobs.source import InventoryBlobs
from regcarve.model.inventory import Inventory
from regcarve.model.manifests import JSON_LIMIT
from regcarve.model.names import hex_of
from regcarve.safefiles import is_temp, open_temp, output_error, write_all

_OVERLAP_MIN = 256 * 1024
_executor: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regcarve-hash")
    return _executor


@dataclass(slots=True)
class Consumed:
    actual: str  # sha256:<hex> of the bytes
    size: int
    json: bytes | None  # the bytes, when small and JSON-looking


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = os.lstat(self.path(digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def remove(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> set[str]:
        return {"sha256:" + p.name for p in self.blobs.iterdir()}

    def keep_only(self, needed: set[str]) -> None:
        """Remove every blob but `needed`: a throwaway store gives its disk and page cache back as soon as
        the run is done with a blob."""
        for digest in self.digests() - needed:
            self.remove(digest)

    def open_temp(self, digest: str) -> tuple[int, Path]:
        return open_temp(self.tmp / hex_of(digest), os.O_WRONLY, f"blob {digest}")

    def commit(self, tmp: Path, digest: str) -> None:
        try:
            os.replace(tmp, self.path(digest))  # replaces a symlink itself, never follows it
        except OSError as e:
            raise output_error(e, f"blob {digest}") from None

    def cleanup(self) -> None:
        """Remove temporary files left by this process and the tmp folder when empty."""
        suffix = f".{os.getpid()}.tmp"
        for p in self.tmp.iterdir() if self.tmp.is_dir() else ():
            if p.name.endswith(suffix) and is_temp(p.name):
                p.unlink(missing_ok=True)
        try:
            self.tmp.rmdir()
        except OSError:
            pass


class StoreBlobs(InventoryBlobs):
    """The BlobSource of a store's folder (`…/sha256`) filled by one read."""

    def __init__(self, folder: Path, inventory: Inventory):
        super().__init__(inventory)
        self._folder = str(folder) + os.sep

    def open(self, digest: str) -> BinaryIO:
        return open(self._folder + hex_of(digest), "rb", buffering=0)

    def local_path(self, digest: str) -> str:
        return self._folder + hex_of(digest)


def consume_blob(
    claimed: str,
    size: int,
    chunks: Iterable[memoryview],
    store: BlobStore | None,
) -> Consumed:
    """Hash a streaming blob, keep it in memory when it is small JSON, and store it when asked.

    The temporary file is removed on any failure, including a truncated input
    (the exception from `chunks` propagates).
    """
    h = hashlib.sha256()
    keep = size <= JSON_LIMIT
    parts: list[bytes] = []
    fd, tmp = -1, None
    what = f"blob {claimed}"
    if store is not None and not store.has(claimed, size):
        fd, tmp = store.open_temp(claimed)
    try:
        first = True
        for view in chunks:
            if first:
                keep = keep and looks_like_json(view)
                first = False
            if keep:
                parts.append(bytes(view))
            if fd >= 0 and len(view) >= _OVERLAP_MIN:
                # hash on the other core while this one writes; both release the GIL
                pending = _hasher().submit(h.update, view)
                try:
                    write_all(fd, view, what)
                finally:
                    pending.result()
            else:
                h.update(view)
                if fd >= 0:
                    write_all(fd, view, what)
        actual = "sha256:" + h.hexdigest()
        if fd >= 0:
            os.close(fd)
            fd = -1
            if actual == claimed:
                store.commit(tmp, claimed)
            else:
                os.unlink(tmp)
            tmp = None
        elif store is not None and actual == claimed:
            store.reused += 1
        return Consumed(actual, size, b"".join(parts) if keep else None)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            tmp.unlink(missing_ok=True)

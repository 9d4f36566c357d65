"""Registry storage as a folder on disk (`/var/lib/registry`, Harbor's `/data/registry`, a synced bucket):
walked when opened, verified when read, and its blobs handed to sinks where they lie — nothing copied.

Nothing in the storage is opened for writing, created, renamed or changed: the walk and the
verification open files read-only, and a sink gets the `data` files' own paths to hardlink from.
A blob file that is gone or replaced after it was verified is refused when a sink asks for it
(BlobUnavailable), which fails the images that use it.
"""

from __future__ import annotations

from typing import BinaryIO

from regcarve.blobs.files import BlobFile, check_unchanged, open_unchanged
from regcarve.blobs.source import BlobSource, InventoryBlobs
from regcarve.blobs.store import BlobStore
from regcarve.model.inventory import Inventory
from regcarve.sources.base import VERIFICATIONS, Progress
from regcarve.sources.tree.root import StorageRoot
from regcarve.sources.tree.verify import verify_all, verify_sizes
from regcarve.sources.tree.walk import TreeWalker


class TreeSource:
    needs_store = False  # the storage's own files are what sinks read

    def __init__(self, root: StorageRoot, verification: str = "sha256"):
        if verification not in VERIFICATIONS:
            raise ValueError(f"verification {verification!r}")
        self.root = root
        self.verification = verification
        self._walk = TreeWalker(root).run()
        hashed = verification == "sha256"
        self.total_bytes = sum(b.identity.size for b in self._walk.blob_files) if hashed else None

    def read(self, store: BlobStore | None, progress: Progress | None = None) -> Inventory:
        verify = verify_all if self.verification == "sha256" else verify_sizes
        verify(self._walk.facts, self._walk.blob_files, progress)
        return self._walk.inv

    def blobs(self, inventory: Inventory, store: BlobStore | None) -> BlobSource:
        return TreeBlobs(inventory, {b.digest: b for b in self._walk.blob_files})

    def close(self) -> None:
        pass


class TreeBlobs(InventoryBlobs):
    """The BlobSource over the storage's `data` files: each checked to be the file that was verified."""

    def __init__(self, inventory: Inventory, files: dict[str, BlobFile]):
        super().__init__(inventory)
        self._files = files

    def open(self, digest: str) -> BinaryIO:
        blob = self._files[digest]
        return open_unchanged(blob.path, blob.identity)

    def local_path(self, digest: str) -> str:
        blob = self._files[digest]
        check_unchanged(blob.path, blob.identity)
        return blob.path

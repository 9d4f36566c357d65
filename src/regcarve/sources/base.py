"""What every source of registry storage offers: one read into an Inventory, then its verified blobs."""

from __future__ import annotations

from typing import Callable, Protocol

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore
from regcarve.model.inventory import Inventory

Progress = Callable[[int], None]  # bytes drawn from the input so far
VERIFICATIONS = ("sha256", "size")  # how a storage folder's blobs are checked: hashed, or present with the right size


class InputError(Exception):
    """The input cannot be read as registry storage; the message is one line, meant for the user."""


class StorageSource(Protocol):
    total_bytes: int | None  # what progress counts towards; None when unknown (a pipe)
    needs_store: bool  # its blobs can be read afterwards only from a store the read fills

    def read(self, store: BlobStore | None, progress: Progress | None = None) -> Inventory:
        """The one read of the input: every blob verified (and kept in `store` when one is given)."""

    def blobs(self, inventory: Inventory, store: BlobStore | None) -> BlobSource:
        """Where the verified blobs can be read once `read` has run."""

    def close(self) -> None: ...

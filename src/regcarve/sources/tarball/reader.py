"""Registry storage in a tar stream, file or pipe: read once, every blob verified into the store."""

from __future__ import annotations

import os
from typing import BinaryIO

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore, StoreBlobs
from regcarve.model.inventory import Inventory
from regcarve.sources.base import InputError, Progress
from regcarve.sources.tarball.scan import scan
from regcarve.sources.tarball.walker import Input, open_input


def opened_input(path: str | os.PathLike[str] | BinaryIO, own: bool = False) -> Input:
    """The tar stream a path names, or an InputError saying in one line why it cannot be read."""
    try:
        return open_input(path, own)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; regcarve reads the tarball (or an OUT of convert --format dir), "
                         "not an extracted tree") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None


class TarballSource:
    needs_store = True  # a stream is read once: its blobs must be kept to be read again

    def __init__(self, path: str | os.PathLike[str] | BinaryIO):
        self._input = opened_input(path)
        self.total_bytes = self._input.total_bytes

    def read(self, store: BlobStore | None, progress: Progress | None = None) -> Inventory:
        return scan(self._input, store, progress)

    def blobs(self, inventory: Inventory, store: BlobStore | None) -> BlobSource:
        if store is None:
            raise ValueError("a tar stream is read once: its blobs can be read afterwards only from a store")
        return StoreBlobs(store.blobs, inventory)

    def close(self) -> None:
        self._input.close()

    def __enter__(self) -> TarballSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

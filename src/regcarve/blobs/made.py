"""Blobs a run makes (the config and manifest of a schema1 image converted to schema2) beside the source's
verified blobs, behind the one BlobSource every sink reads.

A made blob is held in memory (configs and manifests are small) and, when the run has a store, written
into it under its digest, as a verified blob would be: sinks that hardlink find a file there, the store
keeps it while the output links it, and an OUT of `convert --format dir` read back as a source has it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from regcarve.blobs.source import BlobSource
from regcarve.model.names import hex_of
from regcarve.safefiles import atomic_write


class MadeBlobs:
    """The source's blobs, and those the run made (`add`), read alike."""

    def __init__(self, source: BlobSource, folder: Path | None = None):
        self.source = source
        self.folder = folder  # the store's sha256/ folder, where made blobs are written; None: memory only
        self.made: dict[str, bytes] = {}

    def add(self, data: bytes) -> str:
        """Keep `data` as a blob; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.made:
            self.made[digest] = data
            if self.folder is not None:
                path = self.folder / hex_of(digest)
                if not _holds(path, data):
                    atomic_write(path, data)
        return digest

    def has(self, digest: str) -> bool:
        return digest in self.made or self.source.has(digest)

    def size(self, digest: str) -> int:
        data = self.made.get(digest)
        return len(data) if data is not None else self.source.size(digest)

    def read(self, digest: str) -> bytes:
        data = self.made.get(digest)
        return data if data is not None else self.source.read(digest)

    def open(self, digest: str) -> BinaryIO:
        data = self.made.get(digest)
        return io.BytesIO(data) if data is not None else self.source.open(digest)

    def local_path(self, digest: str) -> str | None:
        if digest in self.made:
            return str(self.folder / hex_of(digest)) if self.folder is not None else None
        return self.source.local_path(digest)


def _holds(path: Path, data: bytes) -> bool:
    """Whether an earlier run left exactly these bytes at `path` (a regular file, never followed)."""
    try:
        if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False

"""Where registry storage comes from: every source gives one read into an Inventory, then its verified blobs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from regcarve.sources.base import VERIFICATIONS, InputError, StorageSource


def open_source(path: str, verification: str = "sha256") -> StorageSource:
    """The source a command line names: a file or `-` holding a tar stream of the storage, an OUT that
    `regcarve convert --format dir` wrote, or a folder holding the storage itself (the only source whose
    blobs can be checked by `size` alone: a stream must be hashed to be kept, an OUT was verified)."""
    from regcarve.sources.convertout import ConvertOutSource, is_convert_out
    from regcarve.sources.tarball import TarballSource
    from regcarve.sources.tree import TreeSource, require_root

    if is_convert_out(path):
        source: StorageSource = ConvertOutSource(path)
    elif path != "-" and os.path.isdir(path):
        return TreeSource(require_root(path), verification)
    else:
        source = TarballSource(path)
    if verification != "sha256":
        source.close()
        raise ValueError(f"--verify {verification} applies to a storage folder; {path} is not one")
    return source


def open_sources(paths: Sequence[str], verification: str = "sha256") -> StorageSource:
    """The source several SOURCE paths name: one path as `open_source` reads it, or tar streams (volumes,
    MEDIA folders standing for theirs, byte parts of one volume joined) read one after the other as one
    storage."""
    from regcarve.sources.volumes import VolumesSource, volume_files

    if isinstance(paths, str):  # one path, not its characters
        raise TypeError("open_sources takes a sequence of paths")
    files = volume_files(paths)
    if files is None:
        return open_source(paths[0], verification)
    if len(files) == 1 and isinstance(files[0], str):
        return open_source(files[0], verification)
    if verification != "sha256":
        raise ValueError(f"--verify {verification} applies to a storage folder; tarballs and their parts are always hashed")
    return VolumesSource(files)


def storage_root(path: str) -> str | None:
    """The storage folder a path names, resolved, when it names one: what regcarve must never write into."""
    from regcarve.sources.convertout import is_convert_out
    from regcarve.sources.tree import find_root

    if path == "-" or is_convert_out(path) or not os.path.isdir(path):
        return None
    found = find_root(path)
    return found.path if found else None


__all__ = ["InputError", "StorageSource", "VERIFICATIONS", "open_source", "open_sources", "storage_root"]

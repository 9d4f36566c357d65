"""Where registry storage comes from: every source gives one read into an Inventory, then its verified blobs."""

from __future__ import annotations

from regcarve.sources.base import InputError, StorageSource


def open_source(path: str) -> StorageSource:
    """The source a command line names: a file or `-` holding a tar stream of the storage, or an OUT that
    `regcarve convert --format dir` wrote."""
    from regcarve.sources.convertout import ConvertOutSource, is_convert_out
    from regcarve.sources.tarball import TarballSource

    if is_convert_out(path):
        return ConvertOutSource(path)
    return TarballSource(path)


__all__ = ["InputError", "StorageSource", "open_source"]

"""Several tar streams read as one storage: the volumes of `regcarve pack` (or any registry-storage
tarballs), one after the other, into one inventory and one store, each byte read once.

Reading them in order is untarring them in order into one storage: a link file of a later volume (a
tag moved by a later delivery) overrides an earlier one, and a blob that verifies in any volume is the
blob, whichever volumes hold broken or missing copies. What concerns one stream alone (a cut, data
after its end, a blob that does not verify) names its file.

A MEDIA folder (one holding the pack.json `regcarve pack` wrote) stands for its volumes, in the order
pack.json lists them. A volume cut into byte parts (parts.py) is one stream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore, StoreBlobs
from regcarve.model.expected import PACK_JSON, PACK_SCHEMA
from regcarve.model.inventory import Inventory
from regcarve.sources.base import InputError, Progress
from regcarve.model.parts import part_of
from regcarve.sources.parts import PartedFile, grouped, open_parts
from regcarve.sources.tarball.reader import opened_input
from regcarve.sources.tarball.scan import TarScanner
from regcarve.sources.tarball.walker import Input


def pack_index(path: str) -> dict | None:
    """The pack.json of a MEDIA folder, when `path` is one."""
    if path == "-" or not os.path.isdir(path):
        return None
    try:
        doc = json.loads((Path(path) / PACK_JSON).read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and doc.get("schema") == PACK_SCHEMA and isinstance(doc.get("volumes"), list):
        return doc
    return None


Stream = str | PartedFile  # a file (or - ), or the parts of one


def media_volumes(path: str) -> list[Stream] | None:
    """The volumes of the MEDIA folder `path`, in pack.json order; None when it is no MEDIA folder."""
    doc = pack_index(path)
    if doc is None:
        return None
    try:
        return [PartedFile(tuple(os.path.join(path, str(p["file"])) for p in v["parts"])) if v.get("parts")
                else os.path.join(path, str(v["file"])) for v in doc["volumes"]]
    except (KeyError, TypeError):
        raise InputError(f"{path}/{PACK_JSON}: its volumes have no file names") from None


def volume_files(paths: Sequence[str]) -> list[Stream] | None:
    """The tar streams several SOURCE paths stand for, in order (byte parts of one volume joined into
    one); None for one path that is not a MEDIA folder nor a part (read as it always was). A folder among
    several (a storage folder, an OUT) is a ValueError: only streams are read one after the other into
    one storage; a part missing or out of order is an InputError naming it."""
    if len(paths) == 1 and pack_index(paths[0]) is None and part_of(paths[0]) is None:
        return None
    files: list[Stream] = []
    for path in paths:
        found = media_volumes(path)
        if found is not None:
            files += found
        elif path != "-" and os.path.isdir(path):
            raise ValueError(f"{path} is a folder: several sources are read as one storage only when each is a "
                             "tarball (or a MEDIA folder of regcarve pack); give the folder alone")
        else:
            files.append(path)
    if sum(1 for f in files if f == "-") > 1:
        raise ValueError("standard input (-) can be given once")
    return [*_joined_parts(files)]


def _joined_parts(files: list[Stream]) -> list[Stream]:
    """Runs of part paths given one by one joined into one stream each; a MEDIA folder's already are."""
    out: list[Stream] = []
    loose: list[str] = []
    for f in [*files, None]:
        if isinstance(f, str):
            loose.append(f)
            continue
        out += grouped(loose)
        loose = []
        if f is not None:
            out.append(f)
    return out


class VolumesSource:
    """Tar streams read in order into one inventory. Every one is opened and sniffed before any is read, so
    that a missing or unreadable file is said before the work starts; each is then reopened in its turn
    (a compressed one opened starts decompressing ahead, and only one at a time should)."""

    needs_store = True  # streams are read once: their blobs must be kept to be read again

    def __init__(self, paths: Sequence[Stream]):
        self.paths = list(paths)
        self._stdin: Input | None = None  # standard input cannot be reopened: kept open from the start
        sizes: list[int | None] = []
        try:
            for path in self.paths:
                inp = _opened(path)
                sizes.append(inp.total_bytes)
                if path == "-":
                    self._stdin = inp
                else:
                    inp.close()
        except BaseException:
            self.close()
            raise
        self.total_bytes = None if None in sizes else sum(s for s in sizes if s is not None)

    def read(self, store: BlobStore | None, progress: Progress | None = None) -> Inventory:
        scanner = TarScanner(store)
        done = 0
        for path in self.paths:
            if progress is not None:
                scanner.progress = lambda n, before=done: progress(before + n)
            with (self._stdin if path == "-" and self._stdin is not None else _opened(path)) as inp:
                scanner.read(inp, str(path))
            done += inp.source_bytes
        return scanner.finish()

    def blobs(self, inventory: Inventory, store: BlobStore | None) -> BlobSource:
        if store is None:
            raise ValueError("tar streams are read once: their blobs can be read afterwards only from a store")
        return StoreBlobs(store.blobs, inventory)

    def close(self) -> None:
        if self._stdin is not None:
            self._stdin.close()

    def __enter__(self) -> VolumesSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _opened(path: Stream) -> Input:
    if isinstance(path, PartedFile):
        return open_parts(path)
    try:
        return opened_input(path)
    except InputError as e:
        raise InputError(str(e) if str(e).startswith(f"{path}:") else f"{path}: {e}") from None

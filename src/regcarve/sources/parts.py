"""The byte parts of one volume (`regcarve pack --split-oversize`: NAME.tar.part000, .part001, …) read as
the one stream they were cut from: the files chained in order, before any decompression or tar parsing.

Parts are recognised by name. Given on the command line they must come in order, from part000, with no
number skipped; a next part lying beside the last one given means one was left out. Each is said by name
when it is missing or out of place."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

from regcarve.model.parts import part_name, part_of
from regcarve.sources.base import InputError
from regcarve.sources.tarball.reader import opened_input
from regcarve.sources.tarball.walker import Input

@dataclass(frozen=True)
class PartedFile:
    """One stream cut into files, in order."""

    paths: tuple[str, ...]

    def __str__(self) -> str:
        last = os.path.basename(self.paths[-1])
        return self.paths[0] if len(self.paths) == 1 else f"{self.paths[0]}…{last[last.rfind('.part'):]}"


def grouped(files: Sequence[str]) -> list[str | PartedFile]:
    """The streams several paths stand for: consecutive parts of one whole joined into one. A part missing,
    out of order or left out is an InputError naming it."""
    out: list[str | PartedFile] = []
    run: list[str] = []
    given = {os.path.basename(p) for p in files}
    for path in [*files, ""]:
        found = part_of(path) if path and path != "-" else None
        if run and (found is None or found[0] != part_of(run[0])[0] or found[1] == 0):
            out.append(_checked(run, given))
            run = []
        if found is None:
            if path:
                out.append(path)
            continue
        run.append(path)
    return out


def _checked(run: list[str], given: set[str]) -> PartedFile:
    whole, _ = part_of(run[0])  # type: ignore[misc]
    for expected, path in enumerate(run):
        number = part_of(path)[1]  # type: ignore[index]
        if number != expected:
            wanted = part_name(whole, expected)
            where = "given out of order" if os.path.basename(wanted) in given else "missing"
            raise InputError(f"{wanted}: {where}; the parts of {whole} are read in order from "
                             f"{os.path.basename(part_name(whole, 0))}, none left out") from None
    following = part_name(whole, len(run))
    if os.path.exists(following):
        raise InputError(f"{following}: a part of {whole} lies beside the others but was not given; "
                         "give every part, in order")
    return PartedFile(tuple(run))


class PartsReader(io.RawIOBase):
    """The parts' bytes as one unbuffered file; each part opened in its turn."""

    def __init__(self, parted: PartedFile):
        super().__init__()
        self.paths = parted.paths
        sizes = []
        for path in self.paths:  # every part said missing before any is read
            try:
                sizes.append(os.stat(path).st_size)
            except FileNotFoundError:
                raise InputError(f"{path}: no such file (a part of {parted})") from None
            except OSError as e:
                raise InputError(f"{path}: {e.strerror}") from None
        self.total = sum(sizes)
        self._index = 0
        self._file = self._open(0)

    def _open(self, index: int):
        try:
            return open(self.paths[index], "rb", buffering=0)
        except OSError as e:
            raise InputError(f"{self.paths[index]}: {e.strerror}") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            n = self._file.readinto(buffer)
            if n or self._index + 1 == len(self.paths):
                return n or 0
            self._file.close()
            self._index += 1
            self._file = self._open(self._index)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def open_parts(parted: PartedFile) -> Input:
    """The tar stream the parts make together."""
    reader = PartsReader(parted)
    try:
        inp = opened_input(reader, own=True)
    except InputError as e:
        raise InputError(f"{parted}: {e}") from None
    inp.total_bytes = reader.total
    return inp

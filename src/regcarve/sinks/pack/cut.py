"""A volume larger than the volume size (`pack --split-oversize`) cut into byte parts NAME.part000,
.part001, … of at most the volume size each, which `cat` (or regcarve, given them in order) joins again.

The parts are cut from the end of the volume's temporary file, which is shortened after each one: the
disk holds the volume and one part more at most, and what stays is part000. Every part is made under a
temporary name; all are renamed into place only once all are cut."""

from __future__ import annotations

import os
import re
from pathlib import Path

from regcarve.model.parts import part_name
from regcarve.safefiles import open_temp, remove_path, remove_stale_temps, replace
from regcarve.sinks.pack.index import Part
from regcarve.sinks.tarout import TarOut


def part_count(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


def cut_into_parts(fd: int, tmp: Path, final: Path, size: int, part_size: int,
                   hashes: list[str]) -> tuple[Part, ...]:
    """The volume open as `fd` (its temporary file `tmp`, `size` bytes) cut into the parts of `final`,
    renamed into place; parts an earlier cut left beyond the last one go. `hashes`: each part's sha256, as
    the volume's read-back computed them, so the parts are copied in the kernel, not read here.
    OutputError when a part cannot be written."""
    count = part_count(size, part_size)
    if len(hashes) != count:
        raise ValueError(f"{final.name}: {len(hashes)} part hashes for {count} parts")
    made: dict[int, tuple[Path, Part]] = {}
    try:
        for number in range(count - 1, 0, -1):
            start, end = number * part_size, min(size, (number + 1) * part_size)
            made[number] = _copied(fd, start, end, final.with_name(part_name(final.name, number)), hashes[number])
            os.ftruncate(fd, start)
        first = final.with_name(part_name(final.name, 0))
        made[0] = (tmp, Part(first.name, min(size, part_size), hashes[0]))
    except BaseException:  # the volume's own file is its writer's to discard
        for path, _ in made.values():
            if path != tmp:
                remove_path(path)
        raise
    for number in range(count - 1, -1, -1):
        path, part = made[number]
        replace(path, final.parent / part.file)
    remove_parts_beyond(final, count)
    return tuple(made[n][1] for n in range(count))


def _copied(fd: int, start: int, end: int, part_final: Path, sha256: str) -> tuple[Path, Part]:
    remove_stale_temps(part_final)
    out, tmp = open_temp(part_final, os.O_WRONLY, what=part_final)
    try:
        TarOut(out, part_final).copy(fd, start, end - start)
    except BaseException:
        os.close(out)
        remove_path(tmp)
        raise
    os.close(out)
    return tmp, Part(part_final.name, end - start, sha256)


def remove_parts_beyond(final: Path, count: int) -> None:
    """Parts of `final` numbered `count` and on (an earlier cut into more parts left them)."""
    pattern = re.compile(re.escape(final.name) + r"\.part(\d{3,})")
    for name in os.listdir(final.parent):
        match = pattern.fullmatch(name)
        if match and int(match[1]) >= count:
            remove_path(final.parent / name)

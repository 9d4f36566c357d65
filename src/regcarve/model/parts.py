"""The names of a volume's byte parts (`regcarve pack --split-oversize`): NAME.part000, NAME.part001, …,
which joined in order are the volume NAME. Shared by the pack that cuts them and the sources that join them."""

from __future__ import annotations

import re

_PART = re.compile(r"(?P<whole>.+)\.part(?P<number>\d{3,})")


def part_name(whole: str, number: int) -> str:
    return f"{whole}.part{number:03d}"


def part_of(path: str) -> tuple[str, int] | None:
    """The whole file a part belongs to and the part's number; None for a path that is no part."""
    match = _PART.fullmatch(path)
    return (match["whole"], int(match["number"])) if match else None

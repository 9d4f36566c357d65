"""What a pack run is asked for (the command line's options), and what pack.json and the summary read of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from regcarve.sinks.pack.index import FinishedVolume
from regcarve.sinks.pack.plan import Plan, VolumePlan


@dataclass(frozen=True)
class PackOptions:
    volume_size: int
    compression: str = "none"
    name: str = "registry"
    held: dict[str, str] = field(default_factory=dict)  # --since: blob → the delivery the far side has it from
    since: tuple[str, ...] = ()  # the --since files, as given
    source: dict = field(default_factory=dict)  # what the source held, for pack.json
    split_oversize: bool = False  # an image larger than a volume: its volume cut into byte parts, not refused


class PackedRun(Protocol):
    """What pack.json and the summary are made from (the PackSink, once its volumes are written)."""

    media: Path
    options: PackOptions
    plan: Plan
    written: dict[int, FinishedVolume]  # volume number → what was written
    reused: int

    def file_name(self, volume: VolumePlan) -> str: ...

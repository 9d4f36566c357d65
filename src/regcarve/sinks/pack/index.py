"""MEDIA's index files: `pack.json` (schema regcarve.pack/v1), `SHA256SUMS`, the state an interrupted run
leaves for its rerun, and what `--since` files say the far side holds."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from regcarve.model.expected import EXPECTED_BLOB, PACK_JSON
from regcarve.model.expected import PACK_SCHEMA as SCHEMA
from regcarve.safefiles import atomic_write

SHA256SUMS = "SHA256SUMS"
STATE = ".regcarve-pack-state.json"  # finished volumes of an unfinished run; removed when pack.json is written
_MISSING_CODES = {"missing-blob", "corrupt-blob", EXPECTED_BLOB}


class SinceError(ValueError):
    """A --since file that is neither a pack.json nor a `regcarve list --json` inventory."""


def file_sha256(path: Path, *more: Path) -> str:
    """The sha256 of a file (of several files one after the other: a volume's parts)."""
    h = hashlib.sha256()
    for each in (path, *more):
        with open(each, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def held_blobs(path: Path) -> dict[str, str]:
    """digest → the delivery the far side has it from, for every config and layer the file says it holds.

    A pack.json: every blob its volumes stored, and those it expected from earlier deliveries (the far
    side has them too once that delivery is in). A `list --json` inventory: every blob its tags use,
    except those its problems call missing or corrupt."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise SinceError(f"--since {path}: {e}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == SCHEMA:
        label = f"{doc.get('name', '?')} ({path})"
        held = {}
        for volume in doc.get("volumes", []):
            held.update({d: label for d in volume.get("stored", [])})
            held.update({e["digest"]: e["from"] for e in volume.get("expects", [])})
        return held
    if schema == "regcarve.inventory/v1":
        return _inventory_blobs(doc, f"the storage listed in {path}")
    raise SinceError(f"--since {path}: not a pack.json ({SCHEMA}) nor a `regcarve list --json` inventory")


def _inventory_blobs(doc: dict, label: str) -> dict[str, str]:
    bad = {p.get("subject") for p in doc.get("problems", []) if p.get("code") in _MISSING_CODES}
    bad.update(doc.get("blobs", {}).get("corrupt", []))
    held: dict[str, str] = {}

    def visit(manifest: dict) -> None:
        for d in ([manifest["config"]] if manifest.get("config") else []) + manifest.get("layers", []):
            if d.get("digest") and d["digest"] not in bad:
                held[d["digest"]] = label
        for child in manifest.get("children", []):
            visit(child)

    for tag in doc.get("tags", []) + (doc.get("untagged") or []):
        if tag.get("manifest"):
            visit(tag["manifest"])
    return held


@dataclass(frozen=True)
class Part:
    """One byte part of a volume cut into parts (pack --split-oversize)."""

    file: str
    size: int
    sha256: str

    def json(self) -> dict:
        return {"file": self.file, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class FinishedVolume:
    plan: str  # the sha256 of what the volume was planned to hold, in order
    size: int  # of the whole volume (its parts together)
    sha256: str
    tar_bytes: int
    parts: tuple[Part, ...] = ()  # none: the volume is one file

    def json(self) -> dict:
        doc = {"plan": self.plan, "size": self.size, "sha256": self.sha256, "tar_bytes": self.tar_bytes}
        return doc | ({"parts": [p.json() for p in self.parts]} if self.parts else {})

    @classmethod
    def from_json(cls, doc: dict) -> FinishedVolume:
        parts = tuple(Part(p["file"], p["size"], p["sha256"]) for p in doc.get("parts", []))
        return cls(doc["plan"], doc["size"], doc["sha256"], doc["tar_bytes"], parts)


def read_state(media: Path) -> dict[str, FinishedVolume]:
    """The volumes an earlier run finished: from the pack.json of a complete run, and the state file of an
    interrupted one."""
    finished = {}
    try:
        for v in json.loads((media / PACK_JSON).read_bytes())["volumes"]:
            finished[v["file"]] = FinishedVolume.from_json(v)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        doc = json.loads((media / STATE).read_bytes())
        finished.update({name: FinishedVolume.from_json(v) for name, v in doc.items()})
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return finished


def write_state(media: Path, finished: dict[str, FinishedVolume]) -> None:
    doc = {name: v.json() for name, v in finished.items()}
    atomic_write(media / STATE, json.dumps(doc, indent=1).encode())


def write_index(media: Path, doc: dict) -> None:
    """pack.json, then SHA256SUMS over the files on MEDIA (each volume, or each part of one cut into parts)
    and pack.json (what `sha256sum -c` checks), then the run's state goes."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    atomic_write(media / PACK_JSON, data)
    lines = [f"{f['sha256']}  {f['file']}\n" for v in doc["volumes"] for f in (v.get("parts") or [v])]
    lines.append(f"{hashlib.sha256(data).hexdigest()}  {PACK_JSON}\n")
    atomic_write(media / SHA256SUMS, "".join(lines).encode())
    try:
        os.unlink(media / STATE)
    except FileNotFoundError:
        pass


def read_sums(media: Path) -> dict[str, str]:
    """SHA256SUMS as file name → hex digest (text and `*binary` markers alike)."""
    sums = {}
    for line in (media / SHA256SUMS).read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition(" ")
            sums[name.lstrip(" *")] = digest.lower()
    return sums

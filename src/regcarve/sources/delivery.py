"""Which blobs a delta volume expects from earlier deliveries: read from the pack.json beside the volume
(the MEDIA folder it came in), or from the one `--pack-json FILE` names.

Beside the volume, a pack.json counts only when it lists the volume's file name (a stray pack.json next
to another tarball says nothing about it), and only that volume's `expects` are taken. Named with
`--pack-json`, every volume's `expects` are taken: the volume may have been renamed or piped in, and an
expected blob is expected by every volume whose images use it, so the union answers for any one of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore
from regcarve.model.expected import PACK_JSON, ExpectedBlobs, ExpectedError, expected_in_pack, lists_volume, merged
from regcarve.model.inventory import Inventory
from regcarve.model.parts import part_of
from regcarve.sources.earlier import Taken, WithTaken, take_expected


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ExpectedError(f"--pack-json {path}: {getattr(e, 'strerror', None) or e}") from None


def expected_for(source: str, pack_json: Path | None = None) -> ExpectedBlobs:
    """What the volume SOURCE expects: from `pack_json` when given (ExpectedError when it cannot be
    read), else from a pack.json beside SOURCE that lists it; nothing when there is none."""
    if pack_json is not None:
        try:
            return expected_in_pack(_load(pack_json), str(pack_json))
        except ExpectedError as e:
            raise ExpectedError(str(e) if str(e).startswith("--pack-json") else f"--pack-json {e}") from None
    if source == "-" or not os.path.isfile(source):
        return ExpectedBlobs()
    beside = Path(source).parent / PACK_JSON
    name = os.path.basename(source)
    name = (part_of(name) or (name, 0))[0]  # a part of a volume answers as its volume
    try:
        doc = json.loads(beside.read_bytes())
    except (OSError, ValueError):
        return ExpectedBlobs()
    if not lists_volume(doc, name):
        return ExpectedBlobs()
    return expected_in_pack(doc, str(beside), name)


def expected_for_all(sources: list[str], pack_json: Path | None = None) -> ExpectedBlobs:
    """What the SOURCE paths given together expect: a MEDIA folder's pack.json answers for all its volumes,
    a volume file's for it; `--pack-json` for them all."""
    from regcarve.sources.volumes import pack_index

    if pack_json is not None or len(sources) == 1 and pack_index(sources[0]) is None:
        return expected_for(sources[0], pack_json)
    parts = []
    for source in sources:
        doc = pack_index(source)
        parts.append(expected_for(source) if doc is None else expected_in_pack(doc, str(Path(source) / PACK_JSON)))
    return merged(parts)


@dataclass
class Receiving:
    """The receiving side of a delta: what the volume expects, and the earlier OUTs it may take that from."""

    expected: ExpectedBlobs = field(default_factory=ExpectedBlobs)
    earlier: tuple[Path, ...] = ()  # --blobs-from
    taken: Taken = field(default_factory=Taken)

    held: int = 0  # expected blobs the input holds itself (several deliveries read as one storage)

    def complete(self, inv: Inventory, store: BlobStore | None) -> None:
        """After the read: the expected blobs the input lacks, from the earlier OUTs into the store."""
        self.held = sum(1 for digest in self.expected.delivery if digest in inv.blobs)
        if self.expected and self.earlier and store is not None:
            self.taken = take_expected(inv, self.expected.delivery, self.earlier, store)

    def blobs(self, source: BlobSource) -> BlobSource:
        return WithTaken(source, self.taken) if self.taken.files else source

    def lines(self) -> list[str]:
        """What the run says about the delivery, once."""
        if not self.expected:
            return []
        lines = [self.expected.line() + (f"; {self.held} of them are in the input itself" if self.held else "")]
        if self.earlier:
            lines.append(f"--blobs-from: {len(self.taken.files)} of {len(self.expected.delivery)} expected blob(s) "
                         "taken from earlier OUTs (each hashed)")
        lines += [f"warning: --blobs-from: {path} does not hash to its name; passed over" for path in self.taken.rejected]
        return lines

"""Blobs a delta volume expects: configs and layers an earlier delivery shipped, which a volume made with
`regcarve pack --since` leaves out. Its pack.json (schema regcarve.pack/v1) lists them per volume as
`expects: [{digest, from, repositories}]`; this is the receiving side's reading of that list.

A blob that is absent and expected is not the input's fault: it fails an image only where the
destination cannot supply it either (a registry that lacks it, a convert without an earlier OUT holding
it), and the message names the delivery it was expected from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PACK_SCHEMA = "regcarve.pack/v1"
PACK_JSON = "pack.json"
EXPECTED_BLOB = "expected-blob"  # the problem code of an absent blob the delivery expects


class ExpectedError(ValueError):
    """A pack.json that cannot say what its volumes expect: one line."""


@dataclass(frozen=True)
class ExpectedBlobs:
    """What one delivery's volumes expect from earlier deliveries."""

    delivery: dict[str, str] = field(default_factory=dict)  # digest → the earlier delivery (pack.json's `from`)
    repositories: dict[str, tuple[str, ...]] = field(default_factory=dict)  # digest → repositories that use it
    said_by: str = ""  # the pack.json they were read from
    name: str = ""  # the delivery the volume belongs to

    def __bool__(self) -> bool:
        return bool(self.delivery)

    def line(self) -> str:
        """What the run says about them, once."""
        froms = sorted(set(self.delivery.values()))
        return (f"delivery {self.name or '?'} ({self.said_by}): {len(self.delivery)} blob(s) expected from "
                f"earlier deliveries: {', '.join(froms)}")


def expected_in_pack(doc: object, said_by: str, volume: str | None = None) -> ExpectedBlobs:
    """The blobs a pack.json's volumes expect: those of the volume named `volume` (its file name), or of
    every volume (an expected blob is expected by every volume whose images use it, so the union answers
    for any one of them)."""
    if not isinstance(doc, dict) or doc.get("schema") != PACK_SCHEMA or not isinstance(doc.get("volumes"), list):
        raise ExpectedError(f"{said_by}: not a regcarve pack index ({PACK_SCHEMA})")
    delivery: dict[str, str] = {}
    repositories: dict[str, tuple[str, ...]] = {}
    try:
        for v in doc["volumes"]:
            if volume is not None and v.get("file") != volume:
                continue
            for entry in v.get("expects", []):
                digest = str(entry["digest"])
                delivery[digest] = str(entry.get("from") or "an earlier delivery")
                repositories[digest] = tuple(str(r) for r in entry.get("repositories", ()))
    except (AttributeError, KeyError, TypeError):
        raise ExpectedError(f"{said_by}: its volumes' `expects` lists are malformed") from None
    return ExpectedBlobs(delivery, repositories, said_by, str(doc.get("name", "")))


def lists_volume(doc: object, volume: str) -> bool:
    """Whether a pack.json names `volume` (a file name) among its volumes."""
    if not isinstance(doc, dict) or doc.get("schema") != PACK_SCHEMA or not isinstance(doc.get("volumes"), list):
        return False
    return any(isinstance(v, dict) and v.get("file") == volume for v in doc["volumes"])


def merged(parts: list[ExpectedBlobs]) -> ExpectedBlobs:
    """What several deliveries' volumes read as one storage expect, together (the catalog takes a blob as
    expected only when no volume read holds it)."""
    given = [p for p in parts if p]
    if len(given) <= 1:
        return given[0] if given else ExpectedBlobs()
    delivery: dict[str, str] = {}
    repositories: dict[str, tuple[str, ...]] = {}
    for part in given:
        delivery.update(part.delivery)
        for digest, repos in part.repositories.items():
            repositories[digest] = tuple(dict.fromkeys(repositories.get(digest, ()) + repos))
    said_by = ", ".join(dict.fromkeys(p.said_by for p in given))
    return ExpectedBlobs(delivery, repositories, said_by, ", ".join(dict.fromkeys(p.name or "?" for p in given)))

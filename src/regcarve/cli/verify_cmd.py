"""`regcarve verify MEDIA`: every file of a delivery against SHA256SUMS and pack.json, then every volume
read as a storage (the `list` pass) to prove it holds its images whole."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from regcarve.cli import common
from regcarve.cli.common import Failure
from regcarve.model.expected import EXPECTED_BLOB, ExpectedBlobs, ExpectedError, expected_in_pack
from regcarve.run import read_catalog
from regcarve.sinks.pack.index import PACK_JSON, SCHEMA, SHA256SUMS, file_sha256, read_sums
from regcarve.sources import InputError, open_sources
from regcarve.sources.delivery import Receiving


@dataclass
class Verdict:
    file: str
    images: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


def load_pack(media: Path) -> tuple[dict, dict[str, str]]:
    try:
        doc = json.loads((media / PACK_JSON).read_bytes())
    except (OSError, ValueError) as e:
        raise Failure(f"{media / PACK_JSON}: {getattr(e, 'strerror', None) or e}", common.EXIT_INPUT) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise Failure(f"{media / PACK_JSON} is not a regcarve pack index ({SCHEMA})", common.EXIT_INPUT)
    try:
        sums = read_sums(media)
    except OSError as e:
        raise Failure(f"{media / SHA256SUMS}: {e.strerror}", common.EXIT_INPUT) from None
    return doc, sums


def check_file(media: Path, name: str, size: int | None, sums: dict[str, str], recorded: str | None) -> list[str]:
    """What is wrong with one file: absent, its size, its sha256 against SHA256SUMS and pack.json."""
    path = media / name
    if not os.path.isfile(path):
        return ["missing"]
    faults = []
    if size is not None and os.path.getsize(path) != size:
        faults.append(f"{os.path.getsize(path):,} bytes, pack.json says {size:,}")
    actual = file_sha256(path)
    if name not in sums:
        faults.append(f"not listed in {SHA256SUMS}")
    elif sums[name] != actual:
        faults.append(f"sha256 {actual} does not match {SHA256SUMS} ({sums[name]})")
    if recorded is not None and recorded != actual:
        faults.append(f"sha256 does not match pack.json ({recorded})")
    return faults


def check_parts(media: Path, volume: dict, sums: dict[str, str]) -> list[str]:
    """What is wrong with a volume cut into parts: each part as a file (named), then the parts joined
    against the volume's size and sha256."""
    faults = []
    for part in volume["parts"]:
        faults += [f"{part['file']}: {f}" for f in check_file(media, part["file"], part.get("size"), sums, part.get("sha256"))]
    if faults:
        return faults
    paths = [media / p["file"] for p in volume["parts"]]
    size = sum(os.path.getsize(p) for p in paths)
    if volume.get("size") is not None and size != volume["size"]:
        faults.append(f"its parts together: {size:,} bytes, pack.json says {volume['size']:,}")
    elif file_sha256(*paths) != volume.get("sha256"):
        faults.append(f"its parts together do not match the volume's sha256 in pack.json ({volume.get('sha256')})")
    return faults


def list_pass(paths: list[Path], volume: dict, expected: ExpectedBlobs) -> list[str]:
    """Read the volume (its file, or its parts in order) as a storage and check each of its images is there
    whole, with its digest; a blob the volume expects from an earlier delivery may be absent."""
    try:
        with open_sources([str(p) for p in paths]) as source:
            catalog = read_catalog(source, None, receiving=Receiving(expected))
    except InputError as e:
        return [f"not readable as registry storage: {e}"]
    found = {image.ref: image for image in catalog.images}
    faults = []
    for entry in volume.get("images", []):
        image = found.get(entry["ref"])
        if image is None:
            faults.append(f"{entry['ref']}: not in the volume")
            continue
        if image.digest != entry["digest"]:
            faults.append(f"{entry['ref']}: the tag names {image.digest}, pack.json says {entry['digest']}")
        errors = [p for p in image.errors() if p.code != EXPECTED_BLOB]
        faults += [f"{entry['ref']}: {p.code}: {p.message}" for p in errors]
    if catalog.inventory.input.truncated:
        faults.append(catalog.inventory.input.truncated)
    return faults


def _expects(doc: dict, media: Path, volume: str) -> ExpectedBlobs:
    try:
        return expected_in_pack(doc, str(media / PACK_JSON), volume)
    except ExpectedError as e:
        raise Failure(str(e), common.EXIT_INPUT) from None


VERIFY_EXIT_CODES_HELP = """\b
Exit codes:
  0    every file is whole and every volume holds its images whole
  1    a file is missing or damaged, or a volume does not hold its images whole
  3    MEDIA holds no readable pack.json or SHA256SUMS
"""


@click.command("verify", epilog=VERIFY_EXIT_CODES_HELP)
@click.argument("media", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
def verify_command(ctx, media: Path) -> None:
    """Check a delivery that `regcarve pack` made: every file against SHA256SUMS and pack.json, and every
    volume read as a registry storage that holds each of its images whole, with its digest. A volume cut
    into parts (pack --split-oversize): every part, then the parts joined as the volume."""
    doc, sums = load_pack(media)
    verdicts = [Verdict(PACK_JSON, faults=check_file(media, PACK_JSON, None, sums, None))]
    for volume in doc.get("volumes", []):
        verdict = Verdict(volume["file"], [i["ref"] for i in volume.get("images", [])])
        if volume.get("parts"):
            verdict.faults = check_parts(media, volume, sums)
            files = [media / p["file"] for p in volume["parts"]]
        else:
            verdict.faults = check_file(media, volume["file"], volume.get("size"), sums, volume.get("sha256"))
            files = [media / volume["file"]]
        if not any(f.endswith("missing") for f in verdict.faults):
            verdict.faults += list_pass(files, volume, _expects(doc, media, volume["file"]))
        verdicts.append(verdict)
    listed = {v.file for v in verdicts} | {p["file"] for v in doc.get("volumes", []) for p in v.get("parts") or []}
    verdicts += [Verdict(name, faults=["listed in SHA256SUMS but not in pack.json"]) for name in sums if name not in listed]
    bad = [v for v in verdicts if v.faults]
    for v in verdicts:
        if v.faults:
            holds = f" (holds {len(v.images)} image(s): {', '.join(v.images)})" if v.images else ""
            click.echo(f"BAD {v.file}{holds}", err=True)
            for fault in v.faults:
                click.echo(f"    {fault}", err=True)
        else:
            click.echo(f"ok  {v.file}" + (f" ({len(v.images)} image(s))" if v.images else ""))
    images = sum(len(v.images) for v in verdicts)
    if bad:
        click.echo(f"{len(bad)} of {len(verdicts)} file(s) bad; images they hold: "
                   f"{sum(len(v.images) for v in bad)} of {images}", err=True)
    else:
        click.echo(f"all {len(verdicts)} file(s) whole; {images} image(s) in {len(verdicts) - 1} volume(s)")
    ctx.exit(common.EXIT_PROBLEMS if bad else common.EXIT_OK)

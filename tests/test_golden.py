"""Every output format, on every committed fixture, against trees recorded before the code was reshaped.

Each recorded tree (`tests/golden/<fixture>.<variant>.json`) lists every path below OUT with its kind,
size and sha256, plus the report and `list --json`. Schema1 manifests are signed with a fresh key on
every run, so a signed manifest is recorded by its payload digest, and the digest of its signed bytes
(which names a blob in an OCI layout and appears in index.json) is replaced by a stable token.

To record anew after an intended change of output: `REGCARVE_RECORD_GOLDEN=1 python3 -m pytest
tests/test_golden.py`, then review the diff of tests/golden/ like any other change.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, SIGNED_ARCHIVE, regcarve
from regcarve.model.schema1 import is_schema1, payload_digest

GOLDEN = Path(__file__).parent / "golden"
RECORD = os.environ.get("REGCARVE_RECORD_GOLDEN") == "1"

VARIANTS = {
    "dir": ["--format", "dir"],
    "dir-platform": ["--format", "dir", "--platform", "linux/arm64", "--platform", "linux/amd64"],
    "oci": ["--format", "oci"],
    "oci-shared": ["--format", "oci", "--oci-layout", "shared"],
    "docker-archive": ["--format", "docker-archive"],
    "docker-archive-single": ["--format", "docker-archive", "--single-file", "{out}/all.tar",
                              "--repo-prefix", "harbor.example.com/proj"],
    "docker-archive-compressed": ["--format", "docker-archive", "--keep-compressed"],
}
FIXTURES = {"registry": MAIN_ARCHIVE, "gc-damaged": GC_ARCHIVE, "signed": SIGNED_ARCHIVE}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signed_schema1(out: Path) -> dict[str, str]:
    """hex of each signed schema1 manifest's bytes → a token naming its payload digest."""
    found = {}
    for p in out.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 1 << 20:
            data = p.read_bytes()
            if b'"signatures"' in data and is_schema1(data):
                found[_sha(data)] = "schema1-signed-" + payload_digest(data).removeprefix("sha256:")
    return found


def _normalize(text: str, signed: dict[str, str]) -> str:
    for hexdigest, token in signed.items():
        text = text.replace(hexdigest, token)
    return text


def tree(out: Path, report: Path) -> dict:
    signed = _signed_schema1(out)
    files: dict[str, dict] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if rel.parts[0] == ".regcarve":
            continue
        st = p.lstat()
        key = _normalize(str(rel), signed)
        if stat.S_ISLNK(st.st_mode):
            files[key] = {"kind": "symlink", "target": os.readlink(p)}
        elif stat.S_ISDIR(st.st_mode):
            files[key] = {"kind": "dir"}
        else:
            data = p.read_bytes()
            if b'"signatures"' in data and is_schema1(data):
                content = "payload " + payload_digest(data)
            else:
                content = _sha(_normalize(data.decode("latin-1"), signed).encode("latin-1"))
            files[key] = {"kind": "file", "size": st.st_size if key == str(rel) else None, "content": content}
    doc = json.loads(_normalize(report.read_text(), signed))
    doc["out"] = "OUT"
    return {"files": files, "report": doc}


def _run(archive: Path, variant: str, tmp_path: Path) -> tuple[int, dict]:
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    args = [a.replace("{out}", str(out)) for a in VARIANTS[variant]]
    run = regcarve("convert", archive, "-o", out, "--report", report, "-q", *args)
    assert run.code in (0, 1), run.stderr
    recorded = tree(out, report)
    recorded["exit"] = run.code
    return run.code, recorded


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_output_is_byte_identical_to_the_recorded_tree(fixture, variant, tmp_path):
    _, got = _run(FIXTURES[fixture], variant, tmp_path)
    path = GOLDEN / f"{fixture}.{variant}.json"
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert got["exit"] == want["exit"]
    assert got["report"] == want["report"]
    assert sorted(got["files"]) == sorted(want["files"])
    for name, entry in want["files"].items():
        assert got["files"][name] == entry, name


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_inventory_json_is_identical_to_the_recorded_one(fixture):
    run = regcarve("list", "--json", "--untagged", FIXTURES[fixture])
    got = {"exit": run.code, "inventory": json.loads(run.stdout)}
    path = GOLDEN / f"{fixture}.list.json"
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())

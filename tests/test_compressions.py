"""The committed fixture re-compressed by xz, pixz, bzip2, pbzip2, lbzip2 and lz4 (issue 16): the same inventory and
the same `dir:` tree as the recorded ones of its `.tar.gz`, from a file and from stdin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import regcarve
from test_golden import GOLDEN, tree

COMPRESSORS = {  # name → (command writing stdin compressed to stdout, the compression regcarve names)
    "xz": (["xz", "-c"], "xz"),  # what `tar -cJf` runs
    "pixz": (["pixz"], "xz"),
    "bzip2": (["bzip2", "-c"], "bzip2"),  # what `tar -cjf` runs
    "pbzip2": (["pbzip2", "-c", "-p2"], "bzip2"),
    "lbzip2": (["lbzip2", "-c", "-n", "2"], "bzip2"),
    "lz4": (["lz4", "-c"], "lz4"),  # what `tar -I lz4` runs
    # two frames with block checksums one after the other, a skippable frame between them
    "lz4-frames": (["bash", "-c", 'f=$(mktemp); cat >"$f"; n=$(( $(stat -c %s "$f") / 2 )); '
                    'head -c "$n" "$f" | lz4 -c -BX -B4; printf "\\x50\\x2a\\x4d\\x18\\x03\\x00\\x00\\x00abc"; '
                    'tail -c +"$((n + 1))" "$f" | lz4 -c -BX -B4; rm -f "$f"'], "lz4"),
}


@pytest.fixture(scope="session")
def recompressed(plain_tar, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recompressed")
    made = {}
    for name, (argv, _) in COMPRESSORS.items():
        made[name] = folder / f"registry.{name}"
        with open(plain_tar, "rb") as src, open(made[name], "wb") as dst:
            subprocess.run(argv, stdin=src, stdout=dst, check=True)
    return made


def test_the_archives_have_the_shapes_that_matter(recompressed):
    """pixz: several xz blocks; pbzip2: one stream per block; lbzip2: one stream of several blocks."""
    def xz_blocks(path: Path) -> int:
        out = subprocess.run(["xz", "--robot", "-l", str(path)], capture_output=True, text=True, check=True).stdout
        return int(next(line.split()[2] for line in out.splitlines() if line.startswith("file")))

    assert xz_blocks(recompressed["xz"]) == 1 and xz_blocks(recompressed["pixz"]) > 1
    assert recompressed["pbzip2"].read_bytes().count(b"BZh9" + b"1AY&SY") > 1
    lbzip2 = recompressed["lbzip2"].read_bytes()
    assert lbzip2.count(b"BZh9") == 1 and lbzip2.count(b"1AY&SY") > 1
    frames = recompressed["lz4-frames"].read_bytes()
    assert frames.count(b"\x04\x22\x4d\x18") == 2 and b"\x50\x2a\x4d\x18\x03\x00\x00\x00abc" in frames


def _without_input_facts(doc: dict) -> dict:
    """The report or inventory, less the size and compression of the input (all else must match)."""
    doc = json.loads(json.dumps(doc))
    for key in ("bytes", "compression"):
        doc["input"].pop(key)
    return doc


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_same_inventory_as_the_gzip_fixture(recompressed, name):
    want = json.loads((GOLDEN / "registry.list.json").read_text())
    run = regcarve("list", "--json", "--untagged", recompressed[name])
    got = json.loads(run.stdout)
    assert run.code == want["exit"], run.stderr
    assert got["input"]["compression"] == COMPRESSORS[name][1]
    assert got["input"]["bytes"] == recompressed[name].stat().st_size
    assert _without_input_facts(got) == _without_input_facts(want["inventory"])


@pytest.mark.parametrize("via", ["file", "stdin"])
@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_same_dir_tree_as_the_gzip_fixture(recompressed, name, via, tmp_path):
    want = json.loads((GOLDEN / "registry.dir.json").read_text())
    out, report = tmp_path / "out", tmp_path / "report.json"
    if via == "file":
        run = regcarve("convert", recompressed[name], "-o", out, "--report", report, "-q", "--format", "dir")
    else:
        run = regcarve("convert", "-", "-o", out, "--report", report, "-q", "--format", "dir",
                       input=recompressed[name].read_bytes())
    got = tree(out, report)
    assert run.code == want["exit"], run.stderr
    assert got["report"]["input"]["compression"] == COMPRESSORS[name][1]
    assert {**got["report"], "input": None} == {**want["report"], "input": None}
    assert got["files"] == want["files"]

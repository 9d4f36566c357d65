"""Exit codes that mean what they say (issue 12): warnings do not fail a run unless --strict, a
selection that matches nothing fails and leaves OUT as it was, and the table fits a terminal.

The inputs are the real registry's storage (fixtures/registry.tar.gz), as it is or with one byte of
one layer flipped (extracted and tarred again with GNU tar)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import MAIN_ARCHIVE, regcarve

from regcarve.cli.text import middle_cut

SHARED_LAYER = "sha256:7b43ca7103c9cbb5ec242aa8e532642b6efe6c8842db44d1ac1a970374601556"  # team/zstd:1's


@pytest.fixture(scope="module")
def corrupt_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corrupt")
    subprocess.run(["tar", "-xzf", str(MAIN_ARCHIVE), "-C", str(root)], check=True)
    hexd = SHARED_LAYER.split(":")[1]
    data = root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    archive = root / "corrupt.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(root), "docker"], check=True)
    return archive


def test_warnings_alone_exit_0_and_strict_makes_them_count():
    inv = json.loads(regcarve("list", "--json", "-q", MAIN_ARCHIVE).stdout)
    assert {p["code"] for p in inv["problems"]} >= {"orphan-blob"}
    assert all(p["severity"] == "warning" for p in inv["problems"])
    plain = regcarve("list", "-q", MAIN_ARCHIVE)
    assert plain.code == 0 and "warning: orphan-blob: " in plain.stderr
    assert regcarve("list", "-q", "--strict", MAIN_ARCHIVE).code == 1


def test_convert_and_list_agree_on_warnings(tmp_path):
    every_dir_can_hold = ("--exclude", "team/nested:*")  # skopeo cannot copy a nested index: skipped
    assert regcarve("convert", "-q", "-o", str(tmp_path / "a"), *every_dir_can_hold, MAIN_ARCHIVE).code == 0
    assert regcarve("convert", "-q", "--strict", "-o", str(tmp_path / "b"), *every_dir_can_hold,
                    MAIN_ARCHIVE).code == 1


def test_a_corrupt_blob_a_tag_uses_is_an_error(corrupt_archive, tmp_path):
    run = regcarve("list", "--no-progress", str(corrupt_archive))
    assert run.code == 1
    assert f"error: corrupt-blob: layer {SHARED_LAYER} is corrupt" in run.stderr and "team/zstd:1" in run.stderr
    converted = regcarve("convert", "-q", "-o", str(tmp_path / "out"), str(corrupt_archive))
    assert converted.code == 1 and "failed  team/zstd:1: layer " in converted.stderr


def listing(root: Path) -> dict[str, tuple]:
    """Names, modes, sizes, contents, and mtimes — but of the store's own folders (blobs are added
    to them while the input is read, and taken out again)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = os.lstat(path)
            mtime = None if path.is_dir() and path.is_relative_to(root / ".regcarve") else st.st_mtime_ns
            content = path.read_bytes() if path.is_file() else None
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_size, mtime, content)
    return found


def test_a_selection_matching_nothing_fails_and_makes_no_out(tmp_path):
    out = tmp_path / "out"
    run = regcarve("convert", "-q", "-o", str(out), "--image", "nomatch*", MAIN_ARCHIVE)
    assert run.code == 5
    assert run.stderr.strip().splitlines()[-1] == (
        "regcarve: no tag matched the selection (--image 'nomatch*') among the input's 15 tag(s); "
        "`regcarve list` shows them")
    assert not out.exists()


def test_a_selection_matching_nothing_leaves_an_earlier_out_as_it_was(tmp_path):
    out = tmp_path / "out"
    assert regcarve("convert", "-q", "-o", str(out), "--image", "team/web:1.0", MAIN_ARCHIVE).code == 0
    before = listing(out)
    run = regcarve("convert", "-q", "-o", str(out), "--image", "team/*", "--exclude", "team/*", MAIN_ARCHIVE)
    assert run.code == 5 and "(--image 'team/*' --exclude 'team/*')" in run.stderr
    assert listing(out) == before


def test_schema1_is_reported_with_the_media_type_written(tmp_path):
    signed, stored = ("application/vnd.docker.distribution.manifest.v1+prettyjws",
                      "application/vnd.docker.distribution.manifest.v1+json")
    inv = json.loads(regcarve("list", "--json", "-q", MAIN_ARCHIVE).stdout)
    s1 = next(t for t in inv["tags"] if t["ref"] == "legacy/old:s1")
    assert (s1["media_type"], s1["stored_media_type"]) == (signed, stored)
    assert (s1["manifest"]["media_type"], s1["manifest"]["stored_media_type"]) == (signed, stored)
    assert "stored_media_type" not in next(t for t in inv["tags"] if t["ref"] == "team/web:1.0")
    report = tmp_path / "report.json"
    regcarve("convert", "-q", "-o", str(tmp_path / "out"), "--report", str(report), MAIN_ARCHIVE)
    row = next(i for i in json.loads(report.read_text())["images"] if i["ref"] == "legacy/old:s1")
    assert row["status"] == "written" and (row["media_type"], row["stored_media_type"]) == (signed, stored)
    written = json.loads((tmp_path / "out/legacy/old:s1/manifest.json").read_bytes())
    assert "signatures" in written  # what the report calls prettyjws is what is on disk


def test_help_shows_examples_and_each_command_its_own_exit_codes():
    listed = regcarve("list", "--help").stdout
    assert "Examples:" in listed and "regcarve list docker.tar.gz" in listed
    assert "convert:" not in listed and "5    --image" not in listed
    for command in ("convert", "push"):
        shown = regcarve(command, "--help").stdout
        assert "Examples:" in shown and f"regcarve {command} docker.tar.gz" in shown
        assert "5    --image/--exclude matched no tag" in shown and "--no-progress" in shown and "--strict" in shown


@pytest.mark.parametrize("text,width,expected", [
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcde…hijk"),
    ("team/a-very-long-repository-name:tag", 12, "team/a…e:tag"),
])
def test_middle_cut(text, width, expected):
    assert middle_cut(text, width) == expected and len(middle_cut(text, width)) <= width


def test_a_long_reference_is_cut_to_the_terminal_width_and_kept_whole_in_a_pipe():
    from regcarve.cli.text import table_lines
    from regcarve.run import read_catalog
    from regcarve.sources import open_source

    source = open_source(str(MAIN_ARCHIVE))
    try:
        catalog = read_catalog(source, None)
    finally:
        source.close()
    whole = table_lines(catalog)
    fitted = table_lines(catalog, width=120)
    assert max(len(line) for line in whole) > 160  # the cosign signature tag is long
    assert max(len(line) for line in fitted) <= 120
    sig = next(line for line in fitted if line.startswith("team/web:sha256"))
    assert "…" in sig and sig.split()[0].endswith(".sig")
    narrow = table_lines(catalog, width=60)  # too narrow for the other columns: references stay legible
    assert min(len(line.split()[0]) for line in narrow if "…" in line) >= 29

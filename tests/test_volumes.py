"""Several sources read as one storage: the volumes `regcarve pack` cut from a fixture, given one by one or
as their MEDIA folder, list, convert and push as the fixture does; a later volume's tag overrides an
earlier one; a damaged volume fails only its images and is named; folders do not mix with tarballs."""

from __future__ import annotations

import filecmp
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import MAIN_ARCHIVE, regcarve

SMALL = ("--volume-size", "270K", "--exclude", "app:v1")  # app:v1 alone needs 1.6 MB: without it, 3 volumes


def volumes(media: Path) -> list[Path]:
    return [media / v["file"] for v in json.loads((media / "pack.json").read_text())["volumes"]]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """The main fixture in two uncompressed volumes, every tag packed."""
    out = tmp_path_factory.mktemp("volumes") / "media"
    run = regcarve("pack", MAIN_ARCHIVE, "-o", out, "--volume-size", "1600K", "-q")
    assert run.code == 0, run.stderr
    assert len(volumes(out)) >= 2
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The main fixture but app:v1 in small volumes, gzip'd."""
    out = tmp_path_factory.mktemp("small") / "media"
    run = regcarve("pack", MAIN_ARCHIVE, "-o", out, "--volume-size", "400K", "--exclude", "app:v1", "--compress",
                   "gzip", "-q")
    assert run.code == 0, run.stderr
    assert len(volumes(out)) >= 3
    return out


def tags(*sources, extra=()) -> dict[str, tuple[str, str]]:
    run = regcarve("list", "--json", *sources, *extra)
    return {t["ref"]: (t["digest"], t["status"]) for t in json.loads(run.stdout)["tags"]}


def test_list_of_every_volume_is_the_list_of_the_archive(media, small):
    whole = tags(MAIN_ARCHIVE)
    assert tags(*volumes(media)) == whole
    assert tags(media) == whole  # the MEDIA folder: its volumes in pack.json order
    assert tags(small) == {r: v for r, v in whole.items() if r != "app:v1"}
    assert tags(*volumes(media)[:1]) != whole  # one volume alone is not the storage
    assert regcarve("list", media).code == 0


def test_the_input_is_read_once_and_summed(small, tmp_path):
    files = volumes(small)
    run = regcarve("convert", small, "-o", tmp_path / "out")
    assert run.code == 1  # team/nested: dir cannot hold a nested index
    total = sum(f.stat().st_size for f in files)
    assert f"({'gzip'}) read once" in run.stderr
    listed = json.loads(regcarve("list", "--json", *files).stdout)
    assert listed["input"]["bytes"] == total


def _tree(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file() and ".regcarve" not in p.parts}


def test_convert_of_the_media_folder_gives_the_archive_s_dir_trees(media, tmp_path):
    whole, joined = tmp_path / "whole", tmp_path / "joined"
    a = regcarve("convert", MAIN_ARCHIVE, "-o", whole, "-q")
    b = regcarve("convert", media, "-o", joined, "-q")
    assert a.code == b.code == 1  # team/nested, in both
    assert "team/nested" in b.stderr
    expected, got = _tree(whole), _tree(joined)
    assert expected and set(got) == set(expected)
    for rel in expected:
        if not filecmp.cmp(got[rel], expected[rel], shallow=False):  # a schema1 manifest is signed anew each run
            assert _unsigned(got[rel]) == _unsigned(expected[rel]), rel


def _unsigned(manifest: Path) -> dict:
    doc = json.loads(manifest.read_bytes())
    assert doc.pop("signatures"), manifest
    return doc


def test_push_of_several_volumes_gives_every_tag_its_source_digest(media, registry):
    run = regcarve("push", *volumes(media), registry.host, "--plain-http", "-q")
    assert run.code == 0, run.stderr
    whole = tags(MAIN_ARCHIVE)
    assert f"{len(whole)} tag(s) at {registry.host} ({len(whole)} pushed" in run.stderr
    for ref, (digest, status) in whole.items():
        assert status == "ok" and registry.manifest(*ref.rsplit(":", 1))[0] == digest, ref


def _tag_link(repo: str, tag: str, digest: str) -> bytes:
    """A tar holding one tag link file: the tag moved to `digest`, as a later delivery would ship it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = digest.encode()
        info = tarfile.TarInfo(f"docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_later_volume_s_tag_overrides_an_earlier_one(media, tmp_path):
    whole = tags(MAIN_ARCHIVE)
    other = whole["team/web:2.0"][0]
    assert whole["team/web:1.0"][0] != other
    moved = tmp_path / "moved.tar"
    moved.write_bytes(_tag_link("team/web", "1.0", other))
    after = tags(media, moved)
    assert after["team/web:1.0"] == (other, "ok")
    assert {r: v for r, v in after.items() if r != "team/web:1.0"} == {r: v for r, v in whole.items()
                                                                     if r != "team/web:1.0"}
    assert tags(moved, *volumes(media)) == whole  # given first, the volumes' link overrides it


def test_a_damaged_middle_volume_fails_only_its_images_and_is_named(tmp_path):
    media = tmp_path / "media"
    assert regcarve("pack", MAIN_ARCHIVE, "-o", media, *SMALL, "-q").code == 0  # uncompressed: a bit flips in a blob
    files = volumes(media)
    doc = json.loads((media / "pack.json").read_text())
    middle = doc["volumes"][1]
    victim = files[1]
    elsewhere = {m.name for f in files if f != victim for m in tarfile.open(f)}
    with tarfile.open(victim) as tar:  # the biggest blob only the middle volume holds
        blob = max((m for m in tar if m.name.endswith("/data") and m.name not in elsewhere), key=lambda m: m.size)
    with open(victim, "r+b") as f:
        f.seek(blob.offset_data + blob.size // 2)
        byte = f.read(1)
        f.seek(blob.offset_data + blob.size // 2)
        f.write(bytes([byte[0] ^ 1]))
    digest = "sha256:" + blob.name.rsplit("/", 2)[-2]
    run = regcarve("list", "--json", media)
    assert run.code == 1
    listed = {t["ref"]: t for t in json.loads(run.stdout)["tags"]}
    bad = {r for r, t in listed.items() if t["status"] != "ok"}
    assert bad and bad <= {i["ref"] for i in middle["images"]}
    assert f"{digest} is corrupt in {victim} (its bytes hash to" in run.stdout
    converted = regcarve("convert", media, "-o", tmp_path / "out")
    assert converted.code == 1
    failed = {line.split()[1].rstrip(":") for line in converted.stderr.splitlines() if line.startswith("failed ")}
    assert failed == bad - {"team/nested:latest"}  # dir skips the nested index, whatever the volumes
    assert f"is corrupt in {victim}" in converted.stderr
    whole = tags(MAIN_ARCHIVE)
    for ref, t in listed.items():
        if ref not in bad:
            assert (t["digest"], t["status"]) == whole[ref]
    # a cut volume: what came before the cut and every other volume is still read; the file is named
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in files:
        (cut / f.name).write_bytes(f.read_bytes())
    (cut / "pack.json").write_bytes((media / "pack.json").read_bytes())
    with open(cut / files[1].name, "r+b") as f:
        f.truncate(files[1].stat().st_size // 2 + 100)
    run = regcarve("list", "--json", cut)
    assert run.code == 1
    assert f"{cut / files[1].name}: input truncated" in run.stderr
    listed = {t["ref"]: t for t in json.loads(run.stdout)["tags"]}
    for other in (doc["volumes"][0], doc["volumes"][2]):
        for image in other["images"]:
            assert listed[image["ref"]]["digest"] == image["digest"]


def test_folders_do_not_mix_with_tarballs(media, tmp_path):
    out = tmp_path / "out"
    assert regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q").code == 1
    run = regcarve("list", out, MAIN_ARCHIVE)
    assert run.code == 2 and len(run.stderr.strip().splitlines()) == 1
    assert f"{out} is a folder" in run.stderr
    run = regcarve("list", MAIN_ARCHIVE, tmp_path / "absent.tar")
    assert run.code == 3 and f"{tmp_path / 'absent.tar'}: no such file" in run.stderr
    not_a_tar = tmp_path / "notes.txt"
    not_a_tar.write_text("hello, this is no tar archive at all" * 20)
    run = regcarve("list", media, not_a_tar)
    assert run.code == 3 and f"{not_a_tar}: input is not a tar archive" in run.stderr
    run = regcarve("list", "--verify", "size", *volumes(media))
    assert run.code == 2 and "--verify size" in run.stderr


def test_standard_input_is_one_of_the_sources(media):
    first, *rest = volumes(media)
    run = regcarve("list", "--json", "-", *rest, input=first.read_bytes())
    assert run.code == 0, run.stderr
    assert {t["ref"]: (t["digest"], t["status"]) for t in json.loads(run.stdout)["tags"]} == tags(MAIN_ARCHIVE)
    run = regcarve("list", "-", "-", input=b"")
    assert run.code == 2 and "standard input (-) can be given once" in run.stderr

"""`regcarve pack --split-oversize`: an image larger than the volume size gets a volume of its own, cut
into byte parts; every regcarve command reads the parts back as that one volume, a real docker-registry
serves the parts joined, and `regcarve verify` checks each part and the whole."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import MAIN_ARCHIVE, regcarve
from hypothesis import given
from hypothesis import strategies as st
from registry import LiveRegistry
from test_pack import assert_served_untarred

from regcarve.sinks.pack.sizes import parse_size
from regcarve.sources import InputError
from regcarve.sources.parts import PartedFile, grouped

SIZE = "500K"  # below app:v1 (1.5 MiB), above every other image of the fixture


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    media = tmp_path_factory.mktemp("parts") / "media"
    run = regcarve("pack", MAIN_ARCHIVE, "-o", media, "--volume-size", SIZE, "--split-oversize")
    assert run.code == 0, run.stderr
    assert "cut into" in run.stderr
    return media


def volumes(media: Path) -> list[dict]:
    return json.loads((media / "pack.json").read_text())["volumes"]


def parted(media: Path) -> dict:
    (volume,) = [v for v in volumes(media) if v.get("parts")]
    return volume


def part_paths(media: Path) -> list[Path]:
    return [media / p["file"] for p in parted(media)["parts"]]


def test_the_oversize_image_is_cut_into_parts_no_larger_than_the_volume_size(media):
    size = parse_size(SIZE)
    volume = parted(media)
    assert [i["ref"] for i in volume["images"]] == ["app:v1"]
    assert volume["size"] > size and len(volume["parts"]) >= 2
    assert [p["file"] for p in volume["parts"]] == [f"{volume['file']}.part{n:03d}" for n in range(len(volume["parts"]))]
    whole = b""
    for part in volume["parts"]:
        data = (media / part["file"]).read_bytes()
        assert len(data) == part["size"] <= size
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        whole += data
    assert len(whole) == volume["size"] and hashlib.sha256(whole).hexdigest() == volume["sha256"]
    assert not (media / volume["file"]).exists()  # no file holds the volume whole
    for other in volumes(media):
        if not other.get("parts"):
            assert (media / other["file"]).stat().st_size == other["size"] <= size


def test_sha256sum_checks_every_part_and_verify_passes(media):
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=media, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    for part in parted(media)["parts"]:
        assert f"{part['file']}: OK" in p.stdout
    run = regcarve("verify", media)
    assert run.code == 0, run.stderr
    assert f"ok  {parted(media)['file']} (1 image(s))" in run.stdout


def test_the_parts_joined_are_a_storage_a_real_registry_serves(media, tmp_path):
    joined = tmp_path / "joined.tar"
    with open(joined, "wb") as out:
        subprocess.run(["cat", *map(str, part_paths(media))], stdout=out, check=True)
    root = tmp_path / "storage"
    root.mkdir()
    assert_served_untarred(joined, root, parted(media)["images"])


def dir_trees(out: Path) -> dict[str, bytes]:
    """Every file's bytes; a schema1 manifest's without its signatures (convert signs it afresh each run)."""
    trees = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "manifest.json" and b'"signatures"' in data:
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "signatures"}).encode()
            trees[str(p.relative_to(out))] = data
    return trees


def test_converting_the_media_gives_the_trees_converting_the_source_gives(media, tmp_path):
    """Both skip the fixture's nested index, saying so (exit 1); every other tree is the same, byte for byte."""
    assert regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "a", "-q").code == 1
    run = regcarve("convert", media, "-o", tmp_path / "b", "-q")
    assert run.code == 1 and "team/nested:1" in run.stderr, run.stderr
    trees = dir_trees(tmp_path / "a")
    assert "app:v1/manifest.json" in trees
    assert dir_trees(tmp_path / "b") == trees


def test_parts_given_in_order_read_as_the_volume(media, tmp_path):
    listed = json.loads(regcarve("list", "--json", *part_paths(media)).stdout)
    assert [(t["ref"], t["digest"], t["status"]) for t in listed["tags"]] == \
        [(i["ref"], i["digest"], "ok") for i in parted(media)["images"]]
    run = regcarve("convert", *part_paths(media), "-o", tmp_path / "out", "-q")
    assert run.code == 0, run.stderr
    assert (tmp_path / "out" / "app:v1" / "manifest.json").is_file()


def test_the_parts_push_into_a_real_registry(media):
    with LiveRegistry() as reg:
        run = regcarve("push", *part_paths(media), reg.host, "--plain-http", "-q")
        assert run.code == 0, run.stderr
        for image in parted(media)["images"]:
            repo, tag = image["ref"].rsplit(":", 1)
            assert reg.manifest(repo, tag)[0] == image["digest"]


def test_a_part_missing_or_out_of_order_is_named(media, tmp_path):
    paths = part_paths(media)
    run = regcarve("list", paths[0], *paths[2:])
    assert run.code == 3 and f"{paths[1]}: missing" in run.stderr
    run = regcarve("list", paths[1], paths[0], *paths[2:])
    assert run.code == 3 and f"{paths[0]}: " in run.stderr and "out of order" in run.stderr
    run = regcarve("list", *paths[:-1])
    assert run.code == 3 and f"{paths[-1]}: " in run.stderr and "not given" in run.stderr
    copy = tmp_path / "media"
    subprocess.run(["cp", "-r", str(media), str(copy)], check=True)
    gone = copy / parted(copy)["parts"][1]["file"]
    os.unlink(gone)
    run = regcarve("list", copy)
    assert run.code == 3 and f"{gone}: no such file" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = regcarve("verify", copy)
    assert run.code == 1 and f"{gone.name}: missing" in run.stderr


def test_verify_names_a_damaged_part_and_the_image_it_holds(media, tmp_path):
    copy = tmp_path / "media"
    subprocess.run(["cp", "-r", str(media), str(copy)], check=True)
    victim = parted(copy)["parts"][1]["file"]
    with open(copy / victim, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x01]))
    run = regcarve("verify", copy)
    assert run.code == 1
    assert f"BAD {parted(copy)['file']} (holds 1 image(s): app:v1)" in run.stderr
    assert f"{victim}: sha256" in run.stderr
    for other in volumes(copy):
        if not other.get("parts"):
            assert f"ok  {other['file']}" in run.stdout


def test_rerun_keeps_whole_parts_and_recuts_a_damaged_one(media, tmp_path):
    copy = tmp_path / "media"
    subprocess.run(["cp", "-r", str(media), str(copy)], check=True)
    paths = part_paths(copy)
    with open(paths[-1], "r+b") as f:  # as an interrupted copy would leave it
        f.truncate(100)
    (copy / f"{parted(copy)['file']}.part099").write_bytes(b"left by an older cut")
    run = regcarve("pack", MAIN_ARCHIVE, "-o", copy, "--volume-size", SIZE, "--split-oversize", "-q")
    assert run.code == 0, run.stderr
    assert f"{len(volumes(copy)) - 1} volume(s) finished by an earlier run were checked and kept" in run.stderr
    assert [p.read_bytes() for p in part_paths(copy)] == [p.read_bytes() for p in part_paths(media)]
    assert not (copy / f"{parted(copy)['file']}.part099").exists()
    assert regcarve("verify", copy).code == 0
    # packed again without the option: the image is refused and no part of its volume is left
    run = regcarve("pack", MAIN_ARCHIVE, "-o", copy, "--volume-size", SIZE, "-q")
    assert run.code == 1 and "app:v1: needs" in run.stderr
    assert not list(copy.glob("*.part*"))


def test_compressed_parts_verify(tmp_path):
    media = tmp_path / "m"
    run = regcarve("pack", MAIN_ARCHIVE, "-o", media, "--volume-size", "300K", "--compress", "zstd",
                   "--split-oversize", "-q")
    assert run.code == 0, run.stderr
    cut = [v for v in volumes(media) if v.get("parts")]
    assert cut and all(v["file"].endswith(".tar.zst") for v in cut)
    assert all((media / p["file"]).stat().st_size == p["size"] <= parse_size("300K") for v in cut for p in v["parts"])
    assert regcarve("verify", media).code == 0
    listed = json.loads(regcarve("list", "--json", media).stdout)
    assert {i["ref"] for v in cut for i in v["images"]} <= {t["ref"] for t in listed["tags"] if t["status"] == "ok"}


@given(st.lists(st.integers(0, 7), max_size=10))
def test_parts_are_taken_only_whole_and_in_order(order):
    """Parts given as numbers `order` (none lie on disk here): read when every run of them goes 0, 1, 2, …
    (a 0 starts the next volume's parts), else refused naming a part."""
    names = [f"/nonexistent/a.tar.part{n:03d}" for n in order]
    in_order = all(n == 0 or (i > 0 and n == order[i - 1] + 1) for i, n in enumerate(order))
    try:
        out = grouped(names)
    except InputError as e:
        assert not in_order and "/nonexistent/a.tar.part" in str(e)
        return
    assert in_order
    assert all(isinstance(s, PartedFile) for s in out)
    assert [[int(p[-3:]) for p in s.paths] for s in out] == _runs(order)


def _runs(order: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for n in order:
        if n == 0:
            runs.append([])
        runs[-1].append(n)
    return runs


def test_parts_of_a_delta_volume_given_alone_know_what_it_expects(tmp_path):
    """The pack.json beside the parts answers for their volume: an absent blob of an earlier delivery is
    expected (named with that delivery), not missing."""
    assert regcarve("pack", MAIN_ARCHIVE, "-o", tmp_path / "a", "--volume-size", SIZE, "--exclude", "app:*", "-q").code == 0
    run = regcarve("pack", MAIN_ARCHIVE, "-o", tmp_path / "b", "--volume-size", SIZE, "--split-oversize",
                   "--since", tmp_path / "a" / "pack.json", "-q")
    assert run.code == 0, run.stderr
    volume = parted(tmp_path / "b")
    assert volume["expects"]
    listed = json.loads(regcarve("list", "--json", *part_paths(tmp_path / "b")).stdout)
    codes = {p["code"] for p in listed["problems"]}
    assert "expected-blob" in codes and "missing-blob" not in codes

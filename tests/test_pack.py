"""`regcarve pack` and `regcarve verify`: the fixtures cut into volumes smaller than their total, each
volume proved as a registry storage by a real docker-registry serving it, by regcarve reading it alone
and by skopeo pushing what regcarve converts from it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import GC_ARCHIVE, MAIN_ARCHIVE, regcarve
from registry import LiveRegistry

from regcarve.sinks.pack.sizes import parse_size

# smaller than each fixture's storage tar (2,560,000 and 215,040 bytes uncompressed)
CASES = {"main": (MAIN_ARCHIVE, "1600K"), "gc": (GC_ARCHIVE, "60K")}


def source_inventory(archive: Path) -> dict:
    run = regcarve("list", "--json", archive)
    return json.loads(run.stdout)


@pytest.fixture(scope="module", params=sorted(CASES))
def packed(request, tmp_path_factory):
    archive, size = CASES[request.param]
    media = tmp_path_factory.mktemp(f"pack-{request.param}") / "media"
    run = regcarve("pack", archive, "-o", media, "--volume-size", size)
    return archive, parse_size(size), media, run


def volumes(media: Path) -> list[dict]:
    return json.loads((media / "pack.json").read_text())["volumes"]


def test_sizes_say_which_units_are_powers_of_1024():
    assert parse_size("4G") == 4 << 30
    assert parse_size("700M") == 700 << 20
    assert parse_size("4095MiB") == 4095 << 20
    assert parse_size("4.7GB") == 4_700_000_000
    assert parse_size("1.5K") == 1536
    assert parse_size("650000000") == 650_000_000
    for bad in ("", "x", "4Q", "-1", "1.2.3G"):
        with pytest.raises(ValueError, match="powers of 1024"):
            parse_size(bad)


def test_every_volume_fits_and_every_image_is_in_exactly_one(packed):
    archive, size, media, run = packed
    source = source_inventory(archive)
    total = sum(m.size + 512 for m in tarfile.open(archive) if m.isfile())
    assert size < total
    ok = {t["ref"]: t["digest"] for t in source["tags"] if t["status"] == "ok"}
    broken = {t["ref"] for t in source["tags"] if t["status"] != "ok"}
    assert run.code == (1 if broken else 0), run.stderr
    packed_refs: list[str] = []
    for volume in volumes(media):
        path = media / volume["file"]
        assert path.stat().st_size == volume["size"] <= size
        assert len(volume["file"]) <= 32 and volume["file"].isascii() and not set(volume["file"]) & set('<>:"/\\|?* ')
        listed = json.loads(regcarve("list", "--json", path).stdout)
        in_volume = {t["ref"]: t for t in listed["tags"]}
        assert set(in_volume) == {i["ref"] for i in volume["images"]}
        for image in volume["images"]:
            assert in_volume[image["ref"]]["status"] == "ok"
            assert in_volume[image["ref"]]["digest"] == image["digest"] == ok[image["ref"]]
        packed_refs += in_volume
    assert sorted(packed_refs) == sorted(ok)  # each once, and all of them
    assert len(volumes(media)) >= (2 if archive == MAIN_ARCHIVE else 1)
    doc = json.loads((media / "pack.json").read_text())
    assert {n["ref"] for n in doc["not_packed"]} == broken
    assert all(n["ref"] in run.stderr for n in doc["not_packed"])


def test_each_volume_untarred_is_served_by_a_real_registry(packed, tmp_path):
    _, _, media, _ = packed
    for n, volume in enumerate(volumes(media)):
        root = tmp_path / f"r{n}" / "storage"
        root.mkdir(parents=True)
        assert_served_untarred(media / volume["file"], root, volume["images"])


def assert_served_untarred(volume_tar: Path, root: Path, images: list[dict]) -> None:
    """The volume untarred into `root` is served by a real docker-registry: each image with its digest,
    every config and layer from the tag's repository."""
    with tarfile.open(volume_tar) as tar:
        tar.extractall(root, filter="data")
    listed = json.loads(regcarve("list", "--json", volume_tar).stdout)
    with LiveRegistry(root) as reg:
        for image in images:
            repo, tag = image["ref"].rsplit(":", 1)
            digest, _, _ = reg.manifest(repo, tag)
            assert digest == image["digest"], image["ref"]
        for t in listed["tags"]:
            for d in [t["manifest"].get("config")] + t["manifest"].get("layers", []):
                if d and not d.get("urls"):
                    status, _, body = reg.request("GET", f"/v2/{t['repository']}/blobs/{d['digest']}")
                    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == d["digest"]


def test_each_volume_alone_converts_into_dir_trees_that_skopeo_pushes(packed, tmp_path):
    _, _, media, _ = packed
    for n, volume in enumerate(volumes(media)):
        out = tmp_path / f"out{n}"
        run = regcarve("convert", media / volume["file"], "-o", out, "-q")
        nested = [i["ref"] for i in volume["images"] if i["ref"].startswith("team/nested:")]
        assert run.code == (1 if nested else 0), run.stderr
        with LiveRegistry() as reg:
            p = subprocess.run(["skopeo", "sync", "--src", "dir", "--dest", "docker", "--scoped", "--all",
                                "--dest-tls-verify=false", str(out), reg.host], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr[-3000:]
            for image in volume["images"]:
                if image["ref"] in nested:  # skopeo cannot copy nested indexes: convert skips them, saying so
                    continue
                repo, tag = image["ref"].rsplit(":", 1)
                assert reg.manifest(repo, tag)[0] == image["digest"], image["ref"]


def test_sha256sum_accepts_the_checksums_and_verify_passes(packed):
    _, _, media, _ = packed
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=media, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(": OK") == len(volumes(media)) + 1
    run = regcarve("verify", media)
    assert run.code == 0, run.stderr
    assert "all " in run.stdout and "BAD" not in run.stderr


def test_one_flipped_byte_is_named_with_the_images_of_its_volume(packed, tmp_path):
    _, _, media, _ = packed
    copy = tmp_path / "media"
    subprocess.run(["cp", "-r", str(media), str(copy)], check=True)
    victim = volumes(copy)[-1]
    path = copy / victim["file"]
    with open(path, "r+b") as f:
        offset = path.stat().st_size // 3
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    run = regcarve("verify", copy)
    assert run.code == 1
    assert f"BAD {victim['file']}" in run.stderr
    assert all(i["ref"] in run.stderr for i in victim["images"])
    for other in volumes(copy)[:-1]:
        assert f"ok  {other['file']}" in run.stdout
    p = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert p.returncode != 0 and f"{victim['file']}: FAILED" in p.stdout


def test_a_missing_volume_is_named(packed, tmp_path):
    _, _, media, _ = packed
    copy = tmp_path / "media"
    subprocess.run(["cp", "-r", str(media), str(copy)], check=True)
    gone = volumes(copy)[0]
    os.unlink(copy / gone["file"])
    run = regcarve("verify", copy)
    assert run.code == 1 and f"BAD {gone['file']}" in run.stderr and "missing" in run.stderr


def test_rerun_keeps_whole_volumes_and_rewrites_a_damaged_one(tmp_path):
    media = tmp_path / "media"
    assert regcarve("pack", MAIN_ARCHIVE, "-o", media, "--volume-size", "1600K", "-q").code == 0
    names = [v["file"] for v in volumes(media)]
    before = {n: (media / n).stat().st_mtime_ns for n in names}
    with open(media / names[1], "r+b") as f:  # as an interrupted copy or a bad write would leave it
        f.truncate(1000)
    run = regcarve("pack", MAIN_ARCHIVE, "-o", media, "--volume-size", "1600K", "-q")
    assert run.code == 0, run.stderr
    assert "1 volume(s) finished by an earlier run were checked and kept" in run.stderr
    assert (media / names[0]).stat().st_mtime_ns == before[names[0]]
    assert regcarve("verify", media).code == 0


def test_compressed_volumes_are_read_alone(tmp_path):
    for compression, suffix in (("gzip", ".tar.gz"), ("zstd", ".tar.zst")):
        media = tmp_path / compression
        run = regcarve("pack", MAIN_ARCHIVE, "-o", media, "--volume-size", "1700K", "--compress", compression, "-q")
        assert run.code == 0, run.stderr
        for volume in volumes(media):
            assert volume["file"].endswith(suffix) and volume["size"] <= parse_size("1700K")
        assert regcarve("verify", media).code == 0


def test_an_image_larger_than_a_volume_fails_naming_it(tmp_path):
    run = regcarve("pack", GC_ARCHIVE, "-o", tmp_path / "m", "--volume-size", "20K")
    assert run.code == 1
    assert "gc/intact:1: needs" in run.stderr and "--volume-size" in run.stderr and "--split-oversize" in run.stderr
    assert not list((tmp_path / "m").glob("*.part*"))


def test_media_holding_other_files_is_refused(tmp_path):
    media = tmp_path / "m"
    media.mkdir()
    (media / "notes.txt").write_text("mine")
    run = regcarve("pack", GC_ARCHIVE, "-o", media)
    assert run.code == 2 and "notes.txt" in run.stderr


def test_since_a_listing_of_the_far_side(tmp_path):
    listing = tmp_path / "far.json"
    run = regcarve("list", "--json", GC_ARCHIVE)
    listing.write_text(run.stdout)
    media = tmp_path / "m"
    run = regcarve("pack", GC_ARCHIVE, "-o", media, "--since", listing)
    assert run.code == 1  # the broken tags of the fixture stay unpacked
    (volume,) = volumes(media)
    assert volume["expects"] and set(volume["stored"]) == {volume["images"][0]["digest"]}
    assert regcarve("verify", media).code == 0


def test_a_throwaway_store_gives_each_blob_back_after_its_last_volume(tmp_path):
    """Without --work-dir the verified store is the run's own: a blob no volume holds goes once the volumes
    are planned, and each other one once the last volume holding it is written (disk and page cache come
    back while the volumes are made). Every volume is still whole."""
    from regcarve.cli.common import opened_source, read_source
    from regcarve.cli.push_cmd import work_store
    from regcarve.run import Selection, emit_all
    from regcarve.sinks.base import Status
    from regcarve.sinks.pack import PackOptions, PackSink

    media = tmp_path / "media"
    media.mkdir()
    heard: list[tuple[set[str], set[str]]] = []
    with opened_source((str(MAIN_ARCHIVE),)) as src, work_store(None, src.needs_store) as store:
        catalog = read_source(src, store, True)
        blobs = src.blobs(catalog.inventory, store)
        stored_at_first = store.digests()

        def keep_only(needed: set[str]) -> None:
            store.keep_only(needed)
            heard.append((set(needed), store.digests()))

        sink = PackSink(media, blobs, PackOptions(parse_size("1600K"), name="main"), keep_only)
        results, _ = emit_all(catalog, blobs, sink, Selection())
        sink.hint(results)
    planned = volumes(media)
    assert len(planned) > 1 and len(heard) == len(planned) + 1
    assert heard[0][0] == {d for v in planned for d in v["stored"]} < stored_at_first
    for i, (needed, left) in enumerate(heard):
        assert left == needed == {d for v in planned[i:] for d in v["stored"]}
    assert any(r.status is Status.WRITTEN for r in results)
    assert regcarve("verify", media).code == 0


def test_a_work_dir_keeps_every_verified_blob(tmp_path):
    work = tmp_path / "work"
    run = regcarve("pack", GC_ARCHIVE, "-o", tmp_path / "media", "--volume-size", "60K", "--work-dir", work, "-q")
    assert run.code == 1, run.stderr  # the fixture's broken tags
    kept = {p.name for p in (work / ".regcarve" / "blobs" / "sha256").iterdir()}
    shipped = {d.removeprefix("sha256:") for v in volumes(tmp_path / "media") for d in v["stored"]}
    assert shipped and shipped <= kept

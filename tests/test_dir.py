"""`regcarve convert --format dir`, proven by skopeo: inspect, and one `skopeo sync` into a fresh registry."""

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import MAIN_ARCHIVE, regcarve
from registry import LiveRegistry
from regcarve.model.schema1 import payload_digest

VERSION = b"Directory Transport Version: 1.1\n"


@pytest.fixture(scope="session")
def dir_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("dir") / "out"
    report = out.parent / "report.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--report", report, "-q")
    return out, run, json.loads(report.read_text())


def tree(root: Path) -> dict[str, bytes]:
    """Every file's content; a schema1 manifest by its payload digest (each run signs with a fresh key)."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".regcarve" not in p.parts:
            data = p.read_bytes()
            if p.name == "manifest.json" and b'"signatures"' in data:
                data = payload_digest(data).encode()
            files[str(p.relative_to(root))] = data
    return files


def test_every_tag_is_written_with_its_stored_manifest(dir_out, truth):
    out, run, report = dir_out
    assert run.code == 1, run.stderr  # one tag skipped, below
    # read exactly once: the bytes drawn from the input are the file's size
    assert report["input"] == {"compression": "gzip", "bytes": MAIN_ARCHIVE.stat().st_size, "verification": "sha256"}
    by_ref = {e["ref"]: e for e in report["images"]}
    nested = by_ref.pop("team/nested:1")
    assert nested["status"] == "skipped" and "nested index" in nested["reason"]
    assert not (out / "team/nested:1").exists()
    assert [e for e in report["images"] if e["status"] != "written"] == [nested]
    for t in truth["tags"]:
        ref = f"{t['repo']}:{t['tag']}"
        if ref == "team/nested:1":
            continue
        entry = by_ref[ref]
        assert entry["status"] == "written" and entry["path"] == ref and entry["digest"] == t["digest"]
        image = out / ref
        assert (image / "version").read_bytes() == VERSION
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"dir:{image}"], capture_output=True, check=True).stdout
        assert raw == (image / "manifest.json").read_bytes()
        if t["kind"] == "schema1":
            assert payload_digest(raw) == t["digest"] and b'"signatures"' in raw
        else:
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == t["digest"]
        for child in t.get("children", []):
            assert (image / (child["digest"][7:] + ".manifest.json")).exists()
        for layer in t.get("layers", []):
            assert (image / layer["digest"][7:]).exists() == layer["present"]


def test_skopeo_sync_pushes_every_digest_unchanged(dir_out, truth):
    out, _, _ = dir_out
    with LiveRegistry() as reg:
        p = subprocess.run(["skopeo", "sync", "--src", "dir", "--dest", "docker", "--scoped", "--all",
                            "--dest-tls-verify=false", str(out), reg.host], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        for t in truth["tags"]:
            if t["repo"] == "team/nested":
                assert reg.tags(t["repo"]) == []  # skipped: skopeo cannot copy nested indexes
                continue
            digest, _, _ = reg.manifest(t["repo"], t["tag"])
            assert digest == t["digest"], f"{t['repo']}:{t['tag']}"


def test_blobs_are_stored_once(dir_out):
    out, _, _ = dir_out
    inodes: dict[int, int] = {}
    sizes: dict[str, int] = {}
    for p in out.rglob("*"):
        st = p.lstat()
        if p.is_file():
            inodes[st.st_ino] = st.st_blocks * 512
            if len(p.name) == 64 or p.name.endswith(".manifest.json") or p.name == "manifest.json":
                sizes.setdefault(p.name if len(p.name) == 64 else hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size)
    unique = sum(sizes.values())
    used = sum(inodes.values())
    assert used <= unique * 1.05 + 4096 * len(inodes), (used, unique)
    # and nothing was copied: the same layer in two images is one inode
    a = out / "team/web:1.0"
    b = out / "team/web:2.0"
    shared = {p.name for p in a.iterdir()} & {p.name for p in b.iterdir()} - {"version", "manifest.json"}
    assert shared and all((a / n).stat().st_ino == (b / n).stat().st_ino for n in shared)


def test_same_tree_from_every_compression_and_stdin(tmp_path, dir_out, plain_tar, zstd_tar):
    expected = tree(dir_out[0])
    for i, source in enumerate([plain_tar, zstd_tar]):
        out = tmp_path / f"o{i}"
        assert regcarve("convert", source, "-o", out, "-q").code == 1
        assert tree(out) == expected, source
    out = tmp_path / "stdin"
    run = regcarve("convert", "-", "-o", out, "-q", input=MAIN_ARCHIVE.read_bytes())
    assert run.code == 1 and "nested" in run.stderr, run.stderr
    assert tree(out) == expected


def test_rerun_into_same_out_reuses_and_refuses_foreign_files(tmp_path):
    out = tmp_path / "out"
    assert regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q").code == 1
    before = {p: p.stat().st_ino for p in (out / ".regcarve/blobs/sha256").iterdir()}
    rerun = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q")
    assert rerun.code == 1 and "were reused, not written again" in rerun.stderr
    after = {p: p.stat().st_ino for p in (out / ".regcarve/blobs/sha256").iterdir()}
    assert before == after  # verified blobs were reused, not rewritten
    (out / "app:v1" / "notes.txt").write_text("mine")
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q", "--image", "app:v1")
    assert run.code == 1 and "did not write" in run.stderr
    assert (out / "app:v1" / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious").write_text("x")
    run = regcarve("convert", MAIN_ARCHIVE, "-o", other, "-q")
    assert run.code == 2 and "not written by regcarve" in run.stderr
    assert os.listdir(other) == ["precious"]


def test_selection_and_platform(tmp_path):
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q", "--image", "team/*", "--exclude", "team/web",
                   "--platform", "linux/arm64", "--report", report)
    entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
    assert not any(r.startswith(("team/web:", "app:", "foo")) for r in entries)
    multi = entries["team/multi:latest"]
    assert multi["status"] == "written" and "linux/arm64" in multi["reason"]
    raw = (out / "team/multi:latest/manifest.json").read_bytes()
    assert json.loads(raw)["mediaType"].endswith("manifest.v2+json")  # the child, not the list
    assert entries["team/sub/api:v2"]["status"] == "skipped"  # an amd64 image
    assert run.code == 1


def test_schema1_signatures_stored_by_registry_2_0_to_2_4_are_used(tmp_path, plain_tar, truth):
    """Registries 2.0–2.4 kept schema1 signatures as blobs linked under the revision; regcarve merges
    those instead of signing afresh, and the registry accepts the result with the same digest."""
    import io
    import tarfile

    from regcarve.model.schema1 import sign

    s1 = next(t for t in truth["tags"] if t["kind"] == "schema1")
    root = "docker/registry/v2"
    with tarfile.open(plain_tar) as src:
        link = src.extractfile(f"{root}/repositories/{s1['repo']}/_manifests/tags/{s1['tag']}/current/link").read()
        rev = link.decode().strip()
        payload = src.extractfile(f"{root}/blobs/sha256/{rev[7:9]}/{rev[7:]}/data").read()
        signature = json.dumps(json.loads(sign(payload))["signatures"][0], separators=(",", ":")).encode()
        sig = hashlib.sha256(signature).hexdigest()
        out_tar = tmp_path / "with-signatures.tar"
        with tarfile.open(out_tar, "w") as dst:
            for m in src.getmembers():
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
            for name, data in [(f"{root}/blobs/sha256/{sig[:2]}/{sig}/data", signature),
                               (f"{root}/repositories/{s1['repo']}/_manifests/revisions/sha256/{rev[7:]}"
                                f"/signatures/sha256/{sig}/link", f"sha256:{sig}".encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    regcarve("convert", out_tar, "-o", out, "-q", "--image", f"{s1['repo']}:{s1['tag']}")
    written = (out / f"{s1['repo']}:{s1['tag']}" / "manifest.json").read_bytes()
    assert json.loads(written)["signatures"] == [json.loads(signature)]  # the stored one, not a fresh one
    assert payload_digest(written) == s1["digest"]
    with LiveRegistry() as reg:
        p = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"dir:{out}/{s1['repo']}:{s1['tag']}",
                            f"docker://{reg.host}/{s1['repo']}:{s1['tag']}"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert reg.manifest(s1["repo"], s1["tag"])[0] == s1["digest"]


def test_tags_naming_one_manifest_each_get_their_own_folder(tmp_path):
    """What goes out for a manifest is made once for all the tags naming it: each tag still gets its own
    folder, in its own repository (moved into a project, too), holding that manifest and its blobs."""
    from storagetar import Storage

    st = Storage()
    image = st.image("app", "a", seed=1, layers=2)
    other = st.image("app", "z", seed=2)
    for repo, tag in (("app", "b"), ("team/app", "c")):
        st.push(replace(image, repo=repo, tag=tag))
    archive = tmp_path / "s.tar"
    archive.write_bytes(st.tar())
    out = tmp_path / "out"
    run = regcarve("convert", archive, "-o", out, "-q", "--default-project", "library")
    assert run.code == 0, run.stderr
    wanted = {"manifest.json": image.manifest, "version": VERSION, **{d[7:]: data for d, data in image.blobs.items()
                                                                       if d != image.digest}}
    for folder in ("library/app:a", "library/app:b", "team/app:c"):
        assert {p.name: p.read_bytes() for p in (out / folder).iterdir()} == wanted, folder
    assert (out / "library/app:z" / "manifest.json").read_bytes() == other.manifest
    assert sorted(p.name for p in out.iterdir()) == [".regcarve", "library", "team"]

"""`regcarve convert --format oci`, proven by skopeo 1.9.3, umoci and a live registry.

One per-tag conversion and one shared conversion of the main fixture, one registry: every tag is
pushed from its layout with the push loop the summary prints, and the registry must report the
source digest.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import MAIN_ARCHIVE, regcarve
from regcarve.model.schema1 import payload_digest

LAYOUT = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref(t: dict) -> str:
    return f"{t['repo']}:{t['tag']}"


def pushable(truth: dict) -> list[dict]:
    """Every fixture tag but the nested index, which no skopeo can copy (skipped, reason given)."""
    return [t for t in truth["tags"] if t["repo"] != "team/nested"]


@pytest.fixture(scope="session")
def oci_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("oci") / "out"
    report = out.parent / "report.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--format", "oci", "--report", report, "-q")
    return out, run, json.loads(report.read_text())


@pytest.fixture(scope="session")
def shared_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("oci-shared") / "out"
    report = out.parent / "report.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--format", "oci", "--oci-layout", "shared",
                   "--report", report, "-q")
    return out, run, json.loads(report.read_text())


def layout_index(layout: Path) -> dict:
    assert json.loads((layout / "oci-layout").read_text()) == LAYOUT
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    return index


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def check_tree(layout: Path, descriptor: dict, truth_node: dict) -> set[str]:
    """Every blob a descriptor reaches is in the layout with its digest and size; returns the digests."""
    raw = blob(layout, descriptor["digest"])
    assert len(raw) == descriptor["size"] and sha256(raw) == descriptor["digest"]
    seen = {descriptor["digest"]}
    doc = json.loads(raw)
    if descriptor["mediaType"] == SCHEMA1_SIGNED:
        assert payload_digest(raw) == truth_node["digest"]
        for layer in doc["fsLayers"]:
            assert sha256(blob(layout, layer["blobSum"])) == layer["blobSum"]
            seen.add(layer["blobSum"])
        return seen
    assert descriptor["digest"] == truth_node["digest"]
    for child, truth_child in zip(doc.get("manifests", []), truth_node.get("children", [])):
        assert child["digest"] == truth_child["digest"]
        seen |= check_tree(layout, child, truth_child["manifest"])
    present = {d["digest"]: d["present"] for d in [truth_node.get("config") or {}, *truth_node.get("layers", [])]
               if d}
    for d in ([doc["config"]] if "config" in doc else []) + doc.get("layers", []):
        path = layout / "blobs" / "sha256" / d["digest"][7:]
        if not present[d["digest"]]:  # a foreign layer the registry never had
            assert d.get("urls") and not path.exists()
            continue
        data = path.read_bytes()
        assert len(data) == d["size"] and sha256(data) == d["digest"]
        seen.add(d["digest"])
    return seen


# --- per-tag layouts --------------------------------------------------------------------------

def test_every_tag_is_a_single_image_layout_of_its_stored_manifest(oci_out, truth):
    out, run, report = oci_out
    assert run.code == 1 and "skipped team/nested:1: nested index" in run.stderr, run.stderr
    by_ref = {e["ref"]: e for e in report["images"]}
    assert set(by_ref) == {ref(t) for t in truth["tags"]}
    nested = by_ref.pop("team/nested:1")  # skopeo cannot copy an index inside an index
    assert nested["status"] == "skipped" and "nested index" in nested["reason"]
    assert not (out / "team/nested").exists()
    for t in pushable(truth):
        entry = by_ref[ref(t)]
        assert entry["status"] == "written", entry
        assert entry["path"] == f"{t['repo']}/_tags/{t['tag']}" and entry["digest"] == t["digest"]
        layout = out / entry["path"]
        (d,) = layout_index(layout)["manifests"]
        assert d["annotations"] == {REF_NAME: t["tag"], CONTAINERD_NAME: ref(t)}
        if t["kind"] == "schema1":
            assert d["mediaType"] == SCHEMA1_SIGNED
        else:  # the stored bytes and media type, never converted
            assert (d["mediaType"], d["digest"], d["size"]) == (t["media_type"], t["digest"], t["size"])
        if t["kind"] == "index":
            assert d["mediaType"] in INDEX_TYPES
        reached = check_tree(layout, d, t)
        on_disk = {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
        assert on_disk == reached, f"{ref(t)}: stray or missing blobs"


def test_paths_have_no_colon_and_nested_repositories_do_not_collide(oci_out):
    out, _, _ = oci_out
    assert not [p for p in out.rglob("*") if ":" in str(p.relative_to(out))]
    foo = layout_index(out / "foo/_tags/latest")["manifests"][0]
    nested = layout_index(out / "foo/latest/_tags/1")["manifests"][0]
    assert foo["annotations"][CONTAINERD_NAME] == "foo:latest"
    assert nested["annotations"][CONTAINERD_NAME] == "foo/latest:1"


def test_summary_push_loop_pushes_every_digest_unchanged(oci_out, truth, registry):
    """The loop the summary prints, run as printed (plain http added): every tag lands with its digest."""
    out, run, _ = oci_out
    hint = run.stderr
    one = next(line for line in hint.splitlines() if "skopeo copy --all --preserve-digests oci:" in line)
    assert one.strip().startswith(f"skopeo copy --all --preserve-digests oci:{out}/")
    loop = next(line for line in hint.splitlines() if "while read" in line).strip()
    loop = loop.replace("<registry>", registry.host).replace("skopeo copy", "skopeo copy --dest-tls-verify=false")
    p = subprocess.run(["bash", "-c", loop], capture_output=True, text=True, timeout=240)
    wrong = {}
    for t in pushable(truth):
        try:
            digest, _, _ = registry.manifest(t["repo"], t["tag"])
        except KeyError as e:
            digest = str(e)
        if digest != t["digest"]:
            wrong[ref(t)] = digest
    assert not wrong, (wrong, p.stderr[-4000:])


def test_umoci_reads_an_oci_typed_layout(oci_out, truth, tmp_path):
    out, _, _ = oci_out
    t = next(t for t in truth["tags"] if t["repo"] == "team/sub/api")
    layout = out / t["repo"] / "_tags" / t["tag"]
    p = subprocess.run(["umoci", "stat", "--json", "--image", f"{layout}:{t['tag']}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["history"]) >= len(t["layers"])
    p = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{t['tag']}", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b" / "rootfs").is_dir()


def test_blobs_are_stored_once_across_layouts(oci_out):
    out, _, _ = oci_out
    inodes: dict[tuple[int, int], int] = {}
    blob_inodes: dict[str, set[tuple[int, int]]] = {}
    sizes: dict[str, int] = {}
    layouts = 0
    for p in out.rglob("*"):
        st = p.lstat()
        if not p.is_file() or p.is_symlink():
            continue
        inodes[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        if p.parent.name == "sha256" and p.parent.parent.name == "blobs":
            if ".regcarve" not in p.parts:
                blob_inodes.setdefault(p.name, set()).add((st.st_dev, st.st_ino))
            sizes[p.name] = st.st_size
        layouts += p.name == "index.json"
    assert layouts > 10
    # the same blob in every layout (and in the store) is one inode
    assert {k: v for k, v in blob_inodes.items() if len(v) != 1} == {}
    unique = sum(-(-s // 4096) * 4096 for s in sizes.values())
    used = sum(inodes.values())
    assert used <= unique * 1.05 + 2 * 4096 * layouts + 64 * 1024, (used, unique)


def test_rerun_replaces_only_what_regcarve_wrote(tmp_path):
    out = tmp_path / "out"
    args = ("convert", MAIN_ARCHIVE, "-o", out, "--format", "oci", "--image", "team/web:1.0", "-q")
    assert regcarve(*args).code == 0
    layout = out / "team/web/_tags/1.0"
    first = (layout / "index.json").read_bytes()
    stale = layout / "blobs" / "sha256" / ("0" * 64)
    stale.write_bytes(b"left by an earlier run")
    assert regcarve(*args).code == 0
    assert not stale.exists() and (layout / "index.json").read_bytes() == first

    (layout / "notes.txt").write_text("mine")
    run = regcarve(*args, "--report", tmp_path / "r.json")
    assert run.code == 1
    entry = next(e for e in json.loads((tmp_path / "r.json").read_text())["images"] if e["ref"] == "team/web:1.0")
    assert entry["status"] == "failed" and "did not write" in entry["reason"] and "notes.txt" in entry["reason"]
    assert (layout / "notes.txt").exists()

    assert regcarve(*args, "--force").code == 0
    assert not (layout / "notes.txt").exists() and (layout / "index.json").read_bytes() == first


def test_platform_choice_writes_the_child_as_the_tag(tmp_path, truth):
    t = next(t for t in truth["tags"] if t["repo"] == "team/multi")
    child = next(c for c in t["children"] if c["platform"]["architecture"] == "arm64")
    out = tmp_path / "out"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--format", "oci", "--image", ref(t), "--image", "app",
                   "--platform", "linux/arm64", "--report", tmp_path / "r.json", "-q")
    assert run.code == 1  # app:v1 is amd64 only: skipped
    status = {e["ref"]: e["status"] for e in json.loads((tmp_path / "r.json").read_text())["images"]}
    assert status == {ref(t): "written", "app:v1": "skipped"}
    (d,) = layout_index(out / t["repo"] / "_tags" / t["tag"])["manifests"]
    assert (d["digest"], d["mediaType"]) == (child["digest"], child["media_type"])
    assert d["platform"]["architecture"] == "arm64"
    assert not (out / "app").exists()


# --- the shared layout ------------------------------------------------------------------------

def test_shared_layout_is_valid_and_names_every_tag(shared_out, truth):
    out, run, report = shared_out
    assert run.code == 1 and "skipped team/nested:1: nested index" in run.stderr, run.stderr
    assert {e["path"] for e in report["images"] if e["status"] == "written"} == {"."}
    index = layout_index(out)
    names = [d["annotations"][REF_NAME] for d in index["manifests"]]
    assert sorted(names) == sorted(ref(t) for t in pushable(truth))  # one entry per tag
    by_ref = {ref(t): t for t in truth["tags"]}
    reached: set[str] = set()
    for d in index["manifests"]:
        assert d["annotations"][CONTAINERD_NAME] == d["annotations"][REF_NAME]
        reached |= check_tree(out, d, by_ref[d["annotations"][REF_NAME]])
    on_disk = {"sha256:" + p.name for p in (out / "blobs" / "sha256").iterdir()}
    assert on_disk == reached
    assert not [p for p in out.rglob("*") if ":" in str(p.relative_to(out))]


def test_skopeo_19_pushes_an_oci_typed_image_from_the_shared_layout_by_name(shared_out, truth, registry):
    out, _, _ = shared_out
    t = next(t for t in truth["tags"] if t["repo"] == "team/oci-multi")
    p = subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{out}:{ref(t)}", f"docker://{registry.host}/shared/{ref(t)}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert registry.manifest(f"shared/{t['repo']}", t["tag"])[0] == t["digest"]


def test_shared_rerun_with_fewer_images_drops_their_entries_and_blobs(shared_out, tmp_path):
    src, _, _ = shared_out
    out = tmp_path / "out"
    shutil.copytree(src, out, copy_function=os.link)
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--format", "oci", "--oci-layout", "shared",
                   "--image", "team/zstd", "-q")
    assert run.code == 0, run.stderr
    (d,) = layout_index(out)["manifests"]
    assert d["annotations"][REF_NAME] == "team/zstd:1"
    doc = json.loads(blob(out, d["digest"]))
    wanted = {d["digest"], doc["config"]["digest"], *(x["digest"] for x in doc["layers"])}
    assert {"sha256:" + p.name for p in (out / "blobs" / "sha256").iterdir()} == wanted
    assert re.search(r"oci:\S+:team/zstd:1", run.stderr)

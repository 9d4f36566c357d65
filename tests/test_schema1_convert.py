"""--schema1 convert against skopeo: every schema1 image converted as `skopeo copy --format v2s2` converts it,
pushed into a registry without schema1, written into docker-archives that skopeo reads; each layer decoded once."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, load_truth, regcarve
from registry import LiveRegistry
from storagetar import Storage, layer_tar

PLAIN = "--plain-http"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- a storage of schema1 images with every rule in play -----------------------------------------
def v1_id(n: int) -> str:
    return hashlib.sha256(f"v1 id {n}".encode()).hexdigest()


def schema1_payload(repo: str, tag: str, entries: list[tuple[dict, str]]) -> bytes:
    """An unsigned schema1 payload, indented as Distribution's clients wrote it; `entries` top first:
    (v1Compatibility object, blobSum)."""
    doc = {"schemaVersion": 1, "name": repo, "tag": tag, "architecture": "amd64",
           "fsLayers": [{"blobSum": blob} for _, blob in entries],
           "history": [{"v1Compatibility": json.dumps(v1, separators=(",", ":"), ensure_ascii=False)}
                       for v1, _ in entries]}
    return json.dumps(doc, indent=3).encode()


class Schema1Storage:
    """Three convertible schema1 tags sharing two layers, and three that cannot be converted."""

    def __init__(self) -> None:
        self.storage = Storage()
        base, app = layer_tar({"etc/base": b"base" * 300}), layer_tar({"app/bin": b"app" * 400})
        self.empty = gzip.compress(b"\0" * 1024, mtime=0)  # the layer Docker gave every throwaway entry
        self.base, self.app = gzip.compress(base, mtime=0), gzip.compress(app, mtime=0)
        self.diff_ids = {sha256(self.base): sha256(base), sha256(self.app): sha256(app),
                         sha256(self.empty): sha256(b"\0" * 1024)}
        b, a, e = (self.blob(x) for x in (self.base, self.app, self.empty))
        base_v1 = {"id": v1_id(0), "created": "2016-03-01T10:00:00.5Z",
                   "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ADD file:base in /"]}}
        app_v1 = {"id": v1_id(1), "parent": v1_id(0), "created": "2016-03-01T10:01:00.123456789+01:00",
                  "author": "Ops <ops@example.com> & co", "container_config": {"Cmd": ["/bin/sh", "-c", "make && cp a b"]}}
        self.good = {
            "legacy/app:a": [({"id": v1_id(2), "parent": v1_id(1), "created": "2016-03-01T10:02:00Z",
                               "architecture": "amd64", "os": "linux", "throwaway": True, "Size": 0,
                               "config": {"Cmd": ["run"], "Env": ["A=<b>"], "Labels": {"x": "é\u2028"}},
                               "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"run\"]"]},
                               "docker_version": "1.10.3"}, e), (app_v1, a), (base_v1, b)],
            "legacy/app:b": [({"id": v1_id(3), "parent": v1_id(1), "created": "2016-03-02T00:00:00-05:00",
                               "comment": "made by hand", "architecture": "amd64", "os": "linux",
                               "parent_id": "sha256:" + v1_id(1), "layer_id": "sha256:" + v1_id(9),
                               "config": {"Entrypoint": ["/app/bin"], "ExposedPorts": {"80/tcp": {}}},
                               "docker_version": "17.03.1"}, a), (app_v1, a), (base_v1, b)],
            # the same id twice in a row: the entry above is dropped (containers/image's fixManifestLayers)
            "other/c:1": [({"id": v1_id(4), "parent": v1_id(0), "created": "2016-03-03T00:00:00Z",
                            "os": "linux", "config": {"User": "nobody"}}, e),
                          ({"id": v1_id(4), "parent": v1_id(0), "created": "2016-03-03T00:00:01Z",
                            "architecture": "amd64", "os": "linux", "config": {"User": "root"}}, a), (base_v1, b)],
        }
        self.kept = {"legacy/app:a": [b, a], "legacy/app:b": [b, a, a], "other/c:1": [b, a]}  # bottom first
        self.bad: dict[str, str] = {}
        junk = b"\x1f\x8b\x08\x00" + b"not deflate at all" * 20  # verifies (its digest is its own), cannot inflate
        j, lost = self.blob(junk), sha256(b"a layer nobody has")
        for ref, entries, why in (
                ("broken/s1:history", [({"id": v1_id(5), "created": "yesterday"}, b)], "is not an RFC 3339 time"),
                ("broken/s1:gzip", [({"id": v1_id(6), "created": "2016-03-01T00:00:00Z"}, j)], "corrupt gzip data"),
                ("broken/s1:missing", [({"id": v1_id(7), "created": "2016-03-01T00:00:00Z"}, lost)], lost)):
            self.push(ref, entries)
            self.bad[ref] = why
        for ref, entries in self.good.items():
            self.push(ref, entries)

    def blob(self, data: bytes) -> str:
        return self.storage.blob(data)

    def push(self, ref: str, entries: list[tuple[dict, str]]) -> None:
        repo, tag = ref.split(":")
        payload = schema1_payload(repo, tag, entries)
        digest = self.storage.blob(payload)
        for _, blob in entries:
            self.storage.layer_link(repo, blob)
        self.storage.revision(repo, digest)
        self.storage.tag(repo, tag, digest)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.storage.tar())
        return path


@pytest.fixture(scope="module")
def schema1_tar(tmp_path_factory) -> tuple[Path, Schema1Storage]:
    made = Schema1Storage()
    return made.write(tmp_path_factory.mktemp("schema1") / "schema1.tar"), made


# --- what skopeo makes of the same tags ------------------------------------------------------------
def read_dir_image(folder: Path) -> tuple[bytes, dict, dict]:
    raw = (folder / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    config = json.loads((folder / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    return raw, manifest, config


def skopeo_v2s2(registry: LiveRegistry, ref: str, dest: Path) -> tuple[bytes, dict, dict]:
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "--format", "v2s2",
                    f"docker://{registry.host}/{ref}", f"dir:{dest}"], check=True, capture_output=True)
    return read_dir_image(dest)


def assert_same_conversion(ours: tuple[bytes, dict, dict], skopeos: tuple[bytes, dict, dict]) -> None:
    (raw, manifest, config), (sk_raw, sk_manifest, sk_config) = ours, skopeos
    assert [d["digest"] for d in manifest["layers"]] == [d["digest"] for d in sk_manifest["layers"]]
    assert config["rootfs"]["diff_ids"] == sk_config["rootfs"]["diff_ids"]
    assert config == sk_config  # every field skopeo sets, and no other
    assert manifest == sk_manifest
    assert raw == sk_raw  # the bytes too: the same config and manifest digests


def schema1_refs(truth: dict) -> list[str]:
    return [f"{t['repo']}:{t['tag']}" for t in truth["tags"] if t["kind"] == "schema1"]


def test_only_the_main_fixture_holds_schema1():
    """The test below converts every schema1 tag of the main fixture; no other fixture has one to add."""
    assert schema1_refs(load_truth(MAIN_ARCHIVE)) == ["legacy/old:s1"]
    assert schema1_refs(load_truth(GC_ARCHIVE)) == []


def test_every_fixture_schema1_tag_converts_as_skopeo_converts_it(tmp_path):
    archive = MAIN_ARCHIVE
    refs = schema1_refs(load_truth(archive))
    converted, report = tmp_path / "converted", tmp_path / "r.json"
    run = regcarve("convert", archive, "-o", converted, "--schema1", "convert", "--report", report, "-q",
                   *[a for r in refs for a in ("--image", r)])
    assert run.code == 0, run.stderr
    entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
    with LiveRegistry() as source:
        pushed = regcarve("push", archive, source.host, PLAIN, "-q", *[a for r in refs for a in ("--image", r)])
        assert pushed.code == 0, pushed.stderr
        for ref in refs:
            ours = read_dir_image(converted / ref)
            assert_same_conversion(ours, skopeo_v2s2(source, ref, tmp_path / ref.replace("/", "_")))
            assert entries[ref]["digest"] == sha256(ours[0]) != entries[ref]["source_digest"]


def test_throwaway_entries_repeated_ids_and_go_escapes_convert_as_skopeo_converts_them(schema1_tar, tmp_path):
    archive, made = schema1_tar
    out, report = tmp_path / "out", tmp_path / "r.json"
    run = regcarve("convert", archive, "-o", out, "--schema1", "convert", "--report", report, "-q")
    assert run.code == 1, run.stderr
    entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
    for ref, why in made.bad.items():  # each fails with its reason; nothing else is affected
        assert entries[ref]["status"] == "failed" and why in entries[ref]["reason"], entries[ref]
    assert {r for r, e in entries.items() if e["status"] == "written"} == set(made.good)
    with LiveRegistry() as source:
        pushed = regcarve("push", archive, source.host, PLAIN, "-q", *[a for r in made.good for a in ("--image", r)])
        assert pushed.code == 0, pushed.stderr
        for ref in made.good:
            ours = read_dir_image(out / ref)
            assert_same_conversion(ours, skopeo_v2s2(source, ref, tmp_path / ref.replace("/", "_")))
    for ref, kept in made.kept.items():
        _, manifest, config = read_dir_image(out / ref)
        assert [d["digest"] for d in manifest["layers"]] == kept  # throwaway dropped, the rest unchanged
        assert config["rootfs"]["diff_ids"] == [made.diff_ids[b] for b in kept]
    _, manifest, config = read_dir_image(out / "legacy/app:a")
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, False, True]
    assert not {"id", "parent", "throwaway", "Size"} & set(config)
    _, manifest, config = read_dir_image(out / "other/c:1")
    assert config["config"] == {"User": "root"} and len(config["history"]) == 2  # the repeated entry dropped


def test_each_layer_is_decompressed_once_a_run_however_many_tags_share_it(schema1_tar, tmp_path):
    """Counted at the BlobSource: `dir` output hardlinks blobs, so every open is a decode for a diff_id."""
    from regcarve.blobs.made import MadeBlobs
    from regcarve.plan.schema1 import Schema1Mode
    from regcarve.run import Selection, convert, read_catalog
    from regcarve.sinks import sink_class
    from regcarve.sinks.base import Options, Status
    from regcarve.sinks.fsout import OutFolder, prepare_out
    from regcarve.sources import open_source

    archive, made = schema1_tar
    out = tmp_path / "out"
    store = prepare_out(out, force=False)
    source = open_source(str(archive))
    catalog = read_catalog(source, store)
    opened: dict[str, int] = {}

    class CountingBlobs(MadeBlobs):
        def open(self, digest: str):
            opened[digest] = opened.get(digest, 0) + 1
            return super().open(digest)

    blobs = CountingBlobs(source.blobs(catalog.inventory, store), store.blobs)
    sink = sink_class("dir")(OutFolder(out), blobs, Options())
    outcome = convert(catalog, store, blobs, sink, Selection(schema1=Schema1Mode.CONVERT))
    assert outcome.count(Status.WRITTEN) == len(made.good)
    shared = {sha256(made.base), sha256(made.app)}
    assert shared <= set(opened) and all(opened[d] == 1 for d in opened), opened
    assert sha256(made.empty) not in opened  # a throwaway entry's layer is not needed at all


def test_push_convert_into_a_registry_without_schema1_lands_every_tag(tmp_path):
    truth = load_truth(MAIN_ARCHIVE)
    with LiveRegistry(schema1=False) as reg:
        report = tmp_path / "r.json"
        run = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--schema1", "convert", "--report", report, "-q")
        assert run.code == 0, run.stderr
        assert "1 schema1 image(s) were converted to Docker v2 schema2" in run.stderr
        entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
        for t in truth["tags"]:
            ref = f"{t['repo']}:{t['tag']}"
            digest, media_type, raw = reg.manifest(t["repo"], t["tag"])
            assert entries[ref]["status"] == "pushed" and entries[ref]["digest"] == digest
            if t["kind"] == "schema1":
                assert digest != t["digest"] and entries[ref]["source_digest"] == t["digest"]
                assert media_type == "application/vnd.docker.distribution.manifest.v2+json"
            else:
                assert digest == t["digest"] and "source_digest" not in entries[ref]
        again = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--schema1", "convert", "-q")
        assert again.code == 0 and "0 pushed" in again.stderr, again.stderr  # the converted tag is present


def test_keep_says_what_current_runtimes_make_of_schema1_and_skip_leaves_it_out(tmp_path):
    kept = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "kept", "--image", "legacy/*", "-q")
    assert kept.code == 0 and "1 schema1 image(s) went out as schema1" in kept.stderr
    assert "--schema1 convert" in kept.stderr
    skipped = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "skipped", "--image", "legacy/*", "--schema1", "skip")
    assert skipped.code == 1 and "skipped legacy/old:s1: schema1 manifest, left out (--schema1 skip)" in skipped.stderr
    refused = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "x", "--format", "docker-archive", "--schema1", "keep")
    assert refused.code == 2 and "cannot hold schema1" in refused.stderr and not (tmp_path / "x").exists()


def test_list_json_says_which_tags_a_conversion_changes(schema1_tar):
    archive, made = schema1_tar
    run = regcarve("list", archive, "--json")
    tags = {t["ref"]: t for t in json.loads(run.stdout)["tags"]}
    assert all(t["schema1_convert"]["digest_changes"] for t in tags.values())
    assert "RFC 3339" in tags["broken/s1:history"]["schema1_convert"]["problem"]
    assert tags["legacy/app:a"]["schema1_convert"]["problem"] is None
    plain = json.loads(regcarve("list", MAIN_ARCHIVE, "--json").stdout)
    assert [t["ref"] for t in plain["tags"] if "schema1_convert" in t] == ["legacy/old:s1"]


def test_docker_archive_holds_converted_schema1_that_skopeo_reads(schema1_tar, tmp_path):
    archive, made = schema1_tar
    out = tmp_path / "out"
    run = regcarve("convert", archive, "-o", out, "--format", "docker-archive", "-q")
    assert run.code == 1, run.stderr  # the three that cannot be converted
    with LiveRegistry(schema1=False) as reg:
        for ref in made.good:
            repo, tag = ref.split(":")
            tar = out / repo / "_tags" / f"{tag}.tar"
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{tar}",
                            f"docker://{reg.host}/{ref}"], check=True, capture_output=True)
            _, _, raw = reg.manifest(repo, tag)
            status, _, body = reg.request("GET", f"/v2/{repo}/blobs/{json.loads(raw)['config']['digest']}")
            assert status == 200
            assert json.loads(body)["rootfs"]["diff_ids"] == [made.diff_ids[b] for b in made.kept[ref]]


def test_fixture_docker_archive_includes_the_schema1_tag(tmp_path):
    out = tmp_path / "out"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--format", "docker-archive", "--image", "legacy/*", "-q")
    assert run.code == 0, run.stderr
    tar = out / "legacy/old/_tags/s1.tar"
    with LiveRegistry(schema1=False) as reg:
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{tar}",
                        f"docker://{reg.host}/legacy/old:s1"], check=True, capture_output=True)
        _, _, raw = reg.manifest("legacy/old", "s1")
        status, _, body = reg.request("GET", f"/v2/legacy/old/blobs/{json.loads(raw)['config']['digest']}")
    converted = tmp_path / "dir"
    assert regcarve("convert", MAIN_ARCHIVE, "-o", converted, "--schema1", "convert", "--image", "legacy/*").code == 0
    _, _, config = read_dir_image(converted / "legacy/old:s1")
    assert status == 200 and json.loads(body)["rootfs"]["diff_ids"] == config["rootfs"]["diff_ids"]

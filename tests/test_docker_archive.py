"""`regcarve convert --format docker-archive`, proven by real skopeo pushing into a live registry.

skopeo's docker-archive source hands each layer on under its diff_id, and copy verifies it, so a
successful push checks every layer against the config; the pushed config must also keep its digest.
"""

import functools
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

import pytest

from archivecheck import members, push, pushed_config, read_member, sha, skopeo
from conftest import GC_ARCHIVE, MAIN_ARCHIVE, regcarve

IMAGE_CONFIGS = {"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"}
LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")


# --- what the truth says docker-archive should do with each tag --------------------------------------
def amd64_leaf(manifest: dict) -> dict | None:
    if manifest.get("kind") != "index":
        return manifest
    for child in manifest["children"]:
        p = child.get("platform") or {}
        if child["manifest"].get("kind") == "index":
            leaf = amd64_leaf(child["manifest"])
            if leaf:
                return leaf
        elif (p.get("os"), p.get("architecture")) == ("linux", "amd64"):
            return child["manifest"]
    return None


@functools.cache
def converted_schema1(repo: str, tag: str) -> dict:
    """A schema1 tag as docker-archive holds it: converted to schema2 (proven against skopeo's conversion in
    test_schema1_convert.py), in the truth's shape: digest, config, layers, diff_ids."""
    with tempfile.TemporaryDirectory(prefix="regcarve-s1-") as tmp:
        out = Path(tmp) / "out"
        run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "--schema1", "convert", "--image", f"{repo}:{tag}", "-q")
        assert run.code == 0, run.stderr
        raw = (out / f"{repo}:{tag}" / "manifest.json").read_bytes()
        manifest = json.loads(raw)
        config = json.loads((out / f"{repo}:{tag}" / manifest["config"]["digest"][7:]).read_bytes())
    return {"kind": "image", "digest": sha(raw), "diff_ids": config["rootfs"]["diff_ids"],
            "config": {"digest": manifest["config"]["digest"], "media_type": manifest["config"]["mediaType"]},
            "layers": [{"digest": d["digest"], "media_type": d["mediaType"], "present": True}
                       for d in manifest["layers"]]}


LEFT_OUT = "left out"


def expected(t: dict) -> tuple[str, dict | None]:
    """(status, the manifest the archive holds) for a truth tag; attachments (the cosign signature) are
    "left out": the report does not list them, the summary counts them in one line."""
    if re.fullmatch(r"sha256-[0-9a-f]{64}\.(sig|att|sbom)", t["tag"]):
        return LEFT_OUT, None
    if t["kind"] == "schema1":
        return "written", converted_schema1(t["repo"], t["tag"])
    leaf = amd64_leaf(t)
    assert leaf is not None
    if leaf["config"]["media_type"] not in IMAGE_CONFIGS or not all(
            layer["media_type"].startswith(LAYER_PREFIXES) for layer in leaf["layers"]):
        return "skipped", None
    if not all(layer["present"] for layer in leaf["layers"]):
        return "failed", None
    return "written", leaf


def convert(tmp: Path, *args) -> tuple[Path, object, dict]:
    out = tmp / "out"
    report = tmp / "report.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-f", "docker-archive", "--report", report, "-q", *args)
    return out, run, json.loads(report.read_text()) if report.exists() else {}


@pytest.fixture(scope="module")
def per_tag(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("da"))


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("dak"), "--keep-compressed")


# --- the fixture through the CLI -----------------------------------------------------------------------
def test_every_tag_gets_its_status_and_reason(per_tag, truth):
    out, run, report = per_tag
    assert run.code == 1, run.stderr  # some tags cannot be held: skipped and failed
    by_ref = {e["ref"]: e for e in report["images"]}
    assert report["format"] == "docker-archive" and set(by_ref) == {
        f"{t['repo']}:{t['tag']}" for t in truth["tags"] if expected(t)[0] != LEFT_OUT}
    assert "note: 1 attachment tag(s) left out (1 signature): a docker-archive holds container images only" in run.stderr
    for t in truth["tags"]:
        ref = f"{t['repo']}:{t['tag']}"
        status, leaf = expected(t)
        if status == LEFT_OUT:
            assert not (out / f"{t['repo']}/_tags/{t['tag']}.tar").exists()
            continue
        entry = by_ref[ref]
        assert entry["status"] == status, (ref, entry)
        path = out / f"{t['repo']}/_tags/{t['tag']}.tar"
        assert path.is_file() == (status == "written"), ref
        if status == "written":
            assert entry["path"] == f"{t['repo']}/_tags/{t['tag']}.tar" and entry["digest"] == leaf["digest"]
            if t["kind"] == "schema1":
                assert entry["source_digest"] == t["digest"] != entry["digest"]
        elif status == "skipped":
            assert "not a container image" in entry["reason"]
        else:
            foreign = [layer["digest"] for layer in leaf_or_self(t)["layers"] if not layer["present"]]
            assert "foreign layer 0" in entry["reason"] and foreign[0] in entry["reason"]
    assert "docker load -i" in run.stderr and "skopeo copy docker-archive:" in run.stderr
    # docker-archive copies bytes: the store is emptied, and no temporary file stays
    assert not list((out / ".regcarve/blobs/sha256").iterdir())
    assert not [p for p in out.rglob("*.tmp")]
    assert not (out / "team/win").exists()  # the failed image left no folder behind


def leaf_or_self(t: dict) -> dict:
    return amd64_leaf(t) or t


def test_archives_hold_the_source_config_and_docker_layout(per_tag, truth):
    out, _, _ = per_tag
    for t in truth["tags"]:
        status, leaf = expected(t)
        if status != "written":
            continue
        path = out / f"{t['repo']}/_tags/{t['tag']}.tar"
        config = json.loads(skopeo("inspect", "--config", f"docker-archive:{path}").stdout)
        assert config["rootfs"]["diff_ids"] == leaf["diff_ids"], path
        names = members(path)
        [item] = json.loads(read_member(path, "manifest.json"))
        assert item["RepoTags"] == [f"{t['repo']}:{t['tag']}"]
        assert item["Config"] == leaf["config"]["digest"][7:] + ".json"
        assert sha(read_member(path, item["Config"])) == leaf["config"]["digest"]  # the exact bytes
        assert item["Layers"] == [d[7:] + ".tar" for d in leaf["diff_ids"]]
        for name, diff_id in zip(item["Layers"], leaf["diff_ids"]):
            assert sha(read_member(path, name)) == diff_id  # uncompressed
        repos = json.loads(read_member(path, "repositories"))
        top = repos[t["repo"]][t["tag"]]
        assert names[f"{top}/layer.tar"].issym() and f"{top}/VERSION" in names
        assert list(names)[-2:] == ["manifest.json", "repositories"]


def test_skopeo_pushes_every_archive(per_tag, truth, registry):
    out, _, _ = per_tag
    pushed = 0
    for t in truth["tags"]:
        status, leaf = expected(t)
        if status != "written":
            continue
        dest = f"plain/{t['repo']}"
        push(registry, f"docker-archive:{out}/{t['repo']}/_tags/{t['tag']}.tar", f"{dest}:{t['tag']}")
        digest, config = pushed_config(registry, dest, t["tag"])
        assert digest == leaf["config"]["digest"] and config["rootfs"]["diff_ids"] == leaf["diff_ids"]
        pushed += 1
    assert pushed >= 10


def test_keep_compressed_keeps_gzip_blobs_and_still_pushes(kept, truth, registry):
    out, run, report = kept
    assert [e["status"] for e in report["images"]] == [expected(t)[0] for t in truth["tags"]
                                                       if expected(t)[0] != LEFT_OUT]
    zstd_seen = False
    for t in truth["tags"]:
        status, leaf = expected(t)
        if status != "written":
            continue
        path = out / f"{t['repo']}/_tags/{t['tag']}.tar"
        [item] = json.loads(read_member(path, "manifest.json"))
        for name, layer, diff_id in zip(item["Layers"], leaf["layers"], leaf["diff_ids"]):
            data = read_member(path, name)
            if layer["media_type"].endswith("+zstd"):  # zstd is never kept: Docker < 23 cannot load it
                zstd_seen = True
                assert name == diff_id[7:] + ".tar" and sha(data) == diff_id
            else:
                assert name == diff_id[7:] + ".tar.gz" and sha(data) == layer["digest"]  # as stored
        config = json.loads(skopeo("inspect", "--config", f"docker-archive:{path}").stdout)
        assert config["rootfs"]["diff_ids"] == leaf["diff_ids"]
        dest = f"kept/{t['repo']}"
        push(registry, f"docker-archive:{path}", f"{dest}:{t['tag']}")
        assert pushed_config(registry, dest, t["tag"])[0] == leaf["config"]["digest"]
    assert zstd_seen


def test_zstd_image_converts(per_tag, truth):
    out, _, report = per_tag
    [t] = [t for t in truth["tags"] if t["repo"] == "team/zstd"]
    assert all(layer["media_type"].endswith("+zstd") for layer in t["layers"])
    assert {e["ref"]: e["status"] for e in report["images"]}["team/zstd:1"] == "written"
    path = out / "team/zstd/_tags/1.tar"
    [item] = json.loads(read_member(path, "manifest.json"))
    assert [sha(read_member(path, n)) for n in item["Layers"]] == t["diff_ids"]


def test_single_file_holds_every_layer_once(tmp_path, truth, registry):
    bundle = tmp_path / "bundle.tar"
    prefix = "127.0.0.1:5999/mirror"
    out, run, report = convert(tmp_path, "--single-file", bundle, "--repo-prefix", prefix)
    assert run.code == 1
    written = {}
    for t in truth["tags"]:
        status, leaf = expected(t)
        if status == "written":
            written[f"{t['repo']}:{t['tag']}"] = leaf
    entries = {e["ref"]: e for e in report["images"]}
    assert {r for r, e in entries.items() if e["status"] == "written"} == set(written)
    assert all(entries[r]["path"] == str(bundle) for r in written)
    assert not list(out.rglob("*.tar"))  # only the one FILE
    names = members(bundle)
    diff_ids = {d for leaf in written.values() for d in leaf["diff_ids"]}
    assert {n for n in names if n.endswith(".tar") and "/" not in n} == {d[7:] + ".tar" for d in diff_ids}
    items = json.loads(read_member(bundle, "manifest.json"))
    tags = [rt for item in items for rt in item["RepoTags"]]
    assert sorted(tags) == sorted(f"{prefix}/{r}" for r in written)
    assert len(items) == len({leaf["config"]["digest"] for leaf in written.values()})
    for ref, leaf in written.items():
        repo, tag = ref.rsplit(":", 1)
        source = f"docker-archive:{bundle}:{prefix}/{ref}"
        config = json.loads(skopeo("inspect", "--config", source).stdout)
        assert config["rootfs"]["diff_ids"] == leaf["diff_ids"]
        push(registry, source, f"single/{ref}")
        assert pushed_config(registry, f"single/{repo}", tag)[0] == leaf["config"]["digest"]
    # an existing FILE is refused before the input is read, and replaced with --force
    again = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "o2", "-f", "docker-archive", "--single-file", bundle)
    assert again.code == 2 and "exists" in again.stderr and not (tmp_path / "o2").exists()
    forced = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "o2", "-f", "docker-archive", "-q", "--image", "app",
                      "--single-file", bundle, "--force")
    assert forced.code == 0, forced.stderr
    assert [i["RepoTags"] for i in json.loads(read_member(bundle, "manifest.json"))] == [["app:v1"]]


def test_platform_choice_and_overwrite_rules(tmp_path, truth):
    out, run, report = convert(tmp_path, "--platform", "linux/arm64", "--image", "team/multi", "--image", "app")
    status = {e["ref"]: e for e in report["images"]}
    assert status["team/multi:latest"]["status"] == "written"
    assert "platform linux/arm64/v8" in status["team/multi:latest"]["reason"]
    assert status["app:v1"]["status"] == "skipped" and "linux/amd64" in status["app:v1"]["reason"]
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{out}/team/multi/_tags/latest.tar").stdout)
    assert config["architecture"] == "arm64"
    # a rerun replaces its own archive; a file regcarve did not write is refused, and replaced with --force
    assert convert(tmp_path, "--image", "team/multi")[1].code == 0
    path = out / "team/multi/_tags/latest.tar"
    path.write_bytes(b"precious")
    _, run, report = convert(tmp_path, "--image", "team/multi")
    assert run.code == 1 and "not written by regcarve" in report["images"][0]["reason"]
    assert path.read_bytes() == b"precious"
    _, run, _ = convert(tmp_path, "--image", "team/multi", "--force")
    assert run.code == 0 and tarfile.is_tarfile(path)
    bad = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "o3", "-f", "docker-archive", "--repo-prefix", "myproj")
    assert bad.code == 2 and "registry host" in bad.stderr


def _rewrite_with_bad_diff_id(tmp: Path, truth: dict) -> tuple[Path, str]:
    """The fixture, with app:v1 retagged to a copy whose config has a wrong diff_id for layer 2."""
    [t] = [t for t in truth["tags"] if (t["repo"], t["tag"]) == ("app", "v1")]
    root = truth["storage_root"]

    def blob_path(d: str) -> str:
        return f"{root}/blobs/sha256/{d[7:9]}/{d[7:]}/data"

    with tarfile.open(MAIN_ARCHIVE) as src:
        config = json.loads(src.extractfile(blob_path(t["config"]["digest"])).read())
        manifest = json.loads(src.extractfile(blob_path(t["digest"])).read())
        config["rootfs"]["diff_ids"][2] = sha(b"not this layer")
        config_raw = json.dumps(config).encode()
        manifest["config"].update(digest=sha(config_raw), size=len(config_raw))
        manifest_raw = json.dumps(manifest, indent=3).encode()
        added = {
            blob_path(sha(config_raw)): config_raw,
            blob_path(sha(manifest_raw)): manifest_raw,
            f"{root}/repositories/app/_layers/sha256/{sha(config_raw)[7:]}/link": sha(config_raw).encode(),
            f"{root}/repositories/app/_manifests/revisions/sha256/{sha(manifest_raw)[7:]}/link":
                sha(manifest_raw).encode(),
        }
        current = f"{root}/repositories/app/_manifests/tags/v1/current/link"
        out = tmp / "bad.tar"
        with tarfile.open(out, "w") as dst:
            for m in src:
                data = src.extractfile(m).read() if m.isfile() else None
                if m.name == current:
                    data = sha(manifest_raw).encode()
                    m.size = len(data)
                dst.addfile(m, io.BytesIO(data) if data is not None else None)
            for name, data in added.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return out, t["layers"][2]["digest"]


def test_diff_id_mismatch_fails_that_image_only(tmp_path, truth):
    bad, layer = _rewrite_with_bad_diff_id(tmp_path, truth)
    for extra in ((), ("--single-file", tmp_path / "all.tar")):
        out = tmp_path / f"out{len(extra)}"
        report = tmp_path / f"r{len(extra)}.json"
        run = regcarve("convert", bad, "-o", out, "-f", "docker-archive", "--report", report, "-q", *extra)
        assert run.code == 1
        entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
        reason = entries["app:v1"]["reason"]
        assert entries["app:v1"]["status"] == "failed" and f"layer 2 {layer}" in reason and "diff_ids[2]" in reason
        assert entries["team/web:1.0"]["status"] == "written" and entries["foo:latest"]["status"] == "written"
        assert not (out / "app").exists() and not list(tmp_path.rglob("*.tmp"))
    names = members(tmp_path / "all.tar")
    good = {e["ref"] for e in entries.values() if e["status"] == "written"}
    assert {rt for i in json.loads(read_member(tmp_path / "all.tar", "manifest.json")) for rt in i["RepoTags"]} == good
    assert not any(n.startswith(truth["tags"][0]["diff_ids"][2][7:]) for n in names)  # the bad layer was undone


def test_gc_damaged_indexes_fail_and_intact_images_are_written(tmp_path):
    report = tmp_path / "r.json"
    run = regcarve("convert", GC_ARCHIVE, "-o", tmp_path / "out", "-f", "docker-archive", "--report", report, "-q")
    assert run.code == 1
    status = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
    assert status["gc/intact:1"]["status"] == "written"
    assert status["gc/multi:1"]["status"] == "failed" and "not in the archive" in status["gc/multi:1"]["reason"]
    skopeo("inspect", "--config", f"docker-archive:{tmp_path}/out/gc/intact/_tags/1.tar")


def test_single_file_inside_a_fresh_out(tmp_path):
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    run = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-f", "docker-archive", "--image", "foo", "-q",
                   "--single-file", out / "bundles/foo.tar", "--report", report)
    assert run.code == 0, run.stderr
    assert [e["path"] for e in json.loads(report.read_text())["images"]] == ["bundles/foo.tar"]
    assert os.listdir(out / "bundles") == ["foo.tar"]
    bad = regcarve("convert", MAIN_ARCHIVE, "-o", out, "-f", "docker-archive", "--single-file", tmp_path / "no/x.tar")
    assert bad.code == 2 and "only inside OUT" in bad.stderr


def test_what_skopeo_shows_of_the_names_an_archive_gives(per_tag, truth, tmp_path):
    """`skopeo inspect` fills RepoTags from a registry's tag list (docker:// only), so it is [] for every
    docker-archive, skopeo's own too; list-tags and a named reference show the archive's names."""
    out, _, _ = per_tag
    leaves = {f"{t['repo']}:{t['tag']}": expected(t)[1] for t in truth["tags"]}
    for ref, full in (("app:v1", "docker.io/library/app"), ("team/web:1.0", "docker.io/team/web")):
        repo, tag = ref.rsplit(":", 1)
        path = out / f"{repo}/_tags/{tag}.tar"
        shown = json.loads(skopeo("inspect", f"docker-archive:{path}").stdout)
        assert shown["RepoTags"] == [] and "Name" not in shown
        assert json.loads(skopeo("list-tags", f"docker-archive:{path}").stdout)["Tags"] == [ref]
        assert json.loads(skopeo("inspect", f"docker-archive:{path}:{ref}").stdout)["Name"] == full
        theirs = tmp_path / f"{tag}.tar"  # skopeo's own writer: it qualifies the name, inspect shows [] all the same
        skopeo("copy", "-q", f"docker-archive:{path}", f"docker-archive:{theirs}:{ref}")
        assert json.loads(read_member(theirs, "manifest.json"))[0]["RepoTags"] == [f"{full}:{tag}"]
        assert json.loads(skopeo("inspect", f"docker-archive:{theirs}").stdout)["RepoTags"] == []
        copied = tmp_path / f"dir-{tag}"
        skopeo("copy", "-q", f"docker-archive:{path}", f"dir:{copied}")
        manifest = json.loads((copied / "manifest.json").read_text())
        assert manifest["config"]["digest"] == leaves[ref]["config"]["digest"]
        assert [layer["digest"] for layer in manifest["layers"]] == leaves[ref]["diff_ids"]
    prefixed, run, _ = convert(tmp_path / "p", "--image", "app", "--repo-prefix", "127.0.0.1:5999/mirror")
    assert run.code == 0, run.stderr
    path = prefixed / "app/_tags/v1.tar"
    assert json.loads(skopeo("list-tags", f"docker-archive:{path}").stdout)["Tags"] == ["127.0.0.1:5999/mirror/app:v1"]
    shown = json.loads(skopeo("inspect", f"docker-archive:{path}:127.0.0.1:5999/mirror/app:v1").stdout)
    assert shown["Name"] == "127.0.0.1:5999/mirror/app" and shown["RepoTags"] == []

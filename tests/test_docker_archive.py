"""`regcarve convert --format docker-archive`, proven by real skopeo pushing into a live registry.

skopeo's docker-archive source hands each layer on under its diff_id, and copy verifies it, so a
successful push checks every layer against the config; the pushed config must also keep its digest.
"""

import bz2
import errno
import gzip
import hashlib
import io
import json
import lzma
import os
import struct
import subprocess
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, regcarve
from registry import LiveRegistry
from regcarve.blobs.store import BlobStore
from regcarve.model.catalog import Catalog, Image, ImageKind, ManifestNode
from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.manifests import DOCKER_CONFIG, DOCKER_FOREIGN_LAYER, OCI_INDEX, OCI_MANIFEST, Platform, parse_manifest
from regcarve.plan.select import Job, NotSelected, plan_job
from regcarve.blobs import codecs
from regcarve.sinks import dockerarchive
from regcarve.sinks.fsout import Context, Options, WriteError
from regcarve.blobs.codecs import CHUNK, LayerError, MultiGzip, compression_of, decoder
from regcarve.sinks.dockerarchive import DockerArchiveWriter, check_repo_prefix
from regcarve.sinks.tarout import TarOut, tar_header

IMAGE_CONFIGS = {"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"}
LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr[-2000:]}"
    return p


def push(reg: LiveRegistry, source: str, dest: str) -> None:
    skopeo("copy", "-q", "--dest-tls-verify=false", source, f"docker://{reg.host}/{dest}")


def pushed_config(reg: LiveRegistry, repo: str, tag: str) -> tuple[str, dict]:
    _, _, body = reg.manifest(repo, tag)
    digest = json.loads(body)["config"]["digest"]
    status, _, config = reg.request("GET", f"/v2/{repo}/blobs/{digest}", accept="*/*")
    assert status == 200
    return digest, json.loads(config)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as t:
        infos = t.getmembers()
    names = [i.name for i in infos]
    assert len(names) == len(set(names)), "an entry is stored twice"
    return {i.name: i for i in infos}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as t:
        return t.extractfile(name).read()


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


def expected(t: dict) -> tuple[str, dict | None]:
    """(status, the manifest the archive holds) for a truth tag."""
    if t["kind"] == "schema1":
        return "skipped", None
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
def registry():
    with LiveRegistry() as reg:
        yield reg


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
    assert report["format"] == "docker-archive" and set(by_ref) == {f"{t['repo']}:{t['tag']}" for t in truth["tags"]}
    for t in truth["tags"]:
        ref = f"{t['repo']}:{t['tag']}"
        entry = by_ref[ref]
        status, leaf = expected(t)
        assert entry["status"] == status, (ref, entry)
        path = out / f"{t['repo']}/_tags/{t['tag']}.tar"
        assert path.is_file() == (status == "written"), ref
        if status == "written":
            assert entry["path"] == f"{t['repo']}/_tags/{t['tag']}.tar" and entry["digest"] == leaf["digest"]
        elif t["kind"] == "schema1":
            assert "schema1" in entry["reason"]
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
    assert [e["status"] for e in report["images"]] == [expected(t)[0] for t in truth["tags"]]
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


# --- decoders and tar headers ----------------------------------------------------------------------------
def drain(reader, n: int = CHUNK) -> bytes:
    out = []
    while chunk := reader.read(n):
        assert len(chunk) <= n
        out.append(chunk)
    return b"".join(out)


def zstd_skippable(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5E, len(payload)) + payload


@pytest.fixture(params=["isal", "_ZlibDecompressor", "decompressobj"])
def inflater(request, monkeypatch):
    """Each way a gzip member is decoded: ISA-L's, zlib-ng's (or 3.12's) decompressor, or decompressobj
    behind it."""
    if request.param == "isal":
        if codecs._isal is None:
            pytest.skip("no isal here")
        monkeypatch.setattr(codecs, "_new_inflater", codecs._isal_inflater)
    elif request.param == "decompressobj":
        monkeypatch.setattr(codecs, "_new_inflater", codecs._stdlib_inflater)
    else:
        monkeypatch.setattr(codecs, "_new_inflater", codecs._zlib_inflater)
        if isinstance(codecs._new_inflater(), codecs.StdlibInflater):
            pytest.skip("no _ZlibDecompressor here")


def test_decoders_read_every_member_and_frame(inflater):
    a, b = os.urandom(300_000), b"x" * 2_000_000
    multi = gzip.compress(a) + gzip.compress(b) + gzip.compress(b"")
    assert compression_of(multi) == "gzip" and drain(decoder("gzip", io.BytesIO(multi))) == a + b
    padded = MultiGzip(io.BytesIO(gzip.compress(a) + bytes(1000) + gzip.compress(b) + bytes(10)))
    assert drain(padded) == a + b and padded.padded and padded.members == 2
    with pytest.raises(LayerError, match="truncated"):
        drain(decoder("gzip", io.BytesIO(multi[:1000])))
    with pytest.raises(LayerError, match="corrupt gzip"):
        drain(decoder("gzip", io.BytesIO(gzip.compress(a) + b"junk after the stream")))
    zc = zstandard.ZstdCompressor()
    chunked = zstd_skippable(b"toc") + zc.compress(a) + zstd_skippable(b"x" * 100) + zc.compress(b) + zstd_skippable(b"")
    assert compression_of(chunked) == "zstd" and drain(decoder("zstd", io.BytesIO(chunked))) == a + b
    assert drain(decoder("bzip2", io.BytesIO(bz2.compress(a) + bz2.compress(b)))) == a + b
    assert compression_of(lzma.compress(a)) == "xz" and drain(decoder("xz", io.BytesIO(lzma.compress(a)))) == a
    assert compression_of(b"plain tar data") == "none"


def test_a_bomb_is_read_in_bounded_chunks(inflater):
    bomb = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 kB
    assert len(drain(decoder("gzip", io.BytesIO(bomb)), 1 << 16)) == 64 << 20


@pytest.mark.parametrize("kernel", [True, False])
def test_headers_and_patched_entries(tmp_path, kernel, monkeypatch):
    if not kernel:  # a filesystem (or kernel) without copy_file_range between these files: read and written
        def refuse(*args):
            raise OSError(errno.EXDEV, "cross-device")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    big = tar_header("a" * 64 + ".tar", 9 << 30)
    assert len(big) == 512 and big[124] & 0x80  # base-256
    assert tarfile.TarInfo.frombuf(big, "utf-8", "strict").size == 9 << 30
    assert tarfile.TarInfo.frombuf(tar_header("x", 8**11 - 1), "utf-8", "strict").size == 8**11 - 1
    path = tmp_path / "t.tar"
    out = TarOut(os.open(path, os.O_RDWR | os.O_CREAT), path)
    out.add("first", b"1")
    mark = out.pos
    start = out.begin()
    out.write(b"abc" * 1000)
    out.end(start, "gone")
    out.rollback(mark)
    start = out.begin()
    out.write(b"z" * 777)
    out.end(start, "second")
    src = tmp_path / "src"
    src.write_bytes(b"-" * 100 + b"copied" * 50_000 + b"-" * 100)
    fd = os.open(src, os.O_RDONLY)
    start = out.begin()
    out.copy(fd, 100, 300_000)
    out.end(start, "third")
    mark = out.pos
    with pytest.raises(OSError, match="ended 50 bytes early"):
        out.copy(fd, 300_150, 100)
    out.rollback(mark)
    os.close(fd)
    out.close()
    with tarfile.open(path) as t:
        assert [(m.name, m.size) for m in t] == [("first", 1), ("second", 777), ("third", 300_000)]
        assert t.extractfile("second").read() == b"z" * 777
        assert t.extractfile("third").read() == b"copied" * 50_000


def test_repo_prefix_grammar():
    assert check_repo_prefix("harbor.local:5000/proj/sub/") == "harbor.local:5000/proj/sub"
    assert check_repo_prefix("localhost/x") == "localhost/x"
    for bad in ("myproj", "harbor.local/Proj", "harbor.local//x", "-x.io"):
        with pytest.raises(ValueError):
            check_repo_prefix(bad)


# --- the writer on a hand-built job: eStargz, zstd:chunked, padded gzip, rollback -----------------------------
def layer_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Fixture:
    """A store, an inventory and a catalog holding hand-made blobs; jobs for images of them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.store = BlobStore(tmp / "store")
        self.inv = Inventory()

    def blob(self, data: bytes) -> str:
        d = sha(data)
        self.store.path(d).write_bytes(data)
        self.inv.blobs[d] = BlobRecord(d, len(data), True)
        if data[:1] == b"{":
            self.inv.json_blobs[d] = data
        return d

    def job(self, tag: str, blobs: list[bytes], diff_ids: list[str], media_types: list[str] = ()) -> Job:
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {"Labels": {"tag": tag}}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": self.blob(config), "size": len(config)},
            "layers": [{"mediaType": mt or "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.blob(b),
                        "size": len(b)} for b, mt in zip(blobs, list(media_types) + [""] * len(blobs))]}).encode()
        node = ManifestNode(self.blob(manifest), OCI_MANIFEST, manifest, parse_manifest(manifest))
        node.kind = ImageKind.IMAGE
        return Job(Image("hand/made", tag, node.digest, node), node, [node])

    def ctx(self, **options) -> Context:
        out = self.tmp / "out"
        out.mkdir(exist_ok=True)
        return Context(out, self.store, Catalog(self.inv, [], [], []), Options(**options))


def estargz(tar: bytes) -> bytes:
    """Like eStargz: a gzip member per piece, then an empty member as footer."""
    return b"".join(gzip.compress(tar[i:i + 700]) for i in range(0, len(tar), 700)) + gzip.compress(b"")


@pytest.fixture
def layers():
    t1, t2, t3 = (layer_tar(f"f{i}", os.urandom(5000) + b"y" * 30000) for i in range(3))
    zc = zstandard.ZstdCompressor()
    chunked = zc.compress(t2[:10000]) + zstd_skippable(b'{"toc":1}') + zc.compress(t2[10000:]) + zstd_skippable(b"ts")
    padded = gzip.compress(t3) + bytes(512)
    return [estargz(t1), chunked, padded], [sha(t1), sha(t2), sha(t3)]


@pytest.mark.parametrize("keep", [False, True])
def test_hand_made_layers_load_and_push(tmp_path, layers, keep, registry):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    job = fx.job("t", blobs, diff_ids)
    ctx = fx.ctx(keep_compressed=keep)
    writer = DockerArchiveWriter()
    assert writer.write(job, ctx) > 0
    path = ctx.out / "hand/made/_tags/t.tar"
    [item] = json.loads(read_member(path, "manifest.json"))
    # eStargz is kept as stored with --keep-compressed; zstd never; padded gzip falls back to a plain tar
    assert item["Layers"] == [diff_ids[0][7:] + (".tar.gz" if keep else ".tar"), diff_ids[1][7:] + ".tar",
                              diff_ids[2][7:] + ".tar"]
    push(registry, f"docker-archive:{path}", f"hand/{int(keep)}:t")
    assert pushed_config(registry, f"hand/{int(keep)}", "t")[1]["rootfs"]["diff_ids"] == diff_ids


def count_decodes(monkeypatch) -> Counter:
    """How often each stored blob is decoded, from now on."""
    calls: Counter = Counter()
    real = codecs.decoder

    def counting(kind, raw):
        calls[Path(raw.name).name] += 1
        return real(kind, raw)

    monkeypatch.setattr(codecs, "decoder", counting)
    return calls


@pytest.mark.parametrize("keep", [False, True])
def test_shared_layers_are_decoded_once_a_run_and_copied(tmp_path, layers, keep, registry, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    jobs = {"a": fx.job("a", blobs, diff_ids), "b": fx.job("b", blobs[:2], diff_ids[:2]),
            "c": fx.job("c", [blobs[1], blobs[0]], [diff_ids[1], diff_ids[0]])}  # the same layers, other places
    ctx = fx.ctx(keep_compressed=keep)
    writer = DockerArchiveWriter()
    calls = count_decodes(monkeypatch)
    sizes = {tag: writer.write(job, ctx) for tag, job in jobs.items()}
    # the padded gzip layer is decoded a second time with --keep-compressed, to store it uncompressed
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 2 if keep else 1}
    for tag, job in jobs.items():
        path = ctx.out / f"hand/made/_tags/{tag}.tar"
        assert path.stat().st_size == sizes[tag]
        [item] = json.loads(read_member(path, "manifest.json"))
        digests = [d.digest for d in job.root.parsed.layers]
        diffs = json.loads(fx.store.path(job.root.parsed.config.digest).read_bytes())["rootfs"]["diff_ids"]
        for name, digest, diff_id in zip(item["Layers"], digests, diffs):
            data = read_member(path, name)
            assert sha(data) == (digest if name.endswith(".tar.gz") else diff_id), (tag, name)
        push(registry, f"docker-archive:{path}", f"shared/{int(keep)}:{tag}")
        assert pushed_config(registry, f"shared/{int(keep)}", tag)[1]["rootfs"]["diff_ids"] == diffs


def layer_hashes(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        [item] = json.loads(t.extractfile("manifest.json").read())
        return [sha(t.extractfile(n).read()) for n in item["Layers"]]


def test_layers_are_copied_from_the_file_written_whatever_its_name_now(tmp_path, layers, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    ctx = fx.ctx()
    tags = ctx.out / "hand/made/_tags"
    writer = DockerArchiveWriter()
    calls = count_decodes(monkeypatch)
    writer.write(fx.job("a", blobs[:2], diff_ids[:2]), ctx)
    # another file at its name, then none: the layers still come from the file that was written
    (tmp_path / "other").write_bytes(bytes(100_000))
    os.replace(tmp_path / "other", tags / "a.tar")
    writer.write(fx.job("b", blobs[:1], diff_ids[:1]), ctx)
    (tags / "a.tar").unlink()
    writer.write(fx.job("c", blobs[1:2], diff_ids[1:2]), ctx)
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1}
    assert layer_hashes(tags / "b.tar") == diff_ids[:1] and layer_hashes(tags / "c.tar") == diff_ids[1:2]
    # what a failed image decoded is not kept: the next image decodes that layer again
    with pytest.raises(WriteError, match=r"diff_ids\[1\]"):
        writer.write(fx.job("bad", [blobs[0], blobs[2]], [diff_ids[0], sha(b"other")]), ctx)
    writer.write(fx.job("d", blobs[2:], diff_ids[2:]), ctx)
    assert calls[sha(blobs[2])[7:]] == 2
    # a file changed since it was written is not copied from (here its size stays, its mtime moves)
    d = tags / "d.tar"
    st = d.stat()
    with open(d, "r+b") as f:
        f.write(bytes(st.st_size))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    writer.write(fx.job("e", blobs, diff_ids), ctx)
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 3}
    assert layer_hashes(tags / "e.tar") == diff_ids
    assert sorted(p.name for p in tags.iterdir()) == ["b.tar", "c.tar", "d.tar", "e.tar"]
    writer.finish([], ctx)
    assert not writer._finished.held


def test_only_so_many_archives_stay_open(tmp_path, layers, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    ctx = fx.ctx()
    monkeypatch.setattr(dockerarchive, "HELD_MAX", 2)
    writer = DockerArchiveWriter()
    calls = count_decodes(monkeypatch)
    for i in range(3):
        writer.write(fx.job(str(i), blobs[i:i + 1], diff_ids[i:i + 1]), ctx)
    writer.write(fx.job("again0", blobs[:1], diff_ids[:1]), ctx)  # its archive was closed: decoded again
    writer.write(fx.job("again2", blobs[2:], diff_ids[2:]), ctx)
    assert calls == {sha(blobs[0])[7:]: 2, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 1}
    assert len(writer._finished.held) == 2
    assert layer_hashes(ctx.out / "hand/made/_tags/again0.tar") == diff_ids[:1]
    assert layer_hashes(ctx.out / "hand/made/_tags/again2.tar") == diff_ids[2:]
    writer.finish([], ctx)


def test_a_layer_that_does_not_decode_fails_its_image_and_stops_the_thread(tmp_path, layers, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    ctx = fx.ctx()
    monkeypatch.setattr(dockerarchive, "QUEUE_DEPTH", 1)  # the thread is kept waiting inside the next layer
    big = layer_tar("big", os.urandom(3 << 20))
    cut = gzip.compress(big)[:-5000]
    threads = threading.active_count()
    with pytest.raises(WriteError, match=rf"layer 1 {sha(cut)}: gzip member 1 is truncated"):
        DockerArchiveWriter().write(fx.job("t", [blobs[0], cut, gzip.compress(big)], [diff_ids[0], sha(big), sha(big)]),
                                    ctx)
    with pytest.raises(WriteError, match=rf"layer 0 {sha(blobs[1])} \(zstd\).*hashes to {diff_ids[1]}"):
        DockerArchiveWriter().write(fx.job("t", [blobs[1], gzip.compress(big)], [sha(b"x"), sha(big)]), ctx)
    assert threading.active_count() == threads

    def broken(kind, raw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(codecs, "decoder", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):  # not taken for a reason to fail the image
        DockerArchiveWriter().write(fx.job("t", blobs, diff_ids), ctx)
    assert threading.active_count() == threads
    assert not (ctx.out / "hand").exists() and not list(ctx.out.rglob("*.tmp"))


def test_hand_made_mismatch_and_single_file_rollback(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    good = fx.job("good", blobs[:2], diff_ids[:2])
    wrong = fx.job("wrong", blobs, diff_ids[:2] + [sha(b"other")])
    ctx = fx.ctx()
    writer = DockerArchiveWriter()
    with pytest.raises(WriteError, match=rf"layer 2 {sha(blobs[2])} \(gzip\).*hashes to {diff_ids[2]}"):
        writer.write(wrong, ctx)
    assert not (ctx.out / "hand").exists()
    assert not list(ctx.out.rglob("*.tmp"))
    # in one FILE, the failed image is cut off again while the others stay
    bundle = tmp_path / "bundle.tar"
    ctx = fx.ctx(single_file=bundle)
    writer = DockerArchiveWriter()
    writer.write(good, ctx)
    with pytest.raises(WriteError):
        writer.write(wrong, ctx)
    again = fx.job("again", blobs[:2], diff_ids[:2])  # a different config, the same layers
    assert writer.write(again, ctx) < 10_000  # the layers are not written twice
    writer.finish([], ctx)
    names = members(bundle)
    assert diff_ids[2][7:] + ".tar" not in names and diff_ids[0][7:] + ".tar" in names
    items = json.loads(read_member(bundle, "manifest.json"))
    assert [i["RepoTags"] for i in items] == [["hand/made:good"], ["hand/made:again"]]
    assert items[0]["Layers"] == items[1]["Layers"]
    for tag in ("good", "again"):
        cfg = json.loads(skopeo("inspect", "--config", f"docker-archive:{bundle}:hand/made:{tag}").stdout)
        assert cfg["config"]["Labels"]["tag"] == tag and cfg["rootfs"]["diff_ids"] == diff_ids[:2]


def test_what_cannot_be_held_is_skipped_or_failed(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    job = fx.job("t", blobs, diff_ids)
    ctx = fx.ctx()
    for kind, match in ((ImageKind.SCHEMA1, "schema1"), (ImageKind.INDEX, "--platform"),
                        (ImageKind.ARTIFACT, "not a container image")):
        job.root.kind = kind
        with pytest.raises(NotSelected, match=match):
            DockerArchiveWriter().write(job, ctx)
    job.root.kind = ImageKind.IMAGE
    del fx.inv.blobs[sha(blobs[1])]
    with pytest.raises(WriteError, match=f"layer 1 {sha(blobs[1])} is not in the archive"):
        DockerArchiveWriter().write(job, ctx)
    fx.blob(blobs[1])
    job = fx.job("t", blobs[:1], diff_ids[:1], ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"])
    with pytest.raises(WriteError, match="layer 0 .* is encrypted"):
        DockerArchiveWriter().write(job, ctx)
    job = fx.job("t", blobs, diff_ids[:2])
    with pytest.raises(WriteError, match="2 diff_ids but the manifest has 3 layers"):
        DockerArchiveWriter().write(job, ctx)
    assert not (ctx.out / "hand").exists()


def test_a_present_foreign_layer_is_written_and_recorded(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    job = fx.job("win", blobs[:1], diff_ids[:1], [DOCKER_FOREIGN_LAYER])
    ctx = fx.ctx()
    DockerArchiveWriter().write(job, ctx)
    [item] = json.loads(read_member(ctx.out / "hand/made/_tags/win.tar", "manifest.json"))
    assert item["LayerSources"] == {diff_ids[0]: {"mediaType": DOCKER_FOREIGN_LAYER, "size": len(blobs[0]),
                                                  "digest": sha(blobs[0])}}


def test_indexes_default_to_linux_amd64_and_single_images_keep_theirs(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    arm = fx.job("arm", blobs[:1], diff_ids[:1]).root
    arm.platform = Platform("linux", "arm64", "v8")
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.size,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}).encode()
    index = ManifestNode(sha(raw), OCI_INDEX, raw, parse_manifest(raw), kind=ImageKind.INDEX, children=[arm])
    amd64 = [Platform("linux", "amd64")]
    with pytest.raises(NotSelected, match=r"linux/amd64 \(index has: linux/arm64/v8\).*--platform"):
        plan_job(Image("r", "t", index.digest, index), [], amd64)
    assert plan_job(Image("r", "t", index.digest, index), [Platform("linux", "arm64")], amd64).root is arm
    assert plan_job(Image("r", "t", index.digest, index), []).root is index  # other formats: the whole index
    windows = fx.job("w", blobs[:1], diff_ids[:1]).root
    windows.platform = Platform("windows", "amd64")
    assert plan_job(Image("r", "w", windows.digest, windows), [], amd64).root is windows


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


@pytest.mark.parametrize("single", [False, True])
def test_a_prepared_run_decodes_in_one_thread_ahead_and_gets_past_a_failed_image(tmp_path, layers, monkeypatch,
                                                                                single):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    ctx = fx.ctx(single_file=tmp_path / "all.tar") if single else fx.ctx()
    monkeypatch.setattr(dockerarchive, "AHEAD_DEPTH", 1)  # the thread waits inside the layers it runs ahead to
    pipes = []

    class Counted(dockerarchive.Decoding):
        def __init__(self, sources, depth=None):
            pipes.append([s.path.name for s in sources])
            super().__init__(sources, depth)

    monkeypatch.setattr(dockerarchive, "Decoding", Counted)
    jobs = [fx.job("a", blobs[:1], diff_ids[:1]),
            # fails at its layer 0, so the run's thread holds its layer 1 when the next image asks for another
            fx.job("bad", blobs[1:], [sha(b"other"), diff_ids[2]]),
            fx.job("c", blobs[1:], diff_ids[1:]),  # layer 1 was skipped in the run's thread: decoded alone
            fx.job("d", blobs, diff_ids)]  # nothing to decode
    threads = threading.active_count()
    calls = count_decodes(monkeypatch)
    planned = Counter()
    real_plan = dockerarchive.plan_image
    monkeypatch.setattr(dockerarchive, "plan_image",
                        lambda job, ctx: planned.update([job.image.tag]) or real_plan(job, ctx))
    writer = DockerArchiveWriter()
    writer.prepare(jobs, ctx)
    results = []
    for job in jobs:
        try:
            writer.write(job, ctx)
            results.append(job.image.tag)
        except WriteError as e:
            assert job.image.tag == "bad" and "diff_ids[0]" in str(e)
    writer.finish([], ctx)
    assert results == ["a", "c", "d"]
    assert planned == {"a": 1, "bad": 1, "c": 1, "d": 1}  # prepare() planned each image; write() used that
    names = [sha(b)[7:] for b in blobs]
    assert pipes == [[names[0], names[1], names[2], names[1]], [names[2]]]  # the run's, then c's layer 1 alone
    assert calls == {names[0]: 1, names[1]: 2, names[2]: 2}
    assert threading.active_count() == threads
    if single:
        with tarfile.open(tmp_path / "all.tar") as t:
            items = json.loads(t.extractfile("manifest.json").read())
            assert [i["RepoTags"] for i in items] == [["hand/made:a"], ["hand/made:c"], ["hand/made:d"]]
            assert sorted(sha(t.extractfile(n).read()) for n in items[2]["Layers"]) == sorted(diff_ids)
    else:
        tags = ctx.out / "hand/made/_tags"
        assert layer_hashes(tags / "c.tar") == diff_ids[1:] and layer_hashes(tags / "d.tar") == diff_ids
        assert sorted(p.name for p in tags.iterdir()) == ["a.tar", "c.tar", "d.tar"]

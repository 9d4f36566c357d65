"""The docker-archive sink on hand-made images: eStargz, zstd:chunked, padded gzip, layer reuse, rollback.

Each test gives the sink images as `run` would (plan.transform.emit of a selected job) and proves what it
wrote with skopeo, a live registry or tarfile.
"""

import gzip
import io
import json
import os
import struct
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from archivecheck import members, push, pushed_config, read_member, sha, skopeo
from regcarve.blobs import codecs, decode
from regcarve.blobs.store import BlobStore, StoreBlobs
from regcarve.model.catalog import Image, ImageKind, ManifestNode
from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.manifests import DOCKER_CONFIG, DOCKER_FOREIGN_LAYER, OCI_INDEX, OCI_MANIFEST, Platform, parse_manifest
from regcarve.plan.output import ImageFailed, ImageOut, ImageSkipped
from regcarve.plan.select import Job, plan_job
from regcarve.plan.transform import emit
from regcarve.run import refusal
from regcarve.sinks.base import Options, Result, Status
from regcarve.sinks.dockerarchive import DockerArchiveSink
from regcarve.sinks.dockerarchive import image as da_image
from regcarve.sinks.dockerarchive import layers as da_layers
from regcarve.sinks.fsout import OutFolder


def zstd_skippable(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5E, len(payload)) + payload


def layer_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Fixture:
    """A store and an inventory holding hand-made blobs; images of them, and sinks writing them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.store = BlobStore(tmp / "store")
        self.inv = Inventory()
        self.blobs = StoreBlobs(self.store.blobs, self.inv)

    def blob(self, data: bytes) -> str:
        d = sha(data)
        self.store.path(d).write_bytes(data)
        self.inv.blobs[d] = BlobRecord(d, len(data), True)
        if data[:1] == b"{":
            self.inv.json_blobs[d] = data
        return d

    def job(self, tag: str, blobs: list[bytes], diff_ids: list[str], media_types: list[str] = (),
            repository: str = "hand/made") -> Job:
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {"Labels": {"tag": tag}}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": self.blob(config), "size": len(config)},
            "layers": [{"mediaType": mt or "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.blob(b),
                        "size": len(b)} for b, mt in zip(blobs, list(media_types) + [""] * len(blobs))]}).encode()
        node = ManifestNode(self.blob(manifest), OCI_MANIFEST, manifest, parse_manifest(manifest))
        node.kind = ImageKind.IMAGE
        return Job(Image(repository, tag, node.digest, node), node, [node])

    def image(self, tag: str, blobs: list[bytes], diff_ids: list[str], media_types: list[str] = (),
              repository: str = "hand/made") -> ImageOut:
        return emit(self.job(tag, blobs, diff_ids, media_types, repository), self.blobs)

    def sink(self, **options) -> DockerArchiveSink:
        out = self.tmp / "out"
        out.mkdir(exist_ok=True)
        return DockerArchiveSink(OutFolder(out), self.blobs, Options(**options))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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
    sink = fx.sink(keep_compressed=keep)
    sink.write(fx.image("t", blobs, diff_ids))
    path = sink.out.root / "hand/made/_tags/t.tar"
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
    images = {"a": fx.image("a", blobs, diff_ids), "b": fx.image("b", blobs[:2], diff_ids[:2]),
              "c": fx.image("c", [blobs[1], blobs[0]], [diff_ids[1], diff_ids[0]])}  # the same layers, other places
    sink = fx.sink(keep_compressed=keep)
    calls = count_decodes(monkeypatch)
    for image in images.values():
        sink.write(image)
    # the padded gzip layer is decoded a second time with --keep-compressed, to store it uncompressed
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 2 if keep else 1}
    for tag, image in images.items():
        path = sink.out.root / f"hand/made/_tags/{tag}.tar"
        [item] = json.loads(read_member(path, "manifest.json"))
        digests = [d.digest for d in image.manifest.parsed.layers]
        diffs = json.loads(fx.store.path(image.manifest.parsed.config.digest).read_bytes())["rootfs"]["diff_ids"]
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
    fds = open_fds()
    sink = fx.sink()
    tags = sink.out.root / "hand/made/_tags"
    calls = count_decodes(monkeypatch)
    sink.write(fx.image("a", blobs[:2], diff_ids[:2]))
    # another file at its name, then none: the layers still come from the file that was written
    (tmp_path / "other").write_bytes(bytes(100_000))
    os.replace(tmp_path / "other", tags / "a.tar")
    sink.write(fx.image("b", blobs[:1], diff_ids[:1]))
    (tags / "a.tar").unlink()
    sink.write(fx.image("c", blobs[1:2], diff_ids[1:2]))
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1}
    assert layer_hashes(tags / "b.tar") == diff_ids[:1] and layer_hashes(tags / "c.tar") == diff_ids[1:2]
    # what a failed image decoded is not kept: the next image decodes that layer again
    with pytest.raises(ImageFailed, match=r"diff_ids\[1\]"):
        sink.write(fx.image("bad", [blobs[0], blobs[2]], [diff_ids[0], sha(b"other")]))
    sink.write(fx.image("d", blobs[2:], diff_ids[2:]))
    assert calls[sha(blobs[2])[7:]] == 2
    # a file changed since it was written is not copied from (here its size stays, its mtime moves)
    d = tags / "d.tar"
    st = d.stat()
    with open(d, "r+b") as f:
        f.write(bytes(st.st_size))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    sink.write(fx.image("e", blobs, diff_ids))
    assert calls == {sha(blobs[0])[7:]: 1, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 3}
    assert layer_hashes(tags / "e.tar") == diff_ids
    assert sorted(p.name for p in tags.iterdir()) == ["b.tar", "c.tar", "d.tar", "e.tar"]
    assert open_fds() > fds  # the finished archives are held open, to copy from
    sink.finish([])
    assert open_fds() == fds


def test_only_so_many_archives_stay_open(tmp_path, layers, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    monkeypatch.setattr(da_layers, "HELD_MAX", 2)
    fds = open_fds()
    sink = fx.sink()
    calls = count_decodes(monkeypatch)
    for i in range(3):
        sink.write(fx.image(str(i), blobs[i:i + 1], diff_ids[i:i + 1]))
    sink.write(fx.image("again0", blobs[:1], diff_ids[:1]))  # its archive was closed: decoded again
    sink.write(fx.image("again2", blobs[2:], diff_ids[2:]))
    assert calls == {sha(blobs[0])[7:]: 2, sha(blobs[1])[7:]: 1, sha(blobs[2])[7:]: 1}
    assert open_fds() == fds + 2
    assert layer_hashes(sink.out.root / "hand/made/_tags/again0.tar") == diff_ids[:1]
    assert layer_hashes(sink.out.root / "hand/made/_tags/again2.tar") == diff_ids[2:]
    sink.finish([])
    assert open_fds() == fds


def test_a_layer_that_does_not_decode_fails_its_image_and_stops_the_thread(tmp_path, layers, monkeypatch):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    monkeypatch.setattr(decode, "QUEUE_DEPTH", 1)  # the thread is kept waiting inside the next layer
    big = layer_tar("big", os.urandom(3 << 20))
    cut = gzip.compress(big)[:-5000]
    threads = threading.active_count()
    with pytest.raises(ImageFailed, match=rf"layer 1 {sha(cut)}: gzip member 1 is truncated"):
        fx.sink().write(fx.image("t", [blobs[0], cut, gzip.compress(big)], [diff_ids[0], sha(big), sha(big)]))
    with pytest.raises(ImageFailed, match=rf"layer 0 {sha(blobs[1])} \(zstd\).*hashes to {diff_ids[1]}"):
        fx.sink().write(fx.image("t", [blobs[1], gzip.compress(big)], [sha(b"x"), sha(big)]))
    assert threading.active_count() == threads

    def broken(kind, raw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(codecs, "decoder", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):  # not taken for a reason to fail the image
        fx.sink().write(fx.image("t", blobs, diff_ids))
    assert threading.active_count() == threads
    out = tmp_path / "out"
    assert not (out / "hand").exists() and not list(out.rglob("*.tmp"))


def test_hand_made_mismatch_and_single_file_rollback(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    good = fx.image("good", blobs[:2], diff_ids[:2])
    wrong = fx.image("wrong", blobs, diff_ids[:2] + [sha(b"other")])
    sink = fx.sink()
    with pytest.raises(ImageFailed, match=rf"layer 2 {sha(blobs[2])} \(gzip\).*hashes to {diff_ids[2]}"):
        sink.write(wrong)
    assert not (sink.out.root / "hand").exists()
    assert not list(sink.out.root.rglob("*.tmp"))
    # in one FILE, the failed image is cut off again while the others stay
    bundle = tmp_path / "bundle.tar"
    sink = fx.sink(single_file=bundle)
    sink.write(good)
    with pytest.raises(ImageFailed):
        sink.write(wrong)
    sink.write(fx.image("again", blobs[:2], diff_ids[:2]))  # a different config, the same layers
    sink.finish([])
    names = members(bundle)  # no entry twice: the layers were not written again
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
    caps = DockerArchiveSink.capabilities
    for kind, match in ((ImageKind.SCHEMA1, "schema1"), (ImageKind.INDEX, "--platform"),
                        (ImageKind.ARTIFACT, "not a container image")):
        job.root.kind = kind
        assert match in refusal(job, caps)
    job.root.kind = ImageKind.IMAGE
    assert refusal(job, caps) is None
    image = emit(job, fx.blobs)
    del fx.inv.blobs[sha(blobs[1])]
    with pytest.raises(ImageFailed, match=f"layer 1 {sha(blobs[1])} is not in the archive"):
        fx.sink().write(image)
    fx.blob(blobs[1])
    image = fx.image("t", blobs[:1], diff_ids[:1], ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"])
    with pytest.raises(ImageFailed, match="layer 0 .* is encrypted"):
        fx.sink().write(image)
    image = fx.image("t", blobs, diff_ids[:2])
    with pytest.raises(ImageFailed, match="2 diff_ids but the manifest has 3 layers"):
        fx.sink().write(image)
    assert not (tmp_path / "out/hand").exists()


def test_a_present_foreign_layer_is_written_and_recorded(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    sink = fx.sink()
    sink.write(fx.image("win", blobs[:1], diff_ids[:1], [DOCKER_FOREIGN_LAYER]))
    [item] = json.loads(read_member(sink.out.root / "hand/made/_tags/win.tar", "manifest.json"))
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
    amd64 = list(DockerArchiveSink.capabilities.index_platforms)
    assert amd64 == [Platform("linux", "amd64")]
    with pytest.raises(ImageSkipped, match=r"linux/amd64 \(index has: linux/arm64/v8\).*--platform"):
        plan_job(Image("r", "t", index.digest, index), [], amd64)
    assert plan_job(Image("r", "t", index.digest, index), [Platform("linux", "arm64")], amd64).root is arm
    assert plan_job(Image("r", "t", index.digest, index), []).root is index  # other formats: the whole index
    windows = fx.job("w", blobs[:1], diff_ids[:1]).root
    windows.platform = Platform("windows", "amd64")
    assert plan_job(Image("r", "w", windows.digest, windows), [], amd64).root is windows


@pytest.mark.parametrize("single", [False, True])
def test_a_prepared_run_decodes_in_one_thread_ahead_and_gets_past_a_failed_image(tmp_path, layers, monkeypatch,
                                                                                single):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    sink = fx.sink(single_file=tmp_path / "all.tar") if single else fx.sink()
    monkeypatch.setattr(decode, "AHEAD_DEPTH", 1)  # the thread waits inside the layers it runs ahead to
    pipes = []

    class Counted(decode.Decoding):
        def __init__(self, sources, depth=None):
            pipes.append([s.layer.digest[7:] for s in sources])
            super().__init__(sources, depth)

    monkeypatch.setattr(decode, "Decoding", Counted)
    images = [fx.image("a", blobs[:1], diff_ids[:1]),
              # fails at its layer 0, so the run's thread holds its layer 1 when the next image asks for another
              fx.image("bad", blobs[1:], [sha(b"other"), diff_ids[2]]),
              fx.image("c", blobs[1:], diff_ids[1:]),  # layer 1 was skipped in the run's thread: decoded alone
              fx.image("d", blobs, diff_ids)]  # nothing to decode
    threads = threading.active_count()
    calls = count_decodes(monkeypatch)
    planned = Counter()
    real_plan = da_image.plan_image
    monkeypatch.setattr(da_image, "plan_image",
                        lambda image, blobs, prefix: planned.update([image.tag]) or real_plan(image, blobs, prefix))
    sink.prepare(images)
    results = []
    for image in images:
        try:
            sink.write(image)
            results.append(image.tag)
        except ImageFailed as e:
            assert image.tag == "bad" and "diff_ids[0]" in str(e)
    sink.finish([])
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
        tags = sink.out.root / "hand/made/_tags"
        assert layer_hashes(tags / "c.tar") == diff_ids[1:] and layer_hashes(tags / "d.tar") == diff_ids
        assert sorted(p.name for p in tags.iterdir()) == ["a.tar", "c.tar", "d.tar"]


def test_names_loaders_would_misread_or_refuse(tmp_path, layers):
    """A first component with a '.' or `localhost` reads as a registry host: such names get docker.io/ so the
    path is kept; a name whose normalised form (docker.io/library/…) is over 255 characters is refused."""
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    sink = fx.sink()
    longest = "a" * (255 - len("docker.io/library/"))
    for repository, written, full in (("team.example/app", "docker.io/team.example/app", "docker.io/team.example/app"),
                                      ("localhost/app", "docker.io/localhost/app", "docker.io/localhost/app"),
                                      ("localhostx/app", "localhostx/app", "docker.io/localhostx/app"),
                                      (longest, longest, f"docker.io/library/{longest}")):
        sink.write(fx.image("t", blobs[:1], diff_ids[:1], repository=repository))
        path = sink.out.root / f"{repository}/_tags/t.tar"
        assert json.loads(read_member(path, "manifest.json"))[0]["RepoTags"] == [f"{written}:t"]
        assert json.loads(skopeo("list-tags", f"docker-archive:{path}").stdout)["Tags"] == [f"{written}:t"]
        assert json.loads(skopeo("inspect", f"docker-archive:{path}:{written}:t").stdout)["Name"] == full
    for repository in (longest + "a", "t/" + "a" * (255 - len("docker.io/t/") + 1)):
        with pytest.raises(ImageFailed, match="longer than 255"):
            sink.write(fx.image("t", blobs[:1], diff_ids[:1], repository=repository))
    assert da_image.check_repo_prefix("localhost/p") == "localhost/p"
    with pytest.raises(ValueError, match="docker.io/localhostx/p"):
        da_image.check_repo_prefix("localhostx/p")
    with pytest.raises(ImageFailed, match="longer than 255"):
        fx.sink(repo_prefix="registry.example:5000/" + "p" * 200).write(
            fx.image("t", blobs[:1], diff_ids[:1], repository="x" * 40))


def test_single_file_push_line_names_what_the_archive_holds(tmp_path, layers):
    blobs, diff_ids = layers
    fx = Fixture(tmp_path)
    bundle = tmp_path / "bundle.tar"
    sink = fx.sink(single_file=bundle)
    sink.write(fx.image("t", blobs[:1], diff_ids[:1], repository="team.example/app"))
    sink.finish([])
    [line] = [ln for ln in sink.hint([Result("team.example/app:t", Status.WRITTEN)]) if "skopeo copy" in ln]
    source = line.split()[2]
    assert source == f"docker-archive:{bundle}:docker.io/team.example/app:t"
    assert json.loads(skopeo("inspect", source).stdout)["Name"] == "docker.io/team.example/app"

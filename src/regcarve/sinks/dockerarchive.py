"""docker-archive tarballs (`docker save` format): one per tag at OUT/<repository path>/_tags/<tag>.tar,
or every selected image in one FILE with --single-file (each layer once, as `docker save a b c`).

An archive holds what Docker ≤ 24 and containers/image write, so every loader takes it:
`<diffID hex>.tar` per layer (uncompressed), `<config hex>.json` (the stored bytes), the legacy
`<v1 id>/{VERSION,json,layer.tar}` entries (`layer.tar` a symlink to the layer file), and then
`manifest.json` (`Config`, `RepoTags`, `Layers`) and `repositories`, last.

Each layer is decompressed once a run, from the store, straight into the output: gzip (every
member of a multi-member stream, so pigz and eStargz too), zstd (every frame; skippable frames, as
in zstd:chunked, are skipped), bzip2 and xz, told apart by their magic bytes, not by media type;
anything else passes through as a plain tar. A thread decompresses while the calling one hashes and
writes the chunks (the two use two cores); the uncompressed bytes must hash to the config's
`rootfs.diff_ids[i]`, or the image fails, naming the layer. Since the output is a regular file, a
layer entry starts as a placeholder header, its data is streamed and padded, and the real header
(GNU base-256 size from 8 GiB on) is written back over the placeholder. A later archive of the run
that needs a layer again copies that entry's checked bytes from the archive that holds it, in the
kernel (copy_file_range), instead of decompressing it again. `--keep-compressed` copies gzip layers
as stored (`<diffID hex>.tar.gz`) while still decompressing them to check the diff_id.

Archives are written under a temporary name beside the final one and renamed only once complete.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import queue
import re
import shlex
import stat
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from regcarve.blobs import codecs as layers
from regcarve.model.catalog import ImageKind
from regcarve.blobs.codecs import CHUNK, LayerError, compression_of
from regcarve.model.manifests import IMAGE_CONFIGS, Descriptor, is_image_layer
from regcarve.plan.select import Job, NotSelected
from regcarve.sinks.fsout import (
    WRITTEN,
    Context,
    Result,
    WriteError,
    ensure_dir,
    output_error,
    remove_path,
    tagged_path,
)
from regcarve.sinks.tarout import BLOCK, TarOut

QUEUE_DEPTH = 16  # decoded chunks waiting to be hashed and written
AHEAD_DEPTH = 32  # the same for a whole run's decoding, which runs on while repeated layers are copied
HELD_MAX = 64  # finished archives kept open to copy their layers from
MANIFEST_LIMIT = 1 << 20  # containers/image refuses a larger manifest.json
EPOCH = "1970-01-01T00:00:00Z"
_LEGACY_TOP_KEYS = ("architecture", "config", "container", "container_config", "created", "docker_version", "os")

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HEX = r"[a-f0-9]{64}"
_OURS_MEMBER = re.compile(rf"{_HEX}\.(json|tar|tar\.gz)|{_HEX}/(VERSION|json|layer\.tar)?|manifest\.json|repositories")

SCHEMA1_REASON = ("schema1 manifests have no image config, so docker-archive cannot hold them; "
                  "use --format dir (it keeps the registry's digest)")
INDEX_REASON = "a docker-archive holds one platform per tag: choose one with --platform"

# --repo-prefix: HOST[:PORT][/PATH…], the reference grammar of distribution/reference
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PREFIX = re.compile(rf"(?P<host>{_HOST}(?::[0-9]+)?)(?:/{_COMPONENT})*")
NAME_MAX = 255


def check_repo_prefix(prefix: str) -> str:
    """The prefix without a trailing '/'; ValueError when Docker would not read it as HOST[/PATH]."""
    prefix = prefix.strip().rstrip("/")
    m = _PREFIX.fullmatch(prefix)
    if not m:
        raise ValueError(f"{prefix!r} is not HOST[:PORT][/PATH] (path components are lowercase [a-z0-9._-])")
    host = m["host"]
    if not ("." in host or ":" in host or host.startswith("localhost")):
        raise ValueError(f"{prefix!r} does not start with a registry host (one with a '.' or a ':port', or "
                         f"localhost); Docker would read it as docker.io/{prefix}")
    return prefix


def repo_tag(job: Job, prefix: str) -> tuple[str, str]:
    """(repository name, tag) as RepoTags and `repositories` carry them."""
    name = f"{prefix.rstrip('/')}/{job.image.repository}" if prefix else job.image.repository
    if len(name) > NAME_MAX:
        raise WriteError(f"{name}: a repository name is at most {NAME_MAX} characters")
    return name, job.image.tag or ""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


LayerKey = tuple[str, str]  # (diff_id, the stored blob's digest with --keep-compressed, else "")


class Finished:
    """The layers that archives finished earlier in the run hold, for later archives to copy.

    Each such archive stays open for reading (the HELD_MAX used last), so what is copied is the
    very file this run wrote and checked, wherever its name has gone since; one whose size or mtime
    has changed since is let go."""

    def __init__(self) -> None:
        self.where: dict[LayerKey, tuple[int, int, int, str]] = {}  # → (fd, data offset, size, entry name)
        self.held: OrderedDict[int, list[LayerKey]] = OrderedDict()  # fd → its layers, least recently used first
        self.stamps: dict[int, tuple[int, int]] = {}  # fd → (size, mtime) as finished

    def add(self, fd: int, layers: dict[LayerKey, tuple[int, int, str]]) -> None:
        """Take `fd`, open on a finished archive, and the layers it decoded."""
        keys = [k for k in layers if k not in self.where]
        try:
            stamp = _stamp(fd)
        except OSError:
            keys = []
        if not keys:
            os.close(fd)
            return
        for k in keys:
            self.where[k] = (fd, *layers[k])
        self.held[fd] = keys
        self.stamps[fd] = stamp
        while len(self.held) > HELD_MAX:
            self._drop(next(iter(self.held)))

    def get(self, key: LayerKey) -> tuple[int, int, int, str] | None:
        found = self.where.get(key)
        if found is not None:
            fd = found[0]
            try:
                same = _stamp(fd) == self.stamps[fd]
            except OSError:
                same = False
            if not same:
                self._drop(fd)
                return None
            self.held.move_to_end(fd)
        return found

    def forget(self, key: LayerKey) -> None:
        fd = self.where.pop(key)[0]
        self.held[fd].remove(key)
        if not self.held[fd]:
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        for k in self.held.pop(fd):
            del self.where[k]
        del self.stamps[fd]
        os.close(fd)

    def close(self) -> None:
        while self.held:
            self._drop(next(iter(self.held)))


def _stamp(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


@dataclass
class Archive:
    """What one output tar holds so far: layers by diff_id, configs, legacy ids, manifest items."""

    tar: TarOut
    layers: dict[str, str] = field(default_factory=dict)  # diff_id → entry name
    configs: set[str] = field(default_factory=set)
    legacy: set[str] = field(default_factory=set)
    items: list[dict] = field(default_factory=list)
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)
    decoded: dict[LayerKey, tuple[int, int, str]] = field(default_factory=dict)  # → (data offset, size, name)

    def snapshot(self) -> tuple:
        return (self.tar.pos, dict(self.layers), set(self.configs), set(self.legacy),
                [dict(i, RepoTags=list(i["RepoTags"])) for i in self.items],
                {k: dict(v) for k, v in self.repositories.items()}, dict(self.decoded))

    def restore(self, snap: tuple) -> None:
        pos, self.layers, self.configs, self.legacy, self.items, self.repositories, self.decoded = snap
        self.tar.rollback(pos)

    def finish(self) -> None:
        """manifest.json and repositories, last, then the end-of-archive blocks."""
        self.tar.add("manifest.json", self.manifest_json())
        self.tar.add("repositories", json.dumps(self.repositories, separators=(",", ":")).encode())
        self.tar.close()

    def manifest_json(self) -> bytes:
        return json.dumps(self.items, separators=(",", ":")).encode()


def read_config(job: Job, ctx: Context) -> tuple[bytes, list[str]]:
    """The config's stored bytes and its rootfs.diff_ids, checked against the manifest's layers."""
    config = job.root.parsed.config
    assert config is not None
    raw = ctx.catalog.inventory.json_blobs.get(config.digest)
    if raw is None:
        try:
            raw = ctx.store.path(config.digest).read_bytes()
        except OSError:
            raise WriteError(f"config {config.digest} is not in the store") from None
    try:
        doc = json.loads(raw)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise WriteError(f"config {config.digest} has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise WriteError(f"config {config.digest}: rootfs.diff_ids are not all sha256 digests")
    layers = job.root.parsed.layers
    if len(diff_ids) != len(layers):
        raise WriteError(f"config {config.digest} has {len(diff_ids)} diff_ids but the manifest has "
                         f"{len(layers)} layers")
    return raw, diff_ids


def writable(job: Job) -> None:
    """Raise NotSelected when docker-archive cannot hold this image at all."""
    node = job.root
    if node.kind is ImageKind.SCHEMA1:
        raise NotSelected(SCHEMA1_REASON)
    if node.kind is ImageKind.INDEX:
        raise NotSelected(INDEX_REASON)
    if node.kind is ImageKind.ARTIFACT:
        raise NotSelected(f"not a container image ({_artifact_what(node.parsed)}); docker-archive holds images "
                          "only, use --format dir or oci")
    if job.image.tag is None:
        raise WriteError("untagged revisions have no name for RepoTags")


def _artifact_what(parsed) -> str:
    config = parsed.config
    if config is None:
        return "no config"
    if config.media_type not in IMAGE_CONFIGS:
        return f"config {config.media_type}"
    if parsed.artifact_type:
        return f"artifactType {parsed.artifact_type}"
    other = next((d.media_type for d in parsed.layers if not is_image_layer(d.media_type)), "")
    return f"layer {other}" if other else "not an image"


@dataclass
class ImagePlan:
    """What an image needs, all checked before anything is written."""

    name: str  # repository as RepoTags carry it
    tag: str
    config: Descriptor
    config_raw: bytes
    diff_ids: list[str]
    layers: list[Descriptor]


def plan_image(job: Job, ctx: Context) -> ImagePlan:
    writable(job)
    name, tag = repo_tag(job, ctx.options.repo_prefix)
    config_raw, diff_ids = read_config(job, ctx)
    layers = job.root.parsed.layers
    for i, layer in enumerate(layers):
        if layer.media_type.endswith("+encrypted"):
            raise WriteError(f"layer {i} {layer.digest} is encrypted ({layer.media_type}); regcarve cannot "
                             "decrypt it, use --format dir or oci to carry it as it is")
        if not ctx.catalog.inventory.has_blob(layer.digest):
            where = f" (it lives at {layer.urls[0]})" if layer.urls else ""
            raise WriteError(f"{'foreign ' if layer.is_foreign else ''}layer {i} {layer.digest} is not in the "
                             f"archive{where}; a docker-archive needs every layer's bytes")
    assert job.root.parsed.config is not None
    return ImagePlan(name, tag, job.root.parsed.config, config_raw, diff_ids, layers)


@dataclass(frozen=True)
class _Source:
    """A layer to decode from its stored blob."""

    index: int
    layer: Descriptor
    diff_id: str
    path: Path
    kind: str  # compression_of its first bytes
    key: LayerKey


class _Done:
    """The end of one layer's chunks."""

    def __init__(self, padded: bool):
        self.padded = padded


class _Failed:
    """Decoding a layer stopped: the error."""

    def __init__(self, error: BaseException):
        self.error = error


class Decoding:
    """Decodes layers, one after the other, in a thread of its own into a bounded queue of chunks.

    The caller hashes and writes each chunk while the next one, or the next layer, is decompressed:
    zlib, zstd, bz2 and lzma decoding, sha256 of large buffers and file writes all let go of the GIL,
    so the two run on two cores. At most QUEUE_DEPTH chunks wait, so memory stays bounded."""

    def __init__(self, sources: list[_Source], depth: int | None = None):
        self.q: queue.Queue = queue.Queue(depth or QUEUE_DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(sources,), name="regcarve-decode", daemon=True)
        self.thread.start()

    def _run(self, sources: list[_Source]) -> None:
        for src in sources:
            item: object
            try:
                with open(src.path, "rb", buffering=0) as raw:
                    dec = layers.decoder(src.kind, raw)
                    while chunk := dec.read(CHUNK):
                        if not self._put(chunk):
                            return
                item = _Done(getattr(dec, "padded", False))
            except BaseException as e:  # the caller raises it, in its own thread
                item = _Failed(e)
            if not self._put(item):
                return

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def get(self) -> object:
        """The next chunk (bytes), or the _Done or _Failed that ends a layer."""
        while True:
            try:
                return self.q.get(timeout=1)
            except queue.Empty:
                if not self.thread.is_alive() and self.q.empty():
                    return _Failed(RuntimeError("the decoding thread ended early"))

    def close(self) -> None:
        """Stop the thread, wherever it is, and wait for it."""
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.q.get(timeout=0.05)  # unblocks a put
            except queue.Empty:
                pass
        self.thread.join()


class Ahead:
    """Layers decoded by one Decoding thread in the order the archives will ask for them.

    Made for a whole run (DockerArchiveWriter.prepare), the thread goes on into the next image's
    layers while this image's repeated layers are copied and its archive is finished. When an image
    fails part-way, the layers it did not take are skipped, and a later image needing one of them
    decodes it alone."""

    def __init__(self, sources: list[_Source], depth: int | None = None):
        self.sources = sources
        self.where = {s.key: i for i, s in enumerate(sources)}  # callers give each key once
        self.pos = 0  # the layer whose items come next
        self.inside = False  # some of its items were taken already
        self.pipe = Decoding(sources, depth) if sources else None

    def take(self, key: LayerKey) -> _Source | None:
        """Skip to the layer of `key` and return its source; None when it is not ahead any more."""
        i = self.where.get(key, -1)
        if i < self.pos + self.inside:
            return None
        while self.pos < i:
            self._skip()
        self.inside = True
        return self.sources[i]

    def get(self) -> object:
        """As Decoding.get."""
        assert self.pipe is not None
        item = self.pipe.get()
        if type(item) is not bytes:
            self.pos, self.inside = self.pos + 1, False
        return item

    def _skip(self) -> None:
        while type(self.get()) is bytes:
            pass

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()


class LayerWriter:
    """Puts an image's layers into an archive, each checked against its diff_id.

    A layer that an archive finished earlier in this run holds (`finished`) is copied from that file
    in the kernel, not decoded again; every other is decoded from the store by a Decoding thread,
    hashed and written here."""

    def __init__(self, ctx: Context, finished: Finished | None = None):
        self.ctx = ctx
        self.keep = ctx.options.keep_compressed
        self.finished = finished if finished is not None else Finished()

    def key(self, layer: Descriptor, diff_id: str) -> LayerKey:
        return diff_id, layer.digest if self.keep else ""

    def add_all(self, archive: Archive, layers: list[Descriptor], diff_ids: list[str],
                ahead: Ahead | None = None) -> None:
        """`ahead`: the run's decoding; without it, the layers to decode get a thread of their own."""
        todo = new_layers(archive.layers, layers, diff_ids)
        own = ahead is None
        if ahead is None:
            ahead = Ahead([self.source(i, layer, diff_id) for i, layer, diff_id in todo
                           if self.finished.get(self.key(layer, diff_id)) is None])
        try:
            for i, layer, diff_id in todo:
                if self._copied(archive, layer, diff_id):
                    continue
                src = ahead.take(self.key(layer, diff_id))
                if src is not None and src.layer.digest == layer.digest:
                    self._decoded(archive, ahead, dataclasses.replace(src, index=i), self.keep)
                else:
                    self._decode_alone(archive, self.source(i, layer, diff_id), self.keep)
        finally:
            if own:
                ahead.close()

    def source(self, index: int, layer: Descriptor, diff_id: str) -> _Source:
        path = self.ctx.store.path(layer.digest)
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise WriteError(f"layer {index} {layer.digest}: cannot read the stored blob ({e.strerror})") from None
        return _Source(index, layer, diff_id, path, compression_of(head), self.key(layer, diff_id))

    def _decode_alone(self, archive: Archive, src: _Source, keep: bool) -> None:
        pipe = Decoding([src])
        try:
            self._decoded(archive, pipe, src, keep)
        finally:
            pipe.close()

    def _decoded(self, archive: Archive, pipe: Decoding | Ahead, src: _Source, keep: bool) -> None:
        """The layer's next chunks from `pipe`, hashed and (unless kept as stored) written."""
        tar, layer, index, diff_id = archive.tar, src.layer, src.index, src.diff_id
        keep = keep and src.kind == "gzip"
        start = tar.begin()
        if keep:  # the stored bytes go in as they are; what `pipe` decodes is only hashed
            try:
                fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    tar.copy(fd, 0, os.fstat(fd).st_size)
                finally:
                    os.close(fd)
            except OSError as e:
                raise WriteError(f"layer {index} {layer.digest}: cannot read the stored blob ({e.strerror})") from None
        h = hashlib.sha256()
        update, write = h.update, tar.write
        item = pipe.get()
        while type(item) is bytes:
            update(item)
            if not keep:
                write(item)
            item = pipe.get()
        if isinstance(item, _Failed):
            e = item.error
            if isinstance(e, OSError):
                raise WriteError(f"layer {index} {layer.digest}: cannot read the stored blob ({e.strerror})")
            if isinstance(e, LayerError):
                raise WriteError(f"layer {index} {layer.digest}: {e}")
            raise e  # a bug, or no memory: as if it had happened here
        assert isinstance(item, _Done)
        actual = "sha256:" + h.hexdigest()
        if actual != diff_id:
            raise WriteError(f"layer {index} {layer.digest} ({src.kind}): its uncompressed content hashes to "
                             f"{actual}, but the config's rootfs.diff_ids[{index}] is {diff_id}")
        if keep and item.padded:  # gzip padding some readers reject: store this one decompressed
            tar.rollback(start)
            self._decode_alone(archive, src, False)
            return
        name = diff_id.removeprefix("sha256:") + (".tar.gz" if keep else ".tar")
        size = tar.end(start, name)
        archive.layers[diff_id] = name
        archive.decoded[self.key(layer, diff_id)] = (start + BLOCK, size, name)

    def _copied(self, archive: Archive, layer: Descriptor, diff_id: str) -> bool:
        """Copy the layer from the finished archive that holds it; False when none does or it cannot be read."""
        key = self.key(layer, diff_id)
        found = self.finished.get(key)
        if found is None:
            return False
        fd, offset, size, name = found
        tar = archive.tar
        start = tar.begin()
        try:
            tar.copy(fd, offset, size)
        except OSError:  # the source's (the output's raise OutputError): decode the layer instead
            self.finished.forget(key)
            tar.rollback(start)
            return False
        tar.end(start, name)
        archive.layers[diff_id] = name
        return True


def new_layers(held: Iterable[str], layers: list[Descriptor], diff_ids: list[str]) -> list[tuple[int, Descriptor, str]]:
    """(index, layer, diff_id) of the layers an archive holding the diff_ids `held` does not hold yet:
    it holds each once, however often images list it."""
    todo, seen = [], set(held)
    for i, (layer, diff_id) in enumerate(zip(layers, diff_ids)):
        if diff_id not in seen:
            seen.add(diff_id)
            todo.append((i, layer, diff_id))
    return todo


def add_image(archive: Archive, plan: ImagePlan, ctx: Context, finished: Finished | None = None,
              ahead: Ahead | None = None) -> int:
    """Everything of one image into the archive (what it already holds is shared). Bytes written.

    `finished`: layers of archives finished earlier in the run, copied from there instead of decoded;
    `ahead`: the run's decoding of the layers, in order."""
    name, tag, config, config_raw = plan.name, plan.tag, plan.config, plan.config_raw
    diff_ids, layers = plan.diff_ids, plan.layers
    start = archive.tar.pos
    LayerWriter(ctx, finished).add_all(archive, layers, diff_ids, ahead)
    config_name = config.digest.removeprefix("sha256:") + ".json"
    if config_name not in archive.configs:
        archive.tar.add(config_name, config_raw)
        archive.configs.add(config_name)
    top = _legacy(archive, config_raw, config.digest, diff_ids)
    layer_names = [archive.layers[d] for d in diff_ids]
    ref = f"{name}:{tag}"
    for item in archive.items:
        if item["Config"] == config_name and item["Layers"] == layer_names:
            if ref not in item["RepoTags"]:
                item["RepoTags"].append(ref)
            break
    else:
        item = {"Config": config_name, "RepoTags": [ref], "Layers": layer_names}
        sources = {d: _source(layer) for layer, d in zip(layers, diff_ids) if layer.is_foreign}
        if sources:
            item["LayerSources"] = sources
        archive.items.append(item)
    if top:
        archive.repositories.setdefault(name, {})[tag] = top
    return archive.tar.pos - start


def _source(layer: Descriptor) -> dict:
    out: dict = {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
    if layer.urls:
        out["urls"] = list(layer.urls)
    return out


def _legacy(archive: Archive, config_raw: bytes, config_digest: str, diff_ids: list[str]) -> str:
    """`<v1 id>/{VERSION,json,layer.tar}` per layer, as Docker ≤ 24 loaders without manifest.json read them.

    Lower layers' ids follow the chain of diff_ids only (images sharing them share the entries);
    the top layer's id also covers the config, so no two images' tops collide. Returns the top id.
    """
    try:
        config = json.loads(config_raw)
    except ValueError:
        config = {}
    parent, chain = "", ""
    for i, diff_id in enumerate(diff_ids):
        chain = diff_id if not chain else "sha256:" + _sha(f"{chain} {diff_id}")
        top = i == len(diff_ids) - 1
        v1 = _sha(f"{chain} {config_digest}") if top else chain.removeprefix("sha256:")
        if v1 not in archive.legacy:
            doc: dict = {"id": v1}
            if parent:
                doc["parent"] = parent
            if top:
                doc.update({k: config[k] for k in _LEGACY_TOP_KEYS if k in config})
            doc.setdefault("created", EPOCH)
            archive.tar.add(f"{v1}/VERSION", b"1.0")
            archive.tar.add(f"{v1}/json", json.dumps(doc, separators=(",", ":")).encode())
            archive.tar.symlink(f"{v1}/layer.tar", f"../{archive.layers[diff_id]}")
            archive.legacy.add(v1)
        parent = v1
    return parent


# --- files -----------------------------------------------------------------------------------------
def is_ours(path: Path, limit: int = 100_000) -> bool:
    """A regular file that is a tar of nothing but entries regcarve writes into a docker-archive."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(path, "rb") as f:
            seen = 0
            while seen < limit:
                buf = f.read(BLOCK)
                if len(buf) < BLOCK:
                    return False
                if buf == bytes(BLOCK):
                    return seen > 0
                info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
                if not _OURS_MEMBER.fullmatch(info.name):
                    return False
                f.seek((info.size + BLOCK - 1) // BLOCK * BLOCK, os.SEEK_CUR)
                seen += 1
    except (OSError, tarfile.TarError):
        return False
    return False


def _missing_folders(out: Path, rel: str) -> list[Path]:
    """The folders of OUT/rel that do not exist yet, deepest first."""
    missing = []
    path = out / rel
    while path != out and not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def _temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _remove_stale_temps(final: Path) -> None:
    """Temporary files an interrupted run left for this name."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.\d+\.tmp")
    try:
        names = os.listdir(final.parent)
    except OSError:
        return
    for n in names:
        if pattern.fullmatch(n) and n != _temp_name(final).name:
            remove_path(final.parent / n)


def _open_temp(final: Path) -> tuple[int, Path]:
    tmp = _temp_name(final)
    try:
        remove_path(tmp)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise output_error(e, tmp) from None
    return fd, tmp


def _replace(tmp: Path, final: Path) -> None:
    try:
        if os.path.isdir(final) and not os.path.islink(final):
            remove_path(final)  # only reached with --force
        os.replace(tmp, final)
    except OSError as e:
        raise output_error(e, final) from None


def _inside(path: Path, out: Path | None) -> str | None:
    """`path` relative to OUT, when it lies inside OUT."""
    if out is None:
        return None
    try:
        return str(path.relative_to(Path(os.path.abspath(out))))
    except ValueError:
        return None


def check_single_file(path: Path, force: bool, out: Path | None = None) -> str | None:
    """Why --single-file cannot be written at `path`, if it cannot. Folders are made only inside OUT."""
    path = Path(os.path.abspath(path))
    if not path.parent.is_dir() and _inside(path.parent, out) is None:
        return f"{path.parent} is not a directory (--single-file makes folders only inside OUT)"
    if os.path.isdir(path) and not os.path.islink(path):
        return f"{path} is a directory"
    if os.path.lexists(path) and not force:
        return f"{path} exists; use --force to replace it"
    return None


# --- the writer ------------------------------------------------------------------------------------
class DockerArchiveWriter:
    format = "docker-archive"
    keeps_store_links = False  # archives hold copies, so the store is deleted afterwards

    def __init__(self) -> None:
        self._single: Archive | None = None
        self._single_tmp: Path | None = None
        self._single_failed = ""
        self._finished = Finished()  # the layers of the archives written so far
        self._ahead: Ahead | None = None
        self._plans: dict[int, tuple[Job, ImagePlan]] = {}  # id(job) → what prepare() planned for it

    def relpath(self, job: Job) -> str:
        return tagged_path(job.image.repository, job.image.tag or "") + ".tar"

    def prepare(self, jobs: list[Job], ctx: Context) -> None:
        """Start decoding, in the order the images will need them, the layers the run will decode:
        each layer's first use (later archives copy it from the first one's)."""
        layer_writer, seen, sources = LayerWriter(ctx), set(), []
        for job in jobs:
            try:
                plan = plan_image(job, ctx)
            except (WriteError, NotSelected):
                continue  # write() plans it again, and says why
            self._plans[id(job)] = job, plan
            for i, layer, diff_id in new_layers((), plan.layers, plan.diff_ids):
                once = diff_id if ctx.options.single_file is not None else layer_writer.key(layer, diff_id)
                if once in seen:
                    continue
                seen.add(once)
                try:
                    sources.append(layer_writer.source(i, layer, diff_id))
                except WriteError:
                    pass  # write() says why
        self._ahead = Ahead(sources, AHEAD_DEPTH)

    def write(self, job: Job, ctx: Context) -> int:
        planned = self._plans.pop(id(job), None)
        plan = planned[1] if planned is not None and planned[0] is job else plan_image(job, ctx)
        if ctx.options.single_file is not None:
            return self._write_single(plan, ctx)
        return self._write_one(job, plan, ctx)

    def _write_one(self, job: Job, plan: ImagePlan, ctx: Context) -> int:
        rel = self.relpath(job)
        created = _missing_folders(ctx.out, os.path.dirname(rel))
        folder = ensure_dir(ctx.out, os.path.dirname(rel))
        final = folder / os.path.basename(rel)
        try:
            if os.path.lexists(final) and not ctx.options.force and not is_ours(final):
                raise WriteError(f"{final} exists and was not written by regcarve; use --force to replace it")
            _remove_stale_temps(final)
            fd, tmp = _open_temp(final)
            tar = TarOut(fd, tmp)
            held = -1  # for later archives to copy this one's layers from
            try:
                archive = Archive(tar)
                add_image(archive, plan, ctx, self._finished, self._ahead)
                if archive.decoded:
                    try:
                        held = os.dup(fd)
                    except OSError:  # out of descriptors: later archives decode these layers again
                        pass
                archive.finish()
                size = archive.tar.pos
                _replace(tmp, final)
            except BaseException:
                if held >= 0:
                    os.close(held)
                tar.discard()
                tmp.unlink(missing_ok=True)
                raise
            if held >= 0:
                self._finished.add(held, archive.decoded)
        except BaseException:
            for d in created:  # deepest first; only folders this image made, and only while empty
                try:
                    os.rmdir(d)
                except OSError:
                    break
            raise
        return size

    # --- --single-file ------------------------------------------------------------------------
    def _single_path(self, ctx: Context) -> Path:
        assert ctx.options.single_file is not None
        return Path(os.path.abspath(ctx.options.single_file))

    def _write_single(self, plan: ImagePlan, ctx: Context) -> int:
        if self._single_failed:
            raise WriteError(self._single_failed)
        if self._single is None:
            final = self._single_path(ctx)
            why = check_single_file(final, ctx.options.force, ctx.out)
            if why:
                self._single_failed = why
                raise WriteError(why)
            rel = _inside(final.parent, ctx.out)
            if rel and rel != ".":
                ensure_dir(ctx.out, rel)
            fd, tmp = _open_temp(final)
            self._single, self._single_tmp = Archive(TarOut(fd, tmp)), tmp
            atexit.register(self._discard_single)  # the run may end between images (interrupt, broken pipe)
        archive = self._single
        snap = archive.snapshot()
        try:
            return add_image(archive, plan, ctx, ahead=self._ahead)
        except WriteError:
            archive.restore(snap)
            raise
        except BaseException:
            self._discard_single()
            raise

    def _discard_single(self) -> None:
        if self._single is not None:
            self._single.tar.discard()
            assert self._single_tmp is not None
            self._single_tmp.unlink(missing_ok=True)
        self._single = self._single_tmp = None

    def finish(self, results: list[Result], ctx: Context) -> None:
        self._finished.close()
        if self._ahead is not None:
            self._ahead.close()
        if ctx.options.single_file is None:
            return
        final = self._single_path(ctx)
        shown = _inside(final, ctx.out) or str(final)
        for r in results:
            if r.path:
                r.path = shown
        archive = self._single
        if archive is None:
            return
        if not archive.items:
            self._discard_single()
            ctx.notes.append(f"no image written: {final} was not created")
            return
        try:
            archive.finish()
            assert self._single_tmp is not None
            _replace(self._single_tmp, final)
        except BaseException:
            self._discard_single()
            raise
        self._single = self._single_tmp = None
        atexit.unregister(self._discard_single)
        size = len(archive.manifest_json())
        if size > MANIFEST_LIMIT:
            ctx.notes.append(f"manifest.json of {final} is {size} bytes: skopeo and podman refuse more than "
                             f"{MANIFEST_LIMIT} (docker load takes it); select fewer images per --single-file")

    # --- the summary --------------------------------------------------------------------------
    def push_hint(self, results: list[Result], ctx: Context) -> list[str]:
        written = [r for r in results if r.status == WRITTEN]
        if not written:
            return []
        prefix = ctx.options.repo_prefix.rstrip("/")
        first = written[0].ref
        loaded = f"{prefix}/{first}" if prefix else first
        lines: list[str] = []
        if ctx.options.single_file is not None:
            f = shlex.quote(str(self._single_path(ctx)))
            lines += [
                "Load every image into Docker:",
                f"  docker load -i {f}",
                "Push one image without Docker (the archive holds several, so name it):",
                f"  skopeo copy docker-archive:{f}:{loaded} docker://<registry>/{first}",
            ]
        else:
            out = shlex.quote(str(ctx.out))
            one = shlex.quote(str(ctx.out / written[0].path))
            lines += [
                "Load one image into Docker:",
                f"  docker load -i {one}",
                "Load every image (bash):",
                f"  find {out} -path '*/_tags/*.tar' -exec docker load -i {{}} \\;",
                "Push one image without Docker:",
                f"  skopeo copy docker-archive:{one} docker://<registry>/{first}",
                "Push every image (bash; run from anywhere):",
                f"  (cd {out} && find . -path ./.regcarve -prune -o -path '*/_tags/*.tar' -print | sed 's|^\\./||' "
                "| while read -r f; do r=${f%.tar}; skopeo copy \"docker-archive:$f\" "
                "\"docker://<registry>/${r/\\/_tags\\//:}\"; done)",
            ]
            if ":" in str(ctx.out):
                lines.append("warning: OUT contains ':', which skopeo takes as the end of a docker-archive path; "
                             "use a path without one")
        if prefix:
            lines.append(f"after `docker load`, `docker push {loaded}` pushes to {prefix} (--repo-prefix)")
        lines.append("note: layers are stored uncompressed, so a push recompresses them: layer and manifest digests "
                     "differ from the source registry's (use --format dir to keep them)" if not ctx.options.keep_compressed
                     else "note: pushed manifests are regenerated, so their digests differ from the source registry's "
                     "(use --format dir to keep them)")
        return lines

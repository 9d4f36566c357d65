"""Registry storage trees built in memory, and tarballs of them, for the scanner and fault tests.

`Storage` holds files below `docker/registry/v2/` the way Distribution lays them out (blobs,
`_layers`, `_manifests` revisions and tags, `_uploads`) and makes real images: gzip'd tar layers,
a config with their diff_ids, Docker or OCI manifests, indexes. `Storage.entries()` turns the tree
into tar members; `build_tar` orders, prefixes, hardlinks, compresses and cuts them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field, replace

import zstandard

from regcarve.model.manifests import DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST

ROOT = "docker/registry/v2"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(digest: str) -> str:
    hexpart = digest.removeprefix("sha256:")
    return f"blobs/sha256/{hexpart[:2]}/{hexpart}/data"


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer: a tar of `files`, fixed metadata so the bytes are reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Image:
    repo: str
    tag: str | None
    manifest: bytes
    config: bytes
    layers: list[bytes]  # the gzip'd blobs
    diff_ids: list[str]
    media_type: str
    platform: tuple[str, str] = ("linux", "amd64")

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [sha256(layer) for layer in self.layers]

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob the image needs, manifest included, by digest."""
        out = {self.digest: self.manifest, self.config_digest: self.config}
        out.update({sha256(layer): layer for layer in self.layers})
        return out

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


@dataclass
class Index:
    repo: str
    tag: str | None
    manifest: bytes
    children: list[Image]
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


class Storage:
    """A registry storage tree: relative path below ROOT → content (insertion order kept)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    # --- raw pieces ------------------------------------------------------------------------
    def blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.files[blob_path(digest)] = data
        return digest

    def layer_link(self, repo: str, digest: str) -> None:
        self.files[f"repositories/{repo}/_layers/sha256/{digest[7:]}/link"] = digest.encode()

    def revision(self, repo: str, digest: str) -> None:
        self.files[f"repositories/{repo}/_manifests/revisions/sha256/{digest[7:]}/link"] = digest.encode()

    def tag_link(self, repo: str, tag: str, content: bytes | str) -> str:
        """`tags/<tag>/current/link` with any content; returns its path."""
        path = tag_path(repo, tag)
        self.files[path] = content.encode() if isinstance(content, str) else content
        return path

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self.tag_link(repo, tag, digest)
        self.files[f"repositories/{repo}/_manifests/tags/{tag}/index/sha256/{digest[7:]}/link"] = digest.encode()

    def upload(self, repo: str, uuid: str, data: bytes) -> None:
        base = f"repositories/{repo}/_uploads/{uuid}"
        self.files[f"{base}/data"] = data
        self.files[f"{base}/startedat"] = b"2026-01-01T00:00:00Z"
        self.files[f"{base}/hashstates/sha256/{len(data)}"] = b"\0" * 32

    # --- images ----------------------------------------------------------------------------
    def image(
        self,
        repo: str,
        tag: str | None,
        *,
        seed: int = 0,
        layers: int = 1,
        layer_size: int = 300,
        oci: bool = False,
        arch: str = "amd64",
        push: bool = True,
    ) -> Image:
        """A real image with `layers` gzip layers of `layer_size` pseudo-random bytes each.
        `push=False` only builds it (for index children pushed by `index`)."""
        rnd = random.Random(f"{seed}/{arch}")
        tars = [layer_tar({f"f{seed}-{i}": rnd.randbytes(layer_size)}) for i in range(layers)]
        gz = [gzip.compress(t, mtime=0) for t in tars]
        diff_ids = [sha256(t) for t in tars]
        config = json.dumps({
            "architecture": arch, "os": "linux", "config": {"Env": [f"SEED={seed}"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }, sort_keys=True).encode()
        config_type, layer_type, manifest_type = (
            (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST) if oci else (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST))
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": sha256(g), "size": len(g)} for g in gz],
        }, indent=3).encode()
        img = Image(repo, tag, manifest, config, gz, diff_ids, manifest_type, ("linux", arch))
        if push:
            self.push(img)
        return img

    def push(self, img: Image) -> None:
        """What a registry stores for a push: blobs, `_layers` links, the revision, the tag."""
        for digest, data in img.blobs.items():
            self.blob(data)
            if digest != img.digest:
                self.layer_link(img.repo, digest)
        self.revision(img.repo, img.digest)
        if img.tag is not None:
            self.tag(img.repo, img.tag, img.digest)

    def index(self, repo: str, tag: str | None, children: list[Image], *, oci: bool = False) -> Index:
        """A manifest list (or OCI index) of `children`, each pushed by digest into `repo`."""
        for child in children:
            self.push(replace(child, repo=repo, tag=None))
        media_type = OCI_INDEX if oci else DOCKER_LIST
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [{"mediaType": c.media_type, "digest": c.digest, "size": len(c.manifest),
                           "platform": {"os": c.platform[0], "architecture": c.platform[1]}} for c in children],
        }, indent=2).encode()
        self.blob(manifest)
        self.revision(repo, sha256(manifest))
        if tag is not None:
            self.tag(repo, tag, sha256(manifest))
        return Index(repo, tag, manifest, children, media_type)

    # --- damage ----------------------------------------------------------------------------
    def drop_blob(self, digest: str) -> None:
        del self.files[blob_path(digest)]

    def corrupt_blob(self, digest: str) -> None:
        """Same length, one byte changed: only the hash can tell."""
        data = bytearray(self.files[blob_path(digest)])
        data[len(data) // 2] ^= 0xFF
        self.files[blob_path(digest)] = bytes(data)

    def set_blob(self, digest: str, data: bytes) -> None:
        """Put other bytes under a digest's path."""
        self.files[blob_path(digest)] = data

    # --- members ---------------------------------------------------------------------------
    def entries(self, *, dirs: bool = True) -> list["Entry"]:
        """Tar members in tree order (a directory before what it holds), like `tar c` of the tree."""
        out: list[Entry] = []
        seen_dirs: set[str] = set()
        for rel in sorted(self.files):
            path = f"{ROOT}/{rel}"
            if dirs:
                parts = path.split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in seen_dirs:
                        seen_dirs.add(d)
                        out.append(Entry(d + "/", "dir"))
            out.append(Entry(path, "file", self.files[rel]))
        return out

    def tar(self, **kw) -> bytes:
        return build_tar(self.entries(dirs=kw.pop("dirs", True)), **kw)


def tag_path(repo: str, tag: str) -> str:
    return f"repositories/{repo}/_manifests/tags/{tag}/current/link"


@dataclass
class Entry:
    """One tar member to write. kind: file, dir, symlink, hardlink, fifo, chr, blk."""

    name: str
    kind: str = "file"
    data: bytes = b""
    linkname: str = ""
    extra: dict = field(default_factory=dict)  # PAX records

    @property
    def is_blob(self) -> bool:
        return self.name.endswith("/data") and "/blobs/sha256/" in f"/{self.name}"


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def order_entries(entries: list[Entry], order: str | random.Random) -> list[Entry]:
    """"tree" (as given), "blobs-first", "repos-first", "reversed", or shuffled by a Random."""
    if isinstance(order, random.Random):
        out = list(entries)
        order.shuffle(out)
        return out
    if order == "tree":
        return list(entries)
    if order == "reversed":
        return entries[::-1]
    blobs = [e for e in entries if "/blobs/" in f"/{e.name}"]
    rest = [e for e in entries if "/blobs/" not in f"/{e.name}"]
    if order == "blobs-first":
        return blobs + rest
    if order == "repos-first":
        return rest + blobs
    raise ValueError(order)


def hardlink_duplicates(entries: list[Entry]) -> list[Entry]:
    """Files whose content an earlier file already had become hard links to it, as `tar c` stores
    a tree deduplicated with hardlinks (`cp -al` backups, `hardlink`, rsync --link-dest)."""
    first: dict[bytes, str] = {}
    out = []
    for e in entries:
        if e.kind == "file" and e.data in first:
            out.append(Entry(e.name, "hardlink", linkname=first[e.data]))
            continue
        if e.kind == "file":
            first[e.data] = e.name
        out.append(e)
    return out


def build_tar(
    entries: list[Entry],
    *,
    order: str | random.Random = "tree",
    prefix: str = "",
    fmt: int = tarfile.GNU_FORMAT,
    hardlink_dups: bool = False,
    end_marker: bool = True,
    trailing: bytes = b"",
    compression: str | None = None,
    global_pax: dict[str, str] | None = None,
) -> bytes:
    """The entries as a tar (optionally gzip or zstd), each name (and hardlink target) behind `prefix`."""
    entries = order_entries(entries, order)
    if hardlink_dups:
        entries = hardlink_duplicates(entries)
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape",
                      pax_headers=global_pax)  # a global header ('g') first
    for e in entries:
        ti = tarfile.TarInfo(prefix + e.name)
        ti.type = _TYPES[e.kind]
        ti.mtime, ti.mode = 1700000000, 0o755 if e.kind == "dir" else 0o644
        ti.uname = ti.gname = "root"
        if e.kind in ("hardlink", "symlink"):
            outside = e.linkname.startswith(("/", "."))  # aimed outside the tree: no prefix
            ti.linkname = e.linkname if e.kind == "symlink" or outside else prefix + e.linkname
        if e.kind in ("chr", "blk"):
            ti.devmajor, ti.devminor = 1, 3
        if e.extra:
            ti.pax_headers = dict(e.extra)
        if e.kind == "file":
            ti.size = len(e.data)
            tf.addfile(ti, io.BytesIO(e.data))
        else:
            tf.addfile(ti)
    data = buf.getvalue()  # members only: close() would add the end marker and record padding
    if end_marker:
        data += bytes(1024)
        data += bytes(-len(data) % tarfile.RECORDSIZE)
    data += trailing
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression is not None:
        raise ValueError(compression)
    return data


def fixture_entries(data: bytes) -> list[Entry]:
    """The members of an existing (uncompressed) tar as entries, to reorder or damage them."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            if ti.isdir():
                out.append(Entry(ti.name.rstrip("/") + "/", "dir"))
            elif ti.isfile():
                out.append(Entry(ti.name, "file", tf.extractfile(ti).read()))
            elif ti.islnk():
                out.append(Entry(ti.name, "hardlink", linkname=ti.linkname))
            elif ti.issym():
                out.append(Entry(ti.name, "symlink", linkname=ti.linkname))
    return out

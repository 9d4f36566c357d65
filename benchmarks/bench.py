#!/usr/bin/env python3
"""Benchmark regcarve against the tools a site would otherwise use on the same archive.

    python3 benchmarks/bench.py              # prepare inputs (cached), full run, results/latest.*
    python3 benchmarks/bench.py --quick      # ~200 MB archive, 500 tags, 3 runs: results/quick.*
    python3 benchmarks/bench.py --only tags --only list --runs 3
    python3 benchmarks/bench.py --profile big.tar.gz:dir   # py-spy: where the time goes

Inputs are made once with the fixture generator's building blocks and a real registry
(tests/registry.py), then cached under benchmarks/.cache/ (git-ignored):

* big.tar / big.tar.gz / big.tar.zst: registry storage holding images built with umoci on a
  Debian minbase root filesystem (debootstrap) as the shared base layer, with application
  layers made of this machine's /usr/lib and /usr/share trees and random-byte layers
  (incompressible), padded to the target size, pushed with skopeo.
* tags.tar.gz: a registry holding 5,000 tags: a few hundred distinct small images pushed with
  skopeo, the rest extra tags PUT through the registry API (same manifest, new tag).

Each input is measured with every command alternating (the order rotates every round), so
that noise from other work on the machine spreads evenly; we report medians and min/max of
wall time, CPU time (user+sys of the child and its waited-for children, from os.wait4) and
peak RSS (ru_maxrss), and check the acceptance ratios of issue 6.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import gzip
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO_ROOT))

from fixtures.generate import (  # noqa: E402
    CREATED, OCI_CONFIG, OCI_MANIFEST, compact_json, init_layout, oci_ref, push_manifest, push_skopeo, run,
    sha256_digest, tar_gz,
)
from tests.registry import LiveRegistry  # noqa: E402

# Bump when the recipe of an input changes: cached inputs with another version are rebuilt.
RECIPE_VERSION = 1
MB = 1_000_000
RSS_LIMIT_MB = 150
SUITE = "bookworm"
OCI_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# ============================================================================ profiles


@dataclass(frozen=True)
class Layer:
    """One image layer: host directories copied with their paths, and/or a random file."""
    dirs: tuple[str, ...] = ()
    random_mb: int = 0


@dataclass(frozen=True)
class Image:
    key: str  # tag in the OCI layout
    repo: str
    tag: str
    parent: str | None  # layout tag of the parent image; None for the debootstrap base itself
    layers: tuple[Layer, ...] = ()
    fmt: str = "v2s2"  # skopeo --format when pushing
    pad: bool = False  # its last layer is random bytes sized to bring the archive to the target


BASE = Image("base", "library/debian", f"{SUITE}-minbase", None, fmt="v2s2")

FULL_IMAGES = (
    BASE,
    Image("python", "lang/python", "3.11", "base", (Layer(("/usr/lib/python3.11", "/usr/lib/python3")),), "oci"),
    Image("web-2.4", "apps/web", "2.4", "python", (Layer(("/usr/lib/git-core", "/usr/share/vim")), Layer(random_mb=24))),
    Image("web-2.5", "apps/web", "2.5", "python", (Layer(("/usr/lib/git-core", "/usr/share/vim")), Layer(random_mb=24))),
    Image("llvm", "toolchain/llvm", "14", "base", (Layer(("/usr/lib/llvm-14",)),), "oci"),
    Image("libs", "runtime/libs", SUITE, "base", (Layer(("/usr/lib/x86_64-linux-gnu",)),)),
    Image("docs", "docs/site", "1", "base", (Layer(("/usr/share/doc", "/usr/share/man")), Layer(("/usr/share/locale",)))),
    Image("model", "ml/model", "1", "base", (Layer(random_mb=64), Layer()), pad=True),
)
QUICK_IMAGES = (
    BASE,
    Image("python", "lang/python", "3.11", "base", (Layer(("/usr/lib/python3.11",)),), "oci"),
    Image("web-2.4", "apps/web", "2.4", "python", (Layer(("/usr/lib/git-core",)), Layer(random_mb=8))),
    Image("docs", "docs/site", "1", "base", (Layer(("/usr/share/doc",)),)),
    Image("model", "ml/model", "1", "base", (Layer(),), pad=True),
)


@dataclass(frozen=True)
class Profile:
    name: str
    target_mb: int  # size of the big archive (sum of its blobs)
    images: tuple[Image, ...]
    repos: int  # tags archive: repositories ...
    per_repo: int  # ... each with this many distinct images ...
    tags: int  # ... and this many tags in all
    runs: int

    def recipe(self) -> dict:
        return {"version": RECIPE_VERSION, "target_mb": self.target_mb, "repos": self.repos,
                "per_repo": self.per_repo, "tags": self.tags,
                "images": [repr(i) for i in self.images]}


@dataclass(frozen=True)
class TagsShape:
    """A tags archive: repos x per_repo distinct images pushed with skopeo, the other tags PUT
    through the registry API (same manifest, new tag)."""
    file: str
    repos: int
    per_repo: int
    tags: int
    app_bytes: tuple[int, int] = (16_000, 1_500_000)  # random bytes in each app layer, log-uniform
    deps_files: int = 40  # real files in a dependency layer
    repos_per_deps: int = 1  # repositories sharing one dependency layer
    debian_base: bool = True  # the big archive's Debian base; else one layer of this machine's files


FULL = Profile("full", 1000, FULL_IMAGES, repos=50, per_repo=5, tags=5000, runs=5)
QUICK = Profile("quick", 200, QUICK_IMAGES, repos=10, per_repo=5, tags=500, runs=3)
# Issue 19: ten times the tags (and repositories) of the 5,000-tag archive. Its images are smaller
# (what grows is the count of tags, not of bytes) and it needs no big archive: its base layer is
# made of this machine's files, so it can be built on its own (`--only tags50k --prepare-only`).
SCALE = TagsShape("tags50k.tar.gz", repos=500, per_repo=2, tags=50_000, app_bytes=(4_000, 64_000), deps_files=8,
                  repos_per_deps=10, debian_base=False)
SCALE_RECIPE_VERSION = 1


def tags_shape(profile: Profile) -> TagsShape:
    """The shape of a profile's own tags archive (`tags.tar.gz`)."""
    return TagsShape("tags.tar.gz", profile.repos, profile.per_repo, profile.tags)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# On ext4 without a journal (this machine's root filesystem), a new inode skips every inode freed
# in the last 60 s (360 s while its inode table block is dirty), one buffer lookup each
# (ialloc.c: recently_deleted). Deleting a tree of 50,000 files makes the next minutes of file
# creation quadratic: `tar -x` of the tags archive went from 1.7 s to 25 s over five runs. So
# large trees are renamed into TRASH and deleted only after the measurements.
TRASH = CACHE / "trash"
MANY_ENTRIES = 2000


def discard(path: Path) -> None:
    """Remove `path` now if it is small, or move it to TRASH (emptied by empty_trash)."""
    if not path.exists():
        return
    if count_entries(path, MANY_ENTRIES) < MANY_ENTRIES:
        shutil.rmtree(path, ignore_errors=True)
        return
    TRASH.mkdir(parents=True, exist_ok=True)
    path.rename(TRASH / f"{time.monotonic_ns()}-{path.name}")


def count_entries(path: Path, stop: int) -> int:
    n, todo = 0, [path]
    while todo and n < stop:
        with os.scandir(todo.pop()) as it:
            for e in it:
                n += 1
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
    return n


def empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


# ============================================================================ inputs: the big archive


def apt_mirror() -> str:
    """Debian's mirror as configured for apt (deb822 .sources or one-line sources.list)."""
    texts = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for p in texts:
        if not p.is_file() or not p.name.endswith((".list", ".sources")):
            continue
        body = p.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", body):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.*)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and uris.group(1).rstrip("/").endswith("/debian"):
                return uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", body, re.M):
            if m.group(2) == SUITE and m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
    raise SystemExit(f"no Debian mirror for {SUITE} in /etc/apt/sources.list(.d); pass --mirror URL")


def debootstrap_rootfs(mirror: str | None) -> Path:
    """`debootstrap --variant=minbase` once, cleaned like a container base (no apt lists/debs)."""
    root = CACHE / f"rootfs-{SUITE}"
    done = CACHE / f"rootfs-{SUITE}.done"
    if done.exists() and root.is_dir():
        return root
    tmp = CACHE / f"rootfs-{SUITE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    mirror = mirror or apt_mirror()
    log(f"debootstrap --variant=minbase {SUITE} ({mirror}) ...")
    run(["debootstrap", "--variant=minbase", SUITE, str(tmp), mirror])
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*", "dev/*", "tmp/*"):
        for p in tmp.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    tmp.rename(root)
    done.write_text(dt.datetime.now().isoformat() + "\n")
    return root


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n


def umoci_build(layout: Path, image: Image, rootfs: Path, pad_bytes: int = 0) -> None:
    """Build `image` in `layout` with umoci: one `repack` per layer, on top of its parent."""
    ref = f"{layout}:{image.key}"
    if image.parent is None:
        run(["umoci", "new", "--image", ref])
        run(["umoci", "config", "--image", ref, "--architecture", "amd64", "--os", "linux",
             "--created", CREATED, "--no-history"])
        layers: list = [rootfs]
    else:
        run(["umoci", "config", "--image", f"{layout}:{image.parent}", "--tag", image.key,
             "--created", CREATED, "--no-history"])
        layers = list(image.layers)
    with tempfile.TemporaryDirectory(dir=layout.parent, prefix="bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        run(["umoci", "unpack", "--image", ref, str(bundle)])
        target = bundle / "rootfs"
        for n, layer in enumerate(layers):
            if isinstance(layer, Path):
                run(["cp", "-a", f"{layer}/.", str(target)])
                what = f"debootstrap --variant=minbase {SUITE}"
            else:
                dirs = [d for d in layer.dirs if os.path.isdir(d)]
                if len(dirs) < len(layer.dirs):  # another machine: the pad layer makes up the size
                    log(f"    not on this machine, left out: {', '.join(sorted(set(layer.dirs) - set(dirs)))}")
                if dirs:
                    run(["cp", "-a", "--parents", *dirs, str(target)])
                size = layer.random_mb * MB or (pad_bytes if image.pad and n == len(layers) - 1 else 0)
                if size:
                    seed = int(hashlib.sha256(f"{image.key}/{n}".encode()).hexdigest()[:8], 16)
                    write_random(target / "opt" / image.repo.replace("/", "-") / f"data-{n}.bin", size, seed)
                what = " ".join(dirs) + (f" + {size // MB} MB random" if size else "")
            run(["umoci", "repack", "--refresh-bundle", "--image", ref, "--history.created", CREATED,
                 "--history.created_by", f"regcarve bench {image.key} layer {n}: {what}", str(bundle)])


def layout_manifest(layout: Path, key: str) -> tuple[dict, dict]:
    """(manifest, config) of tag `key` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == key:
            manifest = json.loads(blob_file(layout, m["digest"]).read_bytes())
            return manifest, json.loads(blob_file(layout, manifest["config"]["digest"]).read_bytes())
    raise KeyError(key)


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def referenced_bytes(layout: Path, keys: list[str]) -> int:
    """Bytes of the distinct layer and config blobs the tags `keys` use."""
    seen: dict[str, int] = {}
    for key in keys:
        manifest, _ = layout_manifest(layout, key)
        for d in [manifest["config"], *manifest["layers"]]:
            seen[d["digest"]] = d["size"]
    return sum(seen.values())


def archive_storage(root: Path, out_tar: Path, gz: bool, zst: bool) -> dict[str, Path]:
    """`tar cf` the storage directory the way sites do it, then gzip (pigz) and zstd -T0."""
    out = {}
    out_tar.unlink(missing_ok=True)
    run(["tar", "cf", str(out_tar), "docker"], cwd=root)
    out[".tar"] = out_tar
    if gz:
        gzipper = "pigz" if shutil.which("pigz") else "gzip"
        dest = out_tar.with_name(out_tar.name + ".gz")
        with open(dest, "wb") as f:
            subprocess.run([gzipper, "-6", "-c", str(out_tar)], stdout=f, check=True)
        out[".tar.gz"] = dest
    if zst:
        dest = out_tar.with_name(out_tar.name + ".zst")
        run(["zstd", "-q", "-f", "-T0", "-3", str(out_tar), "-o", str(dest)])
        out[".tar.zst"] = dest
    return out


def count_tags(reg: LiveRegistry) -> int:
    return sum(len(reg.tags(repo)) for repo in reg.catalog())


def build_big(profile: Profile, work: Path, rootfs: Path) -> dict:
    layout = work / "layout"
    shutil.rmtree(layout, ignore_errors=True)
    init_layout(layout)
    t0 = time.monotonic()
    for image in profile.images:
        pad = 0
        if image.pad:
            have = referenced_bytes(layout, [i.key for i in profile.images if i.key != image.key and _built(layout, i)])
            pad = max(16 * MB, profile.target_mb * MB - have - sum(l.random_mb for l in image.layers) * MB)
        log(f"  umoci: {image.key}{f' (+{pad // MB} MB random to reach {profile.target_mb} MB)' if pad else ''}")
        umoci_build(layout, image, rootfs, pad)
    built_s = time.monotonic() - t0
    storage = work / "big-registry" / "storage"
    shutil.rmtree(storage.parent, ignore_errors=True)
    reg = LiveRegistry(storage).start()
    try:
        for image in profile.images:
            push_skopeo(reg, oci_ref(layout, image.key), image.repo, image.tag, image.fmt)
        tags = count_tags(reg)
    finally:
        reg.stop()
    pushed_s = time.monotonic() - t0 - built_s
    log(f"  pushed {tags} tags; archiving")
    files = archive_storage(storage, work / "big.tar", gz=True, zst=True)
    discard(storage.parent)
    blobs = referenced_bytes(layout, [i.key for i in profile.images])
    return {"files": {k: p.name for k, p in files.items()}, "tags": tags, "images": len(profile.images),
            "blob_bytes": blobs, "umoci_s": round(built_s, 1), "push_s": round(pushed_s, 1),
            "seconds": round(time.monotonic() - t0, 1)}


def _built(layout: Path, image: Image) -> bool:
    try:
        layout_manifest(layout, image.key)
        return True
    except KeyError:
        return False


# ============================================================================ inputs: the 5,000-tag archive


class HandLayout:
    """A small OCI layout written directly (no umoci): fast enough for hundreds of images."""

    def __init__(self, path: Path) -> None:
        self.path = path
        shutil.rmtree(path, ignore_errors=True)
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict] = []

    def blob(self, media_type: str, data: bytes) -> dict:
        digest = sha256_digest(data)
        p = blob_file(self.path, digest)
        if not p.exists():
            p.write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def link_blob(self, src_layout: Path, desc: dict) -> dict:
        p = blob_file(self.path, desc["digest"])
        if not p.exists():
            os.link(blob_file(src_layout, desc["digest"]), p)
        return desc

    def image(self, ref: str, config: dict, layers: list[dict]) -> None:
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": self.blob(OCI_CONFIG, compact_json(config)), "layers": layers}
        desc = self.blob(OCI_MANIFEST, compact_json(manifest))
        self.entries.append({**desc, "annotations": {"org.opencontainers.image.ref.name": ref}})

    def close(self) -> None:
        (self.path / "index.json").write_bytes(compact_json(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.entries}))


def tar_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip'd tar, diff_id) of in-memory files."""
    layer = tar_gz(files)
    return layer, sha256_digest(gzip.decompress(layer))


def real_files(limit: int) -> list[Path]:
    """Regular files of this machine to fill small layers with (sorted, so stable)."""
    found = []
    for top in ("/usr/share/doc", "/usr/lib/python3/dist-packages", "/usr/share/perl"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink() and 0 < p.stat().st_size < 512_000:
                    found.append(p)
            if len(found) >= limit:
                return found
    return found


def base_layer(layout: HandLayout, big_layout: Path | None, pool: list[Path]) -> tuple[dict, str]:
    """(descriptor, diff_id) of the shared base layer: the big archive's Debian base when there is
    a big layout, else a layer of 300 of this machine's files."""
    if big_layout is not None:
        manifest, config = layout_manifest(big_layout, BASE.key)
        return layout.link_blob(big_layout, manifest["layers"][0]), config["rootfs"]["diff_ids"][0]
    files = {f"usr/share/base/{p.relative_to('/')}": p.read_bytes() for p in pool[:300]}
    layer, diff = tar_layer(files)
    return layout.blob(OCI_GZIP_LAYER, layer), diff


def build_tags(shape: TagsShape, work: Path, big_layout: Path | None) -> dict:
    """repos x per_repo distinct images (shared base, one deps layer per `repos_per_deps` repositories,
    one app layer each) pushed with skopeo, then extra tags PUT through the API up to `shape.tags`."""
    t0 = time.monotonic()
    stem = shape.file.removesuffix(".tar.gz")
    layout = HandLayout(work / f"{stem}-layout")
    pool = real_files(6000)
    base, base_diff = base_layer(layout, big_layout if shape.debian_base else None, pool)
    rng = random.Random(20240606)
    images = []  # (repo, tag, fmt)
    lo, hi = shape.app_bytes
    for r in range(shape.repos):
        repo = f"team{r // 10}/svc{r}"
        if r % shape.repos_per_deps == 0:
            deps = {f"srv/deps/{p.relative_to('/')}": p.read_bytes() for p in rng.sample(pool, shape.deps_files)}
            deps_gz, deps_diff = tar_layer(deps)
            deps_layer = layout.blob(OCI_GZIP_LAYER, deps_gz)
        for k in range(shape.per_repo):
            size = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            app = {f"srv/app/{p.name}": p.read_bytes() for p in rng.sample(pool, 5)}
            app["srv/app/bundle.bin"] = rng.randbytes(size)
            app["srv/app/VERSION"] = f"{repo} 1.{k}.0\n".encode()
            app_gz, app_diff = tar_layer(app)
            config = {"architecture": "amd64", "os": "linux", "created": CREATED,
                      "config": {"Cmd": ["/srv/app/run"], "Labels": {"org.opencontainers.image.version": f"1.{k}.0"}},
                      "rootfs": {"type": "layers", "diff_ids": [base_diff, deps_diff, app_diff]},
                      "history": [{"created": CREATED, "created_by": w} for w in ("debootstrap", "deps", "app")]}
            ref = f"svc{r}-1.{k}.0"
            layout.image(ref, config, [base, deps_layer, layout.blob(OCI_GZIP_LAYER, app_gz)])
            images.append((ref, repo, f"1.{k}.0", "oci" if (r + k) % 3 == 0 else "v2s2"))
    layout.close()
    built_s = time.monotonic() - t0
    log(f"  {len(images)} distinct images written; pushing with skopeo")
    storage = work / f"{stem}-registry" / "storage"
    shutil.rmtree(storage.parent, ignore_errors=True)
    reg = LiveRegistry(storage).start()
    try:
        # Repositories in parallel, each one's images in turn: two pushes of the same blob into
        # one repository at once can make the registry answer 500 (its link files are not atomic).
        by_repo: dict[str, list[tuple]] = {}
        for image in images:
            by_repo.setdefault(image[1], []).append(image)

        def push_repo(repo_images: list[tuple]) -> None:
            for ref, repo, tag, fmt in repo_images:
                push_skopeo(reg, oci_ref(layout.path, ref), repo, tag, fmt)

        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(push_repo, by_repo.values()))
        pushed_s = time.monotonic() - t0 - built_s
        extra = shape.tags - len(images)
        log(f"  {extra} extra tags through the registry API")
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda job: put_tag(reg, *job), extra_tags(images, extra)))
        tags = count_tags(reg)
    finally:
        reg.stop()
    if tags != shape.tags:
        raise RuntimeError(f"tags archive: the registry holds {tags} tags, expected {shape.tags}")
    files = archive_storage(storage, work / shape.file.removesuffix(".gz"), gz=True, zst=False)
    files[".tar"].unlink()
    del files[".tar"]
    discard(storage.parent)
    discard(layout.path)
    return {"files": {k: p.name for k, p in files.items()}, "tags": tags, "images": len(images),
            "repos": shape.repos, "build_s": round(built_s, 1), "push_s": round(pushed_s, 1),
            "seconds": round(time.monotonic() - t0, 1)}


def extra_tags(images: list[tuple], extra: int) -> list[tuple[str, str, str]]:
    """(repo, existing tag, new tag): rebuild tags spread evenly, plus `latest` per repo."""
    jobs, latest = [], {}
    for _, repo, tag, _ in images:
        latest[repo] = tag
    for repo, tag in latest.items():
        if len(jobs) < extra:
            jobs.append((repo, tag, "latest"))
    n = 0
    while len(jobs) < extra:
        _, repo, tag, _ = images[n % len(images)]
        jobs.append((repo, tag, f"{tag}-build{n // len(images) + 1}"))
        n += 1
    return jobs


def put_tag(reg: LiveRegistry, repo: str, tag: str, new: str) -> None:
    _, media_type, body = reg.manifest(repo, tag)
    push_manifest(reg, repo, new, body, media_type)


# ============================================================================ inputs: cache


INPUT_DESCRIPTIONS = {
    "big.tar.gz": "{mb} MB archive (gzip, pigz -6)", "big.tar": "{mb} MB archive (plain tar)",
    "big.tar.zst": "{mb} MB archive (zstd -T0 -3)", "tags.tar.gz": "{tags}-tag archive (gzip)",
    "big.tar.xz": "{mb} MB archive (xz -T0 -6)", "big.tar.bz2": "{mb} MB archive (lbzip2 -9)",
    "big.tar.lz4": "{mb} MB archive (lz4 -1)", "tags50k.tar.gz": "{tags}-tag archive (gzip)",
}
ALIASES = {"gz": "big.tar.gz", "tar": "big.tar", "zst": "big.tar.zst", "tags": "tags.tar.gz", "xz": "big.tar.xz",
           "bz2": "big.tar.bz2", "lz4": "big.tar.lz4", "tags50k": "tags50k.tar.gz"}
GROUP_OF = {"big.tar.gz": "big", "big.tar": "big", "big.tar.zst": "big", "big.tar.xz": "big", "big.tar.bz2": "big",
            "big.tar.lz4": "big", "tags.tar.gz": "tags", "tags50k.tar.gz": "tags50k"}
# Made from big.tar when first asked for, and measured only when named with --only: xz and bzip2 decompress
# ten to seventy times slower than gzip, and a full run of every command on them would take an hour; lz4
# is fast, but is not among the goals of a full run.
DERIVED_INPUTS = {"big.tar.xz": ["xz", "-T0", "-6", "-c"], "big.tar.bz2": ["lbzip2", "-9", "-c"],
                  "big.tar.lz4": ["lz4", "-1", "-c"]}


def derive_inputs(work: Path, meta: dict, meta_path: Path) -> None:
    """big.tar.xz, big.tar.bz2 and big.tar.lz4, compressed from big.tar (the tar the other big inputs hold)."""
    files = meta["big"]["files"]
    for name, argv in DERIVED_INPUTS.items():
        ext = name.removeprefix("big")
        if (work / name).exists():  # written under a .part name, renamed when whole
            files[ext] = name
            continue
        log(f"  {' '.join(argv)} big.tar > {name}")
        part = work / f"{name}.part"
        with open(work / "big.tar", "rb") as src, open(part, "wb") as dst:
            subprocess.run(argv, stdin=src, stdout=dst, check=True)
        part.rename(work / name)
        files[ext] = name
        meta_path.write_text(json.dumps(meta, indent=2))


def input_groups(profile: Profile, only: set[str]) -> list[str]:
    """The groups of inputs to prepare: those `--only` names, else all of the profile's."""
    every = ["big", "tags", "tags50k"] if profile is FULL else ["big", "tags"]
    named = {GROUP_OF[o] for o in only if o in GROUP_OF}
    return [g for g in every if g in named] if named else every


def prepare(profile: Profile, mirror: str | None, rebuild: bool, groups: list[str] | None = None,
            derived: bool = False) -> dict:
    """Build (or reuse) the inputs of `profile` (of `groups` of them only, when given); returns their metadata.
    `derived`: also the xz, bzip2 and lz4 inputs."""
    groups = groups or input_groups(profile, set())
    work = CACHE / profile.name
    meta_path = work / "inputs.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and not rebuild else {}
    if meta.get("recipe") != profile.recipe():
        meta = {"recipe": profile.recipe()}
    work.mkdir(parents=True, exist_ok=True)

    def missing(group: str, recipe: dict | None = None) -> bool:
        have = meta.get(group)
        return (have is None
                or not all((work / f).exists() for f in have["files"].values() if f not in DERIVED_INPUTS)
                or (recipe is not None and have.get("recipe") != recipe))

    if "big" in groups and missing("big"):
        log(f"building the {profile.target_mb} MB archive")
        rootfs = debootstrap_rootfs(mirror)
        meta["big"] = build_big(profile, work, rootfs)
        meta_path.write_text(json.dumps(meta, indent=2))
    if "tags" in groups and missing("tags"):
        log(f"building the {profile.tags}-tag archive")
        if not (work / "layout" / "index.json").exists():
            raise SystemExit("the big archive's OCI layout is gone: rerun with --rebuild")
        meta["tags"] = build_tags(tags_shape(profile), work, work / "layout")
        meta_path.write_text(json.dumps(meta, indent=2))
    scale_recipe = {"version": SCALE_RECIPE_VERSION, "shape": repr(SCALE)}
    if "tags50k" in groups and missing("tags50k", scale_recipe):
        log(f"building the {SCALE.tags}-tag archive")
        meta["tags50k"] = {**build_tags(SCALE, work, None), "recipe": scale_recipe}
        meta_path.write_text(json.dumps(meta, indent=2))
    if derived:
        derive_inputs(work, meta, meta_path)
    inputs = {}
    for group in groups:
        for ext, name in meta[group]["files"].items():
            path = work / name
            if not path.exists():
                continue
            mb = round(meta["big"]["blob_bytes"] / MB) if "big" in meta else 0
            inputs[name] = {"path": str(path.relative_to(REPO_ROOT)), "bytes": path.stat().st_size,
                            "tags": meta[group]["tags"], "images": meta[group]["images"],
                            "description": INPUT_DESCRIPTIONS[name].format(mb=mb, tags=meta[group]["tags"])}
    return {"inputs": inputs, "build": {g: {k: v for k, v in meta[g].items() if k != "files"} for g in groups}}


# ============================================================================ measuring


@dataclass
class Command:
    key: str
    kind: str  # "reference" or "subject"
    argv: list[str]
    out_dir: bool = False  # gets a fresh {OUT} folder, removed afterwards

    def display(self) -> str:
        if self.argv[0] == "env":
            return Command(self.key, self.kind, self.argv[2:]).display() + " (baseline)"
        if self.argv[:2] == ["bash", "-c"]:
            return self.argv[2].replace("set -o pipefail; ", "").replace('"$1"', "A").replace(" >/dev/null", "")
        shown = ["regcarve" if a == sys.executable else a for a in self.argv]
        if shown[1:3] == ["-m", "regcarve"]:
            shown = shown[:1] + shown[3:]
        elif self.kind == "floor":
            shown = ["python3", "benchmarks/floors.py", self.argv[2],
                     *(["STORE"] if self.argv[2] == "layers" else self.argv[3:-1]), "OUT"]
        return " ".join("A" if a == "{A}" else a.replace("{OUT}", "OUT") for a in shown)


REFERENCE_FOR = {".tar.gz": "gzip", ".tar": "openssl", ".tar.zst": "zstd-openssl", ".tar.xz": "xz-dc",
                 ".tar.bz2": "bzip2-dc", ".tar.lz4": "lz4-dc"}
SUBJECTS = ("list", "dir", "oci", "docker-archive")


FLOORS = ("floor-layers", "floor-folders", "floor-tree")
TAGS50K_FILES_PER_TAG = 6  # strace of its convert --format dir: 300,000 link() for 50,000 tags


def commands_for(name: str, floors: dict[str, list[str]] | None = None) -> list[Command]:
    """`floors`: key → arguments of floors.py, for the inputs whose goals they bound."""
    regcarve = [sys.executable, "-m", "regcarve"]
    refs = {
        ".tar.gz": [Command("gzip", "reference", ["gzip", "-dc", "{A}"]),
                    Command("tar-x", "reference", ["tar", "-xzf", "{A}", "-C", "{OUT}"], out_dir=True)],
        ".tar": [Command("openssl", "reference", ["openssl", "dgst", "-sha256", "{A}"])],
        ".tar.zst": [Command("zstd-openssl", "reference",
                             ["bash", "-c", 'set -o pipefail; zstd -dc "$1" | openssl dgst -sha256 >/dev/null',
                              "bash", "{A}"])],
        ".tar.xz": [Command("xz-dc", "reference", ["xz", "-dc", "{A}"])],
        ".tar.bz2": [Command("bzip2-dc", "reference", ["bzip2", "-dc", "{A}"])],
        ".tar.lz4": [Command("lz4-dc", "reference", ["lz4", "-dc", "{A}"])],
    }[suffix(name)]
    subjects = [Command("list", "subject", [*regcarve, "list", "-q", "{A}"])]
    if name.startswith("tags"):  # issue 19: a tags archive's JSON outputs, and the reference of its goals
        refs.append(Command("tar-t", "reference", ["tar", "-tzf", "{A}"]))
        subjects += [Command("list-json", "subject", [*regcarve, "list", "--json", "-q", "{A}"]),
                     Command("report", "subject", [*regcarve, "convert", "--format", "dir", "-q", "-o", "{OUT}/images",
                                                   "--report", "{OUT}/report.json", "{A}"], out_dir=True)]
    for fmt in SUBJECTS[1:]:
        extra = []
        if fmt == "docker-archive" and name.startswith("tags"):
            # one tar per tag would hold every tag's whole image uncompressed: 5,000 x the base
            # layer, hundreds of GB here. One --single-file archive holds each layer once.
            extra = ["--single-file", "{OUT}/all.tar"]
        subjects.append(Command(fmt, "subject", [*regcarve, "convert", "--format", fmt, *extra, "-q", "-o", "{OUT}",
                                                 "{A}"], out_dir=True))
    floor_cmds = [Command(key, "floor", [sys.executable, str(HERE / "floors.py"), *args], out_dir=True)
                  for key, args in (floors or {}).items()]
    if BASELINE_SRC:  # the same subjects, run from another source tree, in the same rounds
        subjects += [Command(f"{c.key}@baseline", "subject", ["env", f"PYTHONPATH={BASELINE_SRC}", *c.argv], c.out_dir)
                     for c in subjects]
    return refs + subjects + floor_cmds


BASELINE_SRC = ""  # --baseline-src: a regcarve source tree (…/src) measured beside this one


def suffix(name: str) -> str:
    return next(s for s in (".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tar.lz4", ".tar") if name.endswith(s))


# The children are started by a small helper interpreter, not by this process: ru_maxrss is a
# high-water mark that survives execve, and a child spawned with vfork/posix_spawn starts from
# its parent's resident set. From a 30+ MB benchmark process every child would report >= 30 MB;
# from this helper the floor is its own few MB, measured at start as `rss_floor_mb`.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    os.chdir(req["cwd"])
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    acts = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    try:
        t0 = time.perf_counter()
        pid = os.posix_spawnp(req["argv"][0], req["argv"], os.environ, file_actions=acts)
        _, status, ru = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
        out = {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "maxrss_kb": ru.ru_maxrss,
               "rc": os.waitstatus_to_exitcode(status)}
    except OSError as e:
        out = {"error": str(e)}
    os.close(null)
    os.close(err)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""


class Launcher:
    """Runs one command at a time in the helper; returns wall time and the child's rusage
    (os.wait4: the child plus the children it waited for, so pipelines add up)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], cwd: Path, stderr: Path) -> dict:
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "stderr": str(stderr)}) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        if "error" in out:
            raise RuntimeError(f"{argv[0]}: {out['error']}")
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure_once(launcher: Launcher, cmd: Command, archive: Path, scratch: Path) -> dict:
    """Run once, with a fresh OUT (removed afterwards, not timed)."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    if cmd.key in ("tar-x", "report"):
        out.mkdir(parents=True)
    argv = [str(archive) if a == "{A}" else str(out) if a == "{OUT}" else a.replace("{OUT}", str(out))
            for a in cmd.argv]
    m = launcher.run(argv, scratch, scratch / "stderr")
    tail = (scratch / "stderr").read_bytes()[-2000:].decode(errors="replace").strip()
    floor = json.loads((out / FLOOR_RESULT).read_text()) if (out / FLOOR_RESULT).exists() else None
    discard(out)
    return {"wall": round(m["wall"], 4), "cpu": round(m["user"] + m["sys"], 4), "user": round(m["user"], 4),
            "sys": round(m["sys"], 4), "rss_mb": round(m["maxrss_kb"] * 1024 / MB, 1), "rc": m["rc"],
            "stderr": tail, **({"floor": floor} if floor else {})}


def acceptable(cmd: Command, rc: int) -> bool:
    return rc == 0 or (cmd.key == "list" and rc == 1)  # list: 1 = problems found in the input


def measure_input(launcher: Launcher, name: str, archive: Path, cmds: list[Command], runs: int,
                  scratch: Path) -> dict:
    """Alternate the commands `runs` times (order rotating every round)."""
    subprocess.run(["cat", str(archive)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    results: dict[str, dict] = {c.key: {"kind": c.kind, "command": c.display(), "runs": [], "status": "ok"}
                                for c in cmds}
    for r in range(runs):
        order = cmds[r % len(cmds):] + cmds[:r % len(cmds)]
        for cmd in order:
            res = results[cmd.key]
            if res["status"] != "ok":
                continue
            m = measure_once(launcher, cmd, archive, scratch)
            if not acceptable(cmd, m["rc"]):
                res["status"] = "not available" if cmd.kind == "subject" and not res["runs"] else "error"
                res["note"] = f"exit {m['rc']}: {m['stderr'].splitlines()[-1] if m['stderr'] else ''}"[:300]
                log(f"  {name} {cmd.key}: {res['status']} ({res['note']})")
                continue
            if m["rc"]:
                res["note"] = f"exit {m['rc']} (problems reported): {m['stderr'].splitlines()[-1][:200] if m['stderr'] else ''}"
            m.pop("stderr")
            res["runs"].append(m)
            log(f"  {name} run {r + 1}/{runs} {cmd.key:15} {m['wall']:8.2f} s wall {m['cpu']:8.2f} s cpu "
                f"{m['rss_mb']:7.1f} MB")
    for res in results.values():
        summarise(res)
    ref = results.get(REFERENCE_FOR[suffix(name)])
    for res in results.values():
        if res["kind"] == "subject" and res.get("wall") and ref and ref.get("wall"):
            res["ratio"] = round(res["wall"]["median"] / ref["wall"]["median"], 3)
    return results


def summarise(res: dict) -> None:
    runs = res["runs"]
    if not runs:
        return
    for k in ("wall", "cpu"):
        vals = [m[k] for m in runs]
        res[k] = {"median": round(statistics.median(vals), 3), "min": min(vals), "max": max(vals)}
    res["rss_mb"] = {"median": round(statistics.median(m["rss_mb"] for m in runs), 1),
                     "max": max(m["rss_mb"] for m in runs)}
    if all("floor" in m for m in runs):  # the work alone, as floors.py timed it
        res["floor"] = {k: round(statistics.median(m["floor"][k] for m in runs), 3) for k in ("wall", "cpu")}
        res["floor"].update({k: v for k, v in runs[0]["floor"].items() if k not in ("wall", "cpu")})


# ============================================================================ goals


@dataclass(frozen=True)
class Goal:
    id: str
    text: str
    input: str
    subject: str
    baseline: str  # command key, or "" for the RSS limit
    limit: float
    growth_from: str = ""  # another input: the subject's growth from it (wall, or RSS when baseline is "rss")


ISSUE19_SUBJECTS = ("list", "list-json", "dir", "report")


def goals_for(inputs: list[str]) -> list[Goal]:
    goals = [
        Goal("G1", "convert dir on the big .tar.gz <= 0.5 x gzip -dc", "big.tar.gz", "dir", "gzip", 0.5),
        Goal("G2", "convert dir on the big .tar <= 1.5 x openssl dgst -sha256", "big.tar", "dir", "openssl", 1.5),
        Goal("G3", "convert dir on the big .tar.zst <= 1.3 x zstd -dc | openssl dgst -sha256", "big.tar.zst",
             "dir", "zstd-openssl", 1.3),
        Goal("G9", "convert dir on the big .tar.xz <= 1.1 x xz -dc", "big.tar.xz", "dir", "xz-dc", 1.1),
        Goal("G9", "convert dir on the big .tar.bz2 <= 1.1 x bzip2 -dc", "big.tar.bz2", "dir", "bzip2-dc", 1.1),
    ]
    for name in inputs:
        goals.append(Goal("G4", f"list no slower than convert dir on {name}", name, "list", "dir", 1.0))
    for name in inputs:
        goals.append(Goal("G5", f"convert oci within 10 % of dir on {name}", name, "oci", "dir", 1.1))
    for name in inputs:
        goals.append(Goal("G6", f"convert docker-archive <= 2 x dir on {name}", name, "docker-archive", "dir", 2.0))
    goals += [
        Goal("G7", "tags archive: list <= 1 x gzip -dc", "tags.tar.gz", "list", "gzip", 1.0),
        Goal("G7", "tags archive: convert dir <= 2 x gzip -dc", "tags.tar.gz", "dir", "gzip", 2.0),
    ]
    for name in inputs:
        for subject in SUBJECTS:
            goals.append(Goal("G8", f"peak RSS of {subject} on {name} <= {RSS_LIMIT_MB} MB", name, subject, "",
                              RSS_LIMIT_MB))
    return goals + issue19_goals()


def issue19_goals() -> list[Goal]:
    big, small = "tags50k.tar.gz", "tags.tar.gz"
    goals = [Goal("G9", f"peak RSS of {s} on {big} <= {150 if s != 'list' else 100} MB", big, s, "",
                  150 if s != "list" else 100) for s in ISSUE19_SUBJECTS]
    goals += [Goal("G10", f"{big}: list <= 1.5 x tar -tzf", big, "list", "tar-t", 1.5),
              Goal("G10", f"{big}: convert dir <= 4 x tar -tzf", big, "dir", "tar-t", 4.0)]
    for s in ("tar-t", "gzip", *ISSUE19_SUBJECTS):
        goals.append(Goal("G11", f"{s}: wall time from {small} to {big} grows <= 11 x", big, s, "wall", 11.0, small))
        if s in ISSUE19_SUBJECTS:
            goals.append(Goal("G11", f"{s}: peak RSS from {small} to {big} grows <= 2 x", big, s, "rss", 2.0, small))
    return goals


def check(goal: Goal, results: dict) -> dict:
    out = {"id": goal.id, "text": goal.text, "input": goal.input, "subject": goal.subject, "limit": goal.limit}
    res = results.get(goal.input, {})
    if goal.growth_from:
        return check_growth(goal, out, res.get(goal.subject), results.get(goal.growth_from, {}).get(goal.subject))
    subj, base = res.get(goal.subject), res.get(goal.baseline) if goal.baseline else None
    if subj is None or (goal.baseline and base is None):
        return {**out, "status": "NOT RUN", "value": None}
    if not subj.get("runs"):
        return {**out, "status": "N/A", "value": None, "note": f"{goal.subject}: {subj['status']}"}
    if goal.baseline:
        if not base.get("runs"):
            return {**out, "status": "N/A", "value": None, "note": f"{goal.baseline}: {base['status']}"}
        value = subj["wall"]["median"] / base["wall"]["median"]
    else:
        value = subj["rss_mb"]["max"]
    return {**out, "value": round(value, 3), "status": "PASS" if value <= goal.limit else "FAIL"}


def check_growth(goal: Goal, out: dict, subj: dict | None, before: dict | None) -> dict:
    if subj is None or before is None:
        return {**out, "status": "NOT RUN", "value": None}
    if not subj.get("runs") or not before.get("runs"):
        return {**out, "status": "N/A", "value": None, "note": f"{goal.subject}: not measured on both inputs"}
    if goal.baseline == "rss":
        value = subj["rss_mb"]["max"] / before["rss_mb"]["max"]
    else:
        value = subj["wall"]["median"] / before["wall"]["median"]
    return {**out, "value": round(value, 3), "status": "PASS" if value <= goal.limit else "FAIL"}


# ============================================================================ floors


FLOOR_RESULT = "floor.json"  # what floors.py leaves in its OUT: the work's own times


def layer_store(profile_dir: Path, big_tar: Path) -> Path:
    """The verified blobs of the big archive, as files (what docker-archive decodes), made once."""
    store = profile_dir / "layer-store"
    if (store / ".done").exists():
        return store
    log("extracting the big archive's blobs for floors.py (once)")
    shutil.rmtree(store, ignore_errors=True)
    tmp = profile_dir / "layer-store.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "regcarve", "convert", "--format", "dir", "-q", "-o", str(tmp),
                    str(big_tar)], check=True, capture_output=True, cwd=REPO_ROOT)
    (tmp / ".regcarve" / "blobs" / "sha256").rename(store)
    shutil.rmtree(tmp)
    (store / ".done").touch()
    return store


def floor_commands(name: str, inputs: dict, profile_dir: Path) -> dict[str, list[str]]:
    """floors.py's arguments for the goals this input has a floor for."""
    if name.startswith("big."):
        return {"floor-layers": ["layers", str(layer_store(profile_dir, REPO_ROOT / inputs["big.tar"]["path"])),
                                 "{OUT}"]}
    if name.startswith("tags."):
        return {"floor-folders": ["folders", str(inputs[name]["tags"]), "{OUT}"]}
    if name.startswith("tags50k."):  # what `dir` writes per tag of it: config, 3 layers, version, manifest.json
        return {"floor-tree": ["tree", str(inputs[name]["tags"]), str(TAGS50K_FILES_PER_TAG), "{OUT}"]}
    return {}


def compute_floors(results: dict) -> dict:
    """What G5 and G6 are up against on this machine: the least `oci` and `docker-archive` could
    take, from the medians of the same rounds (see benchmarks/README.md, Floors)."""
    floors: dict[str, dict] = {}
    cores = os.cpu_count() or 1
    for name, res in results.items():
        def has(*keys: str) -> bool:
            return all(res.get(k, {}).get("runs") for k in keys)

        if has("list", "dir", "docker-archive", "floor-layers"):
            work, list_cpu, dir_wall = res["floor-layers"]["floor"], res["list"]["cpu"]["median"], res["dir"]["wall"]["median"]
            wall = (list_cpu + work["cpu"]) / cores
            floors[f"G6 {name}"] = {"goal": "G6", "input": name, "cores": cores, "list_cpu": list_cpu,
                                    "layer_cpu": work["cpu"], "layers": work["layers"],
                                    "layer_bytes_out": work["bytes_out"], "floor_wall": round(wall, 3),
                                    "dir_wall": dir_wall, "floor_ratio": round(wall / dir_wall, 3)}
        if has("dir", "oci", "floor-folders"):
            work, dir_wall = res["floor-folders"]["floor"], res["dir"]["wall"]["median"]
            floors[f"G5 {name}"] = {"goal": "G5", "input": name, "tags": work["tags"], "extra_wall": work["wall"],
                                    "dir_wall": dir_wall, "floor_ratio": round((dir_wall + work["wall"]) / dir_wall, 3)}
        if has("tar-t", "list", "dir", "floor-tree"):
            # `dir` reads as `list` does, then writes the tree; it cannot write a tag before every blob is read
            work, list_wall, tar_wall = res["floor-tree"]["floor"], res["list"]["wall"]["median"], res["tar-t"]["wall"]["median"]
            floors[f"G10 {name} dir"] = {"goal": "G10", "input": name, "subject": "dir", "list_wall": list_wall,
                                         "tree_wall": work["wall"], "tree_cpu": work["cpu"], "tar_t_wall": tar_wall,
                                         "floor_ratio": round((list_wall + work["wall"]) / tar_wall, 3)}
    return floors


def floor_notes(goals: list[dict], floors: dict) -> None:
    """Put each measured floor beside its goal."""
    for g in goals:
        f = floors.get(f"{g['id']} {g['input']}") or floors.get(f"{g['id']} {g['input']} {g['subject']}")
        if f is not None and g["status"] in ("PASS", "FAIL"):
            g["floor"] = f["floor_ratio"]
            if g["status"] == "FAIL":
                reach = "out of reach here" if f["floor_ratio"] > g["limit"] else "within reach"
                g["note"] = f"least possible here {f['floor_ratio']:.2f}×: {reach}"


# ============================================================================ machine and report


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    libs = {}
    for dist in ("regcarve", "zlib-ng", "zstandard", "isal", "click", "tqdm", "cryptography"):
        try:
            libs[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    tools = {}
    for tool, argv in {"gzip": ["gzip", "--version"], "tar": ["tar", "--version"], "zstd": ["zstd", "--version"],
                       "openssl": ["openssl", "version"], "pigz": ["pigz", "--version"],
                       "xz": ["xz", "--version"], "bzip2": ["bzip2", "--help"], "lz4": ["lz4", "--version"],
                       "skopeo": ["skopeo", "--version"], "umoci": ["umoci", "--version"],
                       "docker-registry": ["docker-registry", "--version"]}.items():
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            tools[tool] = (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return {"cpu": model.group(1) if model else platform.processor(), "filesystem": filesystem_info(CACHE),
            "sha_ni": bool(flags and "sha_ni" in flags.group(1).split()),
            "cores": os.cpu_count(), "ram_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
            "kernel": platform.release(), "python": platform.python_version(), "libraries": libs, "tools": tools}


def filesystem_info(path: Path) -> dict:
    """Type and options of the filesystem OUT is written to, and for ext4 whether it has a journal."""
    p = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "--target", str(path)],
                       capture_output=True, text=True)
    fields = p.stdout.split()
    if len(fields) != 3:
        return {}
    out = {"source": fields[0], "type": fields[1], "options": fields[2]}
    task = Path("/sys/fs/ext4") / os.path.basename(fields[0]) / "journal_task"
    if fields[1] == "ext4" and task.exists():
        out["journal"] = task.read_text().strip() != "<none>"
    return out


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_src": git("status", "--porcelain", "--", "src").splitlines()}


def fmt_range(stat: dict | None) -> str:
    if not stat:
        return "—"
    return f"{stat['median']:.2f} ({stat['min']:.2f}–{stat['max']:.2f})"


def fs_text(fs: dict) -> str:
    if not fs:
        return "filesystem unknown"
    journal = {True: "", False: " without journal"}.get(fs.get("journal"), "")
    return f"OUT on {fs['type']}{journal}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: dict) -> str:
    m = report["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    lines = [
        f"### Results ({report['mode']} run, {report['started'][:16].replace('T', ' ')} UTC, "
        f"{report['runs']} runs each)",
        "",
        f"Machine: {m['cpu']} ({'SHA-NI' if m['sha_ni'] else 'no SHA-NI'}), {m['cores']} cores, {m['ram_gb']} GB RAM, "
        f"Linux {m['kernel']}, {fs_text(m.get('filesystem', {}))}, Python {m['python']}; {libs}. "
        f"regcarve at {report['git']['commit']}"
        + (f" with uncommitted changes in {len(report['git']['uncommitted_src'])} src files"
           if report["git"]["uncommitted_src"] else "")
        + f". Load average at start {' / '.join(f'{x:.2f}' for x in report['load_average']['start'])}, "
          f"at end {' / '.join(f'{x:.2f}' for x in report['load_average']['end'])} (shared machine).",
        "",
        "Times in seconds: median (min–max). CPU = user+sys of the child and its children. "
        "RSS = peak resident set (ru_maxrss), largest over the runs, MB = 10^6 bytes; "
        f"values near {report['rss_floor_mb']:.0f} MB are the floor of the helper that starts the commands. "
        "× ref = median wall time over the input's reference (first row of each input).",
        "",
        "| input | command | wall s | CPU s | peak RSS MB | × ref |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in report["results"].items():
        info = report["inputs"][name]
        label = f"{info['description']}: {info['bytes'] / MB:,.0f} MB, {info['tags']} tags"
        for key, r in res.items():
            cmd = cell(f"`{r['command']}`")
            if not r.get("runs"):
                lines.append(f"| {label} | {cmd} | {r['status']} | | | |")
            else:
                ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
                lines.append(f"| {label} | {cmd} | {fmt_range(r['wall'])} | {fmt_range(r['cpu'])} | "
                             f"{r['rss_mb']['max']:.0f} | {ratio} |")
            label = ""
    lines += ["", "| goal | measured | limit | result |", "|---|---|---|---|"]
    for g in report["goals"]:
        if g["status"] == "NOT RUN":
            continue
        in_mb = g["id"] in ("G8", "G9")
        value = "—" if g["value"] is None else (f"{g['value']:.0f} MB" if in_mb else f"{g['value']:.2f}×")
        limit = f"{g['limit']:.0f} MB" if in_mb else f"{g['limit']}×"
        note = f" ({g['note']})" if g.get("note") else ""
        lines.append(f"| {g['id']}: {cell(g['text'])} | {value} | {limit} | **{g['status']}**{cell(note)} |")
    lines += floors_markdown(report)
    return "\n".join(lines) + "\n"


def floors_markdown(report: dict) -> list[str]:
    floors = report.get("floors") or {}
    if not floors:
        return []
    measured = {f"{g['id']} {g['input']}": g for g in report["goals"]}
    measured.update({f"{g['id']} {g['input']} {g['subject']}": g for g in report["goals"]})
    lines = ["", "The least possible here (`benchmarks/floors.py`, medians of the same rounds): only the work a "
             "format must add to `dir`, done by the fastest means regcarve has (see benchmarks/README.md).", "",
             "| goal | the work the format adds | least possible | measured | limit |", "|---|---|---|---|---|"]
    for key, f in floors.items():
        g = measured.get(key, {})
        value = "—" if g.get("value") is None else f"{g['value']:.2f}×"
        if f["goal"] == "G6":
            work = (f"inflate and hash the {f['layers']} layers ({f['layer_bytes_out'] / MB:,.0f} MB out; writing them "
                    f"comes on top): {f['layer_cpu']:.2f} s CPU; with `list`'s {f['list_cpu']:.2f} s spread over "
                    f"{f['cores']} cores: {f['floor_wall']:.2f} s, against `dir`'s {f['dir_wall']:.2f} s")
        elif f["goal"] == "G10":
            work = (f"`list`'s {f['list_wall']:.2f} s (the read) and then the tree alone — a folder and "
                    f"{TAGS50K_FILES_PER_TAG} hard links per tag, in one thread: {f['tree_wall']:.2f} s — against "
                    f"`tar -tzf`'s {f['tar_t_wall']:.2f} s")
        else:
            work = (f"two more folders and an `index.json` for each of {f['tags']:,} tags, in one thread as both "
                    f"writers work: {f['extra_wall']:.2f} s, against `dir`'s {f['dir_wall']:.2f} s")
        lines.append(f"| {g.get('id', f['goal'])} on {f['input']} | {cell(work)} | {f['floor_ratio']:.2f}× | {value} | "
                     f"{g.get('limit', '')}× |")
    return lines


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(md: str) -> None:
    """The results between the markers of benchmarks/README.md and of the project's README.md."""
    for readme in (HERE / "README.md", REPO_ROOT / "README.md"):
        if not readme.exists():
            continue
        text = readme.read_text()
        if README_START in text and README_END in text:
            head, rest = text.split(README_START, 1)
            _, tail = rest.split(README_END, 1)
            readme.write_text(f"{head}{README_START}\n{md}{README_END}{tail}")


# ============================================================================ profiling


def profile_subject(spec: str, inputs: dict, rate: int = 500) -> None:
    """Run one subject once under py-spy (idle samples left out) and print, per thread, where
    the samples fall: own time per source line, and time per function including callees."""
    name, _, key = spec.partition(":")
    name = ALIASES.get(name, name)
    if name not in inputs or key not in SUBJECTS:
        raise SystemExit(f"--profile INPUT:SUBJECT, INPUT in {sorted(inputs)}, SUBJECT in {SUBJECTS}")
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    cmd = next(c for c in commands_for(name) if c.key == key)
    archive = REPO_ROOT / inputs[name]["path"]
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{name}-{key}.raw.tmp"
    scratch = CACHE / "profile"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    out = scratch / "out"
    argv = [str(archive) if a == "{A}" else a.replace("{OUT}", str(out)) for a in cmd.argv]
    t0 = time.perf_counter()
    subprocess.run(["py-spy", "record", "--threads", "--nonblocking", "-r", str(rate), "-f", "raw", "-o", str(raw),
                    "--", *argv], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    discard(scratch)
    threads: dict[str, tuple[Counter, Counter]] = {}
    names: dict[str, str] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        m = re.match(r"thread \((\d+)\)(?:: (.*))?", thread)
        tid = m.group(1) if m else thread
        if m and m.group(2):
            names[tid] = m.group(2)
        if not frames:
            continue
        own, incl = threads.setdefault(tid, (Counter(), Counter()))
        n = int(count)
        own[_frame(frames[-1])] += n
        for f in {_frame(f) for f in frames if "regcarve/" in f}:
            incl[f] += n
    print(f"\nprofile of `{cmd.display()}` on {name}: {wall:.2f} s under py-spy at {rate} Hz; "
          "samples of non-idle threads, in seconds")
    for tid, (own, incl) in sorted(threads.items(), key=lambda t: -sum(t[1][0].values())):
        total = sum(own.values())
        print(f"  thread {names.get(tid, tid)}: {total / rate:.2f} s busy")
        trunk = [f for f, n in incl.items() if n > 0.9 * total]  # main(), the CLI command, ...
        for title, counter in (("own time", own), ("including callees (regcarve functions)", incl)):
            print(f"    {title}:")
            for f, n in [(f, n) for f, n in counter.most_common() if f not in trunk or counter is own][:14]:
                print(f"      {n / rate:6.2f} s {100 * n / total:5.1f} %  {f}")


def _frame(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`."""
    m = re.fullmatch(r"(.*) \((?:.*/)?([^/]+?)(?::\d+)?\)", frame)
    return f"{m.group(1)} ({m.group(2)})" if m else frame


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~200 MB archive, 500 tags, 3 runs")
    ap.add_argument("--runs", type=int, help="runs of every command (default 5, --quick 3)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="restrict to inputs (big.tar.gz, big.tar, big.tar.zst, tags.tar.gz, tags50k.tar.gz or gz, tar, "
                         "zst, tags, tags50k; big.tar.xz, big.tar.bz2, big.tar.lz4 or xz, bz2, lz4 are measured only "
                         "when named) and/or commands (gzip, tar-x, openssl, zstd-openssl, xz-dc, bzip2-dc, lz4-dc, "
                         "list, dir, oci, docker-archive, floor-layers, floor-folders, floor-tree (tags50k), and for the tags archives "
                         "tar-t, list-json, report); "
                         "repeatable or comma-separated")
    ap.add_argument("--prepare-only", action="store_true", help="build the inputs, measure nothing")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the inputs even if cached")
    ap.add_argument("--mirror", help="Debian mirror for debootstrap (default: the one apt uses)")
    ap.add_argument("--profile", metavar="INPUT:SUBJECT", help="run one subject under py-spy and summarise")
    ap.add_argument("--baseline-src", metavar="DIR", help="also run every subject from this regcarve source tree "
                    "(e.g. `git archive main src` extracted), in the same rounds: KEY@baseline rows")
    args = ap.parse_args(argv)
    global BASELINE_SRC
    BASELINE_SRC = str(Path(args.baseline_src).resolve()) if args.baseline_src else ""
    profile = QUICK if args.quick else FULL
    runs = args.runs or profile.runs
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    CACHE.mkdir(exist_ok=True)
    if TRASH.exists():
        log("removing the trash of an interrupted run: file creation may be slow for the next minutes")
        empty_trash()
    only = {ALIASES.get(o, o) for arg in args.only for o in arg.split(",") if o}
    prepared = prepare(profile, args.mirror, args.rebuild, input_groups(profile, only),
                       derived=bool(only & set(DERIVED_INPUTS)))
    inputs = prepared["inputs"]
    log(f"inputs ready ({time.monotonic() - t0:.0f} s): "
        + ", ".join(f"{n} {i['bytes'] / MB:,.0f} MB" for n, i in inputs.items()))
    if args.profile:
        profile_subject(args.profile, inputs)
    if args.profile or args.prepare_only:
        empty_trash()
        return 0

    names = [n for n in ("big.tar.gz", "big.tar", "big.tar.zst", "tags.tar.gz", "tags50k.tar.gz", *DERIVED_INPUTS)
             if n in inputs]
    known_cmds = {"gzip", "tar-x", "tar-t", "openssl", "zstd-openssl", "xz-dc", "bzip2-dc", "lz4-dc", "list-json",
                  "report", *SUBJECTS, *FLOORS}
    unknown = only - set(names) - known_cmds
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))}")
    if only & set(names):
        names = [n for n in names if n in only]
    else:
        names = [n for n in names if n not in DERIVED_INPUTS]
    only_cmds = only & known_cmds
    only_cmds |= {f"{c}@baseline" for c in only_cmds}
    scratch = CACHE / "run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    results = {}
    t_measure = time.monotonic()
    launcher = Launcher()
    try:
        floor = max(launcher.run(["true"], scratch, scratch / "stderr")["maxrss_kb"] for _ in range(3)) * 1024 / MB
        for name in names:
            wanted = not only_cmds or bool(only_cmds & set(FLOORS))
            floors = floor_commands(name, inputs, CACHE / profile.name) if wanted else {}
            cmds = [c for c in commands_for(name, floors) if not only_cmds or c.key in only_cmds]
            log(f"measuring {name} ({inputs[name]['bytes'] / MB:,.0f} MB), load {os.getloadavg()[0]:.2f}")
            results[name] = measure_input(launcher, name, REPO_ROOT / inputs[name]["path"], cmds, runs, scratch)
    finally:
        launcher.close()
        shutil.rmtree(scratch, ignore_errors=True)
        empty_trash()
    report = {
        "schema": "regcarve-bench/1", "mode": profile.name if not only else f"{profile.name} (--only)",
        "started": started.isoformat(timespec="seconds"), "runs": runs,
        "seconds": {"total": round(time.monotonic() - t0, 1), "measuring": round(time.monotonic() - t_measure, 1)},
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": machine_info(), "git": git_state(), "rss_floor_mb": round(floor, 1),
        "inputs": {n: inputs[n] for n in names}, "build": prepared["build"], "results": results,
    }
    report["goals"] = [check(g, results) for g in goals_for(names)]
    report["floors"] = compute_floors(results)
    floor_notes(report["goals"], report["floors"])
    md = markdown(report)
    RESULTS.mkdir(exist_ok=True)
    stem = ("quick" if args.quick else "latest") if not only else "only"
    ext = ".tmp" if only else ""  # partial runs are not kept (git-ignored)
    (RESULTS / f"{stem}.json{ext}").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md{ext}").write_text(md)
    if stem == "latest":
        update_readme(md)
    print()
    print(md)
    for g in report["goals"]:
        if g["status"] != "NOT RUN":
            print(f"{g['status']:5} {g['id']} {g['text']}: {g['value']} (limit {g['limit']})")
    print(f"\nwrote {RESULTS / f'{stem}.json{ext}'} and .md; {time.monotonic() - t0:.0f} s in all")
    return 1 if any(g["status"] == "FAIL" for g in report["goals"]) else 0


if __name__ == "__main__":
    sys.exit(main())

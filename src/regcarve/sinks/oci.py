"""OCI image layouts: one per tag at OUT/<repository path>/_tags/<tag>/ (default), or one shared at OUT.

A layout is `oci-layout`, `index.json` and `blobs/sha256/<hex>`. Manifests keep their stored bytes
and media types — Docker manifests are never converted — so a push preserves every digest. A
multi-arch tag's descriptor is its index; the children and all their blobs sit in `blobs/`.

Per tag (`--oci-layout per-tag`): `index.json` holds exactly one descriptor, annotated with
`org.opencontainers.image.ref.name` = the tag and `io.containerd.image.name` = `repo:tag`. Every
skopeo reads such a layout as plain `oci:PATH`; skopeo < 1.19 cannot select a Docker-typed
manifest by name, and skopeo ends PATH at the first ':', so no layout path contains one.
`tagged_path` keeps layouts apart however repositories nest (`foo:latest` → `foo/_tags/latest`,
`foo/latest:1` → `foo/latest/_tags/1`).

Shared (`--oci-layout shared`): OUT itself is one layout, each blob once, one descriptor per tag
whose `ref.name` is `repo:tag`; `index.json` is written once, after every image (in `finish`), and
names exactly the images this run wrote (a run that writes none leaves an earlier layout alone).
skopeo < 1.19 selects only OCI-typed manifests from it by name; the per-tag form is the portable one.

`index.json` is always written last, atomically: it is the commit point. A rerun removes it
first, so an interrupted run never leaves a layout that names blobs it does not hold.
Blobs are hardlinks into regcarve's store, so tags sharing layers cost their bytes once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from regcarve.plan import schema1
from regcarve.model.catalog import ImageKind
from regcarve.model.manifests import DOCKER_SCHEMA1_SIGNED, OCI_INDEX
from regcarve.plan.select import SKOPEO_NESTED_INDEX, Job, NotSelected, has_nested_index
from regcarve.sinks.fsout import (
    WRITTEN,
    Context,
    Result,
    WriteError,
    atomic_write,
    ensure_dir,
    remove_path,
    tagged_path,
)
from regcarve.sinks.dirfmt import blob_files

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
SHARED_PATH = "."

_TMP = re.compile(r"\..+\.tmp")
_HEX = re.compile(r"[a-f0-9]{64}")

FOREIGN_NOTE = (
    "{n} image(s) have foreign layers whose blobs are not in the archive ({refs}); their layouts omit them. "
    "skopeo copy to a registry skips foreign layers (digests kept), but any other reader of oci: fetches "
    "their URLs, which fails without network access"
)


class OciWriter:
    format = "oci"
    keeps_store_links = True

    def __init__(self, layout: str | None = None):
        """`layout` is "per-tag" or "shared"; None means: as ctx.options.oci_layout says."""
        self.layout = layout
        self._shared: dict[str, dict] = {}  # ref.name → descriptor, for the shared index.json
        self._shared_blobs: set[str] = set()  # hex of every blob placed in the shared layout
        self._shared_ready = False
        self._foreign_refs: list[str] = []

    def is_shared(self, ctx: Context | None = None) -> bool:
        layout = self.layout or (ctx.options.oci_layout if ctx else "per-tag")
        return layout == "shared"

    def relpath(self, job: Job) -> str:
        if self.layout == "shared":
            return SHARED_PATH
        return tagged_path(job.image.repository, job.image.tag)

    # --- writing ------------------------------------------------------------------------------
    def prepare(self, jobs: list[Job], ctx: Context) -> None:
        pass

    def write(self, job: Job, ctx: Context) -> int:
        if has_nested_index(job):
            raise NotSelected(SKOPEO_NESTED_INDEX)
        if job.image.tag is None:
            raise WriteError("untagged revisions have no name in an OCI layout")
        digests = layout_blobs(job, ctx)
        manifest = Manifest.of(job)
        shared = self.is_shared(ctx)
        rel = "" if shared else tagged_path(job.image.repository, job.image.tag)
        dest, fresh = ctx.make_dir(rel) if rel else (ctx.out, False)
        if shared and not self._shared_ready:
            # OUT may hold anything else (the store, other formats): only blobs/ must be ours
            _clear(ctx.out, None, ctx.options.force, whole_folder=False)
            self._shared_ready = True
        elif not shared and not fresh:
            _clear(dest, {d.removeprefix("sha256:") for d in digests + [manifest.digest]}, ctx.options.force,
                   whole_folder=True)
        placed = _place(ctx, rel, digests, fresh)
        if manifest.signed is not None:
            atomic_write(dest / "blobs" / "sha256" / manifest.digest.removeprefix("sha256:"), manifest.signed)
        self._foreign(job, ctx)
        entry = manifest.descriptor(job, job.ref if shared else job.image.tag)
        if shared:
            self._shared_blobs.update(d.removeprefix("sha256:") for d in digests + [manifest.digest])
            self._shared[job.ref] = entry
        else:
            ctx.placer.place(ctx.shared_file("oci-layout", LAYOUT), dest / "oci-layout", fresh)
            atomic_write(dest / "index.json", _index([entry]), fresh)
        return placed + manifest.size

    def _foreign(self, job: Job, ctx: Context) -> None:
        if any(d.is_foreign and not ctx.catalog.inventory.has_blob(d.digest)
               for d in job.image.blob_descriptors(job.nodes)):
            self._foreign_refs.append(job.ref)

    def finish(self, results: list[Result], ctx: Context) -> None:
        if self._foreign_refs:
            refs = ", ".join(self._foreign_refs[:3]) + (", …" if len(self._foreign_refs) > 3 else "")
            ctx.notes.append(FOREIGN_NOTE.format(n=len(self._foreign_refs), refs=refs))
        if not self.is_shared(ctx):
            return
        for r in results:
            if r.path:
                r.path = SHARED_PATH
        if not self._shared_ready:  # no image reached the layout: an earlier run's stays as it was
            return
        _clear(ctx.out, self._shared_blobs, True, whole_folder=False)  # drop blobs an earlier run left
        atomic_write(ctx.out / "oci-layout", LAYOUT)
        atomic_write(ctx.out / "index.json", _index([self._shared[ref] for ref in sorted(self._shared)]))

    # --- the summary --------------------------------------------------------------------------
    def push_hint(self, results: list[Result], ctx: Context) -> list[str]:
        written = [r for r in results if r.status == WRITTEN]
        if not written:
            return []
        out = os.path.abspath(ctx.out)
        q = shlex.quote(out)
        lines: list[str] = []
        if self.is_shared(ctx):
            first = written[0].ref
            lines += [
                "Push one image (skopeo >= 1.19 for Docker-typed manifests; older skopeo finds only OCI-typed "
                "ones by name — use the default --oci-layout per-tag for those):",
                f"  skopeo copy --all --preserve-digests oci:{out}:{first} docker://<registry>/{first}",
                "Push every image (bash):",
                f"  sed -n 's/^ *\"{re.escape(REF_NAME)}\": \"\\(.*\\)\"$/\\1/p' {q}/index.json | while read -r ref; do "
                f"skopeo copy --all --preserve-digests \"oci:{q}:$ref\" \"docker://<registry>/$ref\"; done",
            ]
        else:
            r = written[0]
            repo, tag = r.ref.rsplit(":", 1)
            lines += [
                "Push one image, digests unchanged:",
                f"  skopeo copy --all --preserve-digests oci:{out}/{r.path} docker://<registry>/{repo}:{tag}",
                "Push every image (bash; run from anywhere):",
                f"  (cd {q} && find . -path ./.regcarve -prune -o -path '*/_tags/*/index.json' -print "
                "| sed 's|^\\./||; s|/index\\.json$||' | while read -r d; do "
                "skopeo copy --all --preserve-digests \"oci:$d\" \"docker://<registry>/${d%/_tags/*}:${d##*/_tags/}\"; "
                "done)",
            ]
        if ":" in out:
            lines.append(f"warning: OUT ({out}) contains ':', where skopeo ends an oci: path; cd into OUT and give "
                         "paths relative to it")
        return lines


def layout_blobs(job: Job, ctx: Context) -> list[str]:
    """The store blobs of a tag's layout: an index's children, configs and layers — and the tag's own
    manifest, unless it is schema1 (see Manifest).

    A foreign layer whose blob is absent is left out, as for `dir`: the layout spec allows missing
    blobs, and skopeo copying to a registry skips foreign layers without reading them.
    """
    own = [] if job.root.kind is ImageKind.SCHEMA1 else [job.root.digest]
    return own + sorted(set(blob_files(job, ctx).values()))


@dataclass
class Manifest:
    """The manifest a tag's descriptor names.

    Stored bytes as they are, except schema1: the registry stores the unsigned payload but accepts
    only signed manifests, so the layout holds it signed (as `dir` does; the registry's digest is the
    payload's, and a push keeps it). skopeo 1.9.3 pushes that with --preserve-digests — to the same
    repository path and tag only, as the payload embeds them.
    """

    media_type: str
    digest: str
    size: int
    signed: bytes | None = None  # schema1 only: bytes to write as the manifest blob

    @classmethod
    def of(cls, job: Job) -> "Manifest":
        if job.root.kind is not ImageKind.SCHEMA1:
            return cls(job.media_type, job.digest, job.root.size)
        signed = schema1.for_push(job.root.raw, job.root.signatures)
        return cls(DOCKER_SCHEMA1_SIGNED, "sha256:" + hashlib.sha256(signed).hexdigest(), len(signed), signed)

    def descriptor(self, job: Job, ref_name: str) -> dict:
        """The index.json entry of a tag: the manifest's exact media type, digest and size."""
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if job.platform_choice and job.root.platform:
            p = job.root.platform
            out["platform"] = {"architecture": p.architecture, "os": p.os} | (
                {"variant": p.variant} if p.variant else {})
        out["annotations"] = {CONTAINERD_NAME: job.ref, REF_NAME: ref_name}
        return out


def _index(descriptors: list[dict]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"  # compact: the C encoder


def _place(ctx: Context, rel: str, digests: list[str], fresh: bool) -> int:
    """Hardlink the blobs into the layout; `fresh`: the layout folder was just made, so it is empty."""
    if fresh:
        ctx.make_dir(f"{rel}/blobs")
        blob_dir = str(ctx.make_dir(f"{rel}/blobs/sha256")[0])
    else:
        blob_dir = str(ensure_dir(ctx.out, f"{rel}/blobs/sha256" if rel else "blobs/sha256"))
    store, blobs = str(ctx.store.blobs), ctx.catalog.inventory.blobs
    placed = 0
    for digest in digests:
        src = os.path.join(store, digest[7:])
        target = os.path.join(blob_dir, digest[7:])
        if fresh or not _same_file(src, target):
            ctx.placer.place(src, target, fresh)
        placed += blobs[digest].size
    return placed


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.stat(a), os.lstat(b))
    except FileNotFoundError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _clear(dest: Path, wanted: set[str] | None, force: bool, whole_folder: bool) -> None:
    """Make a layout folder hold only what regcarve writes: refuse unknown files without --force.

    `index.json` goes first, so the folder stops being a layout until this run commits it again.
    With `wanted` (hex digests), blobs outside it are removed; `whole_folder` also checks the
    folder's own entries (a per-tag layout), not only `blobs/` (the shared layout at OUT).
    """
    blobs, sha = dest / "blobs", dest / "blobs" / "sha256"
    unknown: list[Path] = []
    leftovers: list[Path] = []  # temporary files of an interrupted run
    if whole_folder:
        for n in os.listdir(dest):
            if _TMP.fullmatch(n):
                leftovers.append(dest / n)
            elif n not in ("oci-layout", "index.json", "blobs"):
                unknown.append(dest / n)
    if os.path.lexists(blobs) and not _is_dir(blobs):
        unknown.append(blobs)
    elif _is_dir(blobs):
        unknown += [blobs / n for n in os.listdir(blobs) if n != "sha256"]
        if os.path.lexists(sha) and not _is_dir(sha):
            unknown.append(sha)
        elif _is_dir(sha):
            unknown += [sha / n for n in os.listdir(sha) if not (_HEX.fullmatch(n) or _TMP.fullmatch(n))]
    if unknown and not force:
        raise WriteError(f"{dest} holds files regcarve did not write ({unknown[0]}, …); use --force to replace")
    remove_path(dest / "index.json")
    for path in unknown + leftovers:
        remove_path(path)
    if wanted is not None and _is_dir(sha):
        for name in os.listdir(sha):
            if name not in wanted:
                remove_path(sha / name)

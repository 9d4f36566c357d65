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

import json
import os
import re
import shlex
import stat
from pathlib import Path

from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import OCI_INDEX
from regcarve.model.names import SHA256_HEX, hex_of
from regcarve.safefiles import atomic_write, is_temp, remove_path
from regcarve.sinks import base
from regcarve.sinks.base import ImageFailed, ImageOut, Options, Result, Status
from regcarve.sinks.fsout import FolderSink, OutFolder, tagged_path

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
SHARED_PATH = "."

FOREIGN_NOTE = (
    "{n} image(s) have foreign layers whose blobs are not in the archive ({refs}); their layouts omit them. "
    "skopeo copy to a registry skips foreign layers (digests kept), but any other reader of oci: fetches "
    "their URLs, which fails without network access"
)


class OciSink(FolderSink):
    format = "oci"
    capabilities = base.Capabilities(refuses={base.Refusal.NESTED_INDEX: base.SKOPEO_NESTED_INDEX})

    def __init__(self, out: OutFolder, blobs: BlobSource, options: Options):
        super().__init__(out, blobs, options)
        self.shared = options.oci_layout == "shared"
        self._shared: dict[str, dict] = {}  # ref.name → descriptor, for the shared index.json
        self._shared_blobs: set[str] = set()  # hex of every blob placed in the shared layout
        self._shared_ready = False
        self._foreign_refs: list[str] = []

    def relpath(self, repository: str, tag: str) -> str:
        return SHARED_PATH if self.shared else tagged_path(repository, tag)

    # --- writing ------------------------------------------------------------------------------
    def write(self, image: ImageOut) -> None:
        digests = layout_blobs(image)
        manifest = image.manifest
        digest = manifest.content_digest
        rel = "" if self.shared else tagged_path(image.repository, image.tag)
        dest, fresh = self.out.make_dir(rel) if rel else (self.out.root, False)
        if self.shared and not self._shared_ready:
            # OUT may hold anything else (the store, other formats): only blobs/ must be ours
            _clear(self.out.root, None, self.options.force, whole_folder=False)
            self._shared_ready = True
        elif not self.shared and not fresh:
            _clear(dest, {hex_of(d) for d in digests + [digest]}, self.options.force, whole_folder=True)
        self._place(rel, digests, fresh)
        if not manifest.stored:
            atomic_write(dest / "blobs" / "sha256" / hex_of(digest), manifest.raw)
        if image.absent_foreign:
            self._foreign_refs.append(image.ref)
        entry = descriptor(image, image.ref if self.shared else image.tag)
        if self.shared:
            self._shared_blobs.update(hex_of(d) for d in digests + [digest])
            self._shared[image.ref] = entry
        else:
            self.out.placer.place(self.out.shared_file("oci-layout", LAYOUT), dest / "oci-layout", fresh)
            atomic_write(dest / "index.json", _index([entry]), fresh)

    def _place(self, rel: str, digests: list[str], fresh: bool) -> None:
        """Hardlink the blobs into the layout; `fresh`: the layout folder was just made, so it is empty."""
        if fresh:
            self.out.make_dir(f"{rel}/blobs")
            blob_dir = str(self.out.make_dir(f"{rel}/blobs/sha256")[0])
        else:
            blob_dir = str(self.out.ensure_dir(f"{rel}/blobs/sha256" if rel else "blobs/sha256"))
        for digest in digests:
            src = self.blobs.local_path(digest)
            target = os.path.join(blob_dir, hex_of(digest))
            if fresh or not _same_file(src, target):
                self.out.placer.place(src, target, fresh)

    def finish(self, results: list[Result]) -> None:
        if self._foreign_refs:
            refs = ", ".join(self._foreign_refs[:3]) + (", …" if len(self._foreign_refs) > 3 else "")
            self.notes.append(FOREIGN_NOTE.format(n=len(self._foreign_refs), refs=refs))
        if not self.shared or not self._shared_ready:  # no image reached the layout: an earlier run's stays
            return
        root = self.out.root
        _clear(root, self._shared_blobs, True, whole_folder=False)  # drop blobs an earlier run left
        atomic_write(root / "oci-layout", LAYOUT)
        atomic_write(root / "index.json", _index([self._shared[ref] for ref in sorted(self._shared)]))

    # --- the summary --------------------------------------------------------------------------
    def hint(self, results: list[Result]) -> list[str]:
        written = [r for r in results if r.status is Status.WRITTEN]
        if not written:
            return []
        out = os.path.abspath(self.out.root)
        q = shlex.quote(out)
        lines: list[str] = []
        if self.shared:
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
        lines += self.skopeo_digest_warning(written, "regcarve push <the source> <registry>[/prefix] {images}",
                                            out_names=False)
        if ":" in out:
            lines.append(f"warning: OUT ({out}) contains ':', where skopeo ends an oci: path; cd into OUT and give "
                         "paths relative to it")
        return lines


def layout_blobs(image: ImageOut) -> list[str]:
    """The stored blobs of a tag's layout: an index's children, configs and layers — and the tag's own
    manifest, unless it goes out transformed (a signed schema1 manifest is written, not linked).

    Manifests keep their stored bytes otherwise. Schema1 is held signed, as `dir` holds it (the registry's
    digest is the payload's, and a push keeps it); skopeo 1.9.3 pushes that with --preserve-digests — to
    the same repository path and tag only, as the payload embeds them. A foreign layer whose blob is absent
    is left out, as for `dir`: the layout spec allows missing blobs, and skopeo copying to a registry skips
    foreign layers without reading them.
    """
    own = [image.manifest.digest] if image.manifest.stored else []
    return own + sorted({m.digest for m in image.children} | {d.digest for d in image.blobs})


def descriptor(image: ImageOut, ref_name: str) -> dict:
    """The index.json entry of a tag: the manifest's exact media type, digest and size."""
    manifest = image.manifest
    out: dict = {"mediaType": manifest.media_type, "digest": manifest.content_digest, "size": manifest.size}
    if image.platform_choice and manifest.platform:
        p = manifest.platform
        out["platform"] = {"architecture": p.architecture, "os": p.os} | ({"variant": p.variant} if p.variant else {})
    out["annotations"] = {CONTAINERD_NAME: image.ref, REF_NAME: ref_name}
    return out


def _index(descriptors: list[dict]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"  # compact: the C encoder


def _same_file(a: str, b: str) -> bool:
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
            if is_temp(n):
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
            unknown += [sha / n for n in os.listdir(sha) if not (SHA256_HEX.fullmatch(n) or is_temp(n))]
    if unknown and not force:
        raise ImageFailed(f"{dest} holds files regcarve did not write ({unknown[0]}, …); use --force to replace")
    remove_path(dest / "index.json")
    for path in unknown + leftovers:
        remove_path(path)
    if wanted is not None and _is_dir(sha):
        for name in os.listdir(sha):
            if name not in wanted:
                remove_path(sha / name)

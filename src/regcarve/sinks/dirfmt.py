"""skopeo `dir:` trees: OUT/<repository path>:<tag>/ with manifest.json, one file per blob, and version.

`manifest.json` is placed last: a folder is an image to `skopeo sync --src dir` only once it has one,
so an interrupted run never leaves a half image that sync would pick up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from regcarve.plan import schema1
from regcarve.model.catalog import ImageKind
from regcarve.plan.select import SKOPEO_NESTED_INDEX, Job, NotSelected, has_nested_index
from regcarve.sinks.fsout import WRITTEN, Context, Result, WriteError, atomic_write, remove_path

VERSION = b"Directory Transport Version: 1.1\n"
_OURS = re.compile(r"[a-f0-9]{64}(\.manifest\.json)?|manifest\.json|version|\..+\.tmp")


class DirWriter:
    format = "dir"
    keeps_store_links = True

    def relpath(self, job: Job) -> str:
        return f"{job.image.repository}:{job.image.tag}"

    def prepare(self, jobs: list[Job], ctx: Context) -> None:
        pass

    def write(self, job: Job, ctx: Context) -> int:
        if has_nested_index(job):
            raise NotSelected(SKOPEO_NESTED_INDEX)
        signed = None
        if job.root.kind is ImageKind.SCHEMA1:
            try:
                signed = schema1.for_push(job.root.raw, job.root.signatures)
            except schema1.Schema1Error as e:
                raise WriteError(f"schema1 manifest {job.root.digest} cannot be signed for push: {e}") from None
        dest, fresh = ctx.make_dir(self.relpath(job))
        wanted = blob_files(job, ctx)
        if not fresh:
            self._clear(dest, wanted, ctx.options.force)
        folder, store, blobs = str(dest), str(ctx.store.blobs), ctx.catalog.inventory.blobs
        placed = 0
        for name, digest in wanted.items():
            ctx.placer.place(os.path.join(store, digest[7:]), os.path.join(folder, name), fresh)
            placed += blobs[digest].size
        ctx.placer.place(ctx.shared_file("version", VERSION), os.path.join(folder, "version"), fresh)
        if signed is not None:
            atomic_write(dest / "manifest.json", signed)
        else:
            ctx.placer.place(ctx.store.path(job.root.digest), dest / "manifest.json", fresh)
        return placed + job.root.size

    def _clear(self, dest: Path, wanted: dict[str, str], force: bool) -> None:
        """Make the folder hold nothing but what this run writes; refuse foreign files without --force."""
        existing = os.listdir(dest)
        foreign = [n for n in existing if not _OURS.fullmatch(n)]
        if foreign and not force:
            raise WriteError(f"{dest} holds files regcarve did not write ({foreign[0]}, …); use --force to replace")
        remove_path(dest / "manifest.json")  # first: the folder stops being an image until it is complete
        for name in existing:
            if name not in wanted:
                remove_path(dest / name)

    def finish(self, results: list[Result], ctx: Context) -> None:
        pass

    def push_hint(self, results: list[Result], ctx: Context) -> list[str]:
        written = [r for r in results if r.status == WRITTEN]
        if not written:
            return []
        out = str(ctx.out)
        projects = sorted({r.ref.split("/")[0] for r in written if "/" in r.ref.split(":")[0]})
        first = f" (create these Harbor projects first: {', '.join(projects)})" if projects else ""
        lines = [f"Push every image, digests unchanged{first}:",
                 f"  skopeo sync --src dir --dest docker --scoped --all {out} <registry>[/prefix]"]
        single = sorted({r.ref.split(":")[0] for r in written if "/" not in r.ref.split(":")[0]})
        if single:
            lines.append("warning: these repositories have a single name component; Harbor needs a project, so push "
                         "them with a /prefix (e.g. <registry>/library): " + ", ".join(single))
        lines.append(f"note: give OUT as '{out}' exactly — with --scoped, a leading './' leaks into the pushed names")
        return lines


def blob_files(job: Job, ctx: Context) -> dict[str, str]:
    """File name → blob digest: every file of the image except manifest.json.

    A foreign layer whose blob is absent is left out: skopeo skips foreign layers on push.
    """
    files: dict[str, str] = {}
    for node in job.nodes:
        if node is not job.root:
            files[node.digest.removeprefix("sha256:") + ".manifest.json"] = node.digest
    for d in job.image.blob_descriptors(job.nodes):
        if d.is_foreign and not ctx.catalog.inventory.has_blob(d.digest):
            continue
        files[d.digest.removeprefix("sha256:")] = d.digest
    return files

"""A conversion: prepare OUT, one scan into the blob store, then each selected image through a writer."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from regcarve.blobs.store import BlobStore
from regcarve.model.catalog import Catalog, Image
from regcarve.model.manifests import Platform
from regcarve.plan.select import Job, JobFailed, NotSelected, plan_job, select_images
from regcarve.sinks.fsout import (
    FAILED,
    SKIPPED,
    WRITTEN,
    Context,
    Options,
    Result,
    WriteError,
    Writer,
    output_error,
    atomic_write,
)

STATE_DIR = ".regcarve"
REPORT_SCHEMA = "regcarve.report/v1"


class OutputRefused(Exception):
    """OUT holds something regcarve did not make: refused without --force."""


@dataclass
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    platforms: list[Platform] = field(default_factory=list)
    index_platforms: list[Platform] = field(default_factory=list)  # for indexes when `platforms` is empty


@dataclass
class Outcome:
    results: list[Result]
    catalog: Catalog
    seconds: float
    notes: list[str]
    push_hint: list[str]
    unique_bytes: int = 0  # the distinct blobs behind the images written, each counted once
    reused_blobs: int = 0  # verified store files an earlier run left, used instead of written again

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


def prepare_out(out: Path, force: bool) -> BlobStore:
    """Create OUT, or accept it when it is empty or was made by regcarve; the store lives in OUT/.regcarve."""
    if os.path.islink(out):
        raise OutputRefused(f"{out} is a symlink; give the real path")
    if out.exists():
        if not out.is_dir():
            raise OutputRefused(f"{out} exists and is not a directory")
        entries = os.listdir(out)
        if entries and STATE_DIR not in entries and not force:
            raise OutputRefused(f"{out} is not empty and was not written by regcarve; use --force to write into it")
    state = out / STATE_DIR
    for folder in (state, state / "blobs", state / "blobs" / "sha256", state / "blobs" / "tmp"):
        if os.path.islink(folder):
            raise OutputRefused(f"{folder} is a symlink; regcarve does not follow links inside OUT")
    try:
        out.mkdir(parents=True, exist_ok=True)
        state.mkdir(exist_ok=True)
        store = BlobStore(state / "blobs")
    except OSError as e:
        raise output_error(e, Path(e.filename or state)) from None
    atomic_write(state / "README",  # a rename: replaces a symlink there, never writes through it
                 b"regcarve's blob store: verified blobs by digest, hardlinked into the images beside it.\n"
                 b"It costs no extra disk; it lets a rerun reuse what was already verified. Safe to delete.\n")
    return store


def undo_prepare_out(out: Path, had_out: bool, had_state: bool) -> None:
    """Remove what prepare_out made, when the input turned out unusable before any blob was stored:
    a run that cannot read its input leaves OUT as it found it. Only empty folders go."""
    state = out / STATE_DIR
    try:
        if not had_state:
            for folder in (state / "blobs" / "tmp", state / "blobs" / "sha256", state / "blobs"):
                _rmdir(folder)
            (state / "README").unlink(missing_ok=True)
            _rmdir(state)
        if not had_out:
            _rmdir(out)
    except OSError:  # not empty: something is there that this run did not make
        pass


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass


def convert(
    catalog: Catalog,
    store: BlobStore,
    writer: Writer,
    out: Path,
    selection: Selection,
    options: Options,
    on_image: Callable[[Result], None] | None = None,
) -> Outcome:
    started = time.monotonic()
    ctx = Context(out, store, catalog, options)
    results: list[Result] = []
    used: set[str] = set()
    planned = [_plan(image, writer, selection)
               for image in select_images(catalog.images, selection.include, selection.exclude)]
    writer.prepare([job for _, job in planned if job is not None], ctx)
    for result, job in planned:
        if job is not None:
            _write(job, writer, ctx, result, used)
        results.append(result)
        if on_image:
            on_image(result)
    writer.finish(results, ctx)
    if writer.keeps_store_links:
        for digest in store.digests() - used:
            store.remove(digest)
    else:
        for digest in store.digests():
            store.remove(digest)
    store.cleanup()
    blobs = catalog.inventory.blobs
    unique = sum(blobs[d].size for d in used if d in blobs)
    return Outcome(results, catalog, time.monotonic() - started, ctx.notes, writer.push_hint(results, ctx), unique,
                   store.reused)


def _reason(image: Image, problems: list) -> str:
    """The problems' messages, without the `repo:tag: ` some start with (the line names the image)."""
    return "; ".join(p.message.removeprefix(f"{image.ref}: ") for p in problems)


def _plan(image: Image, writer: Writer, selection: Selection) -> tuple[Result, Job | None]:
    """The image's result so far, and its job when there is something to write."""
    result = Result(image.ref, FAILED, digest=image.digest, media_type=image.media_type)
    if image.root is None:
        result.reason = _reason(image, image.errors()) or "manifest unreadable"
        return result, None
    try:
        job = plan_job(image, selection.platforms, selection.index_platforms)
    except NotSelected as e:
        result.status, result.reason = SKIPPED, str(e)
        return result, None
    except JobFailed as e:
        result.reason = str(e)
        return result, None
    result.digest, result.media_type = job.digest, job.media_type
    result.path = writer.relpath(job)
    errors = image.errors(job.nodes)
    if errors:
        result.reason = _reason(image, errors)
        return result, None
    return result, job


def _write(job: Job, writer: Writer, ctx: Context, result: Result, used: set[str]) -> None:
    try:
        result.bytes = writer.write(job, ctx)
    except WriteError as e:
        result.reason = str(e)
        return
    except NotSelected as e:
        result.status, result.reason = SKIPPED, str(e)
        return
    result.status = WRITTEN
    if job.platform_choice:
        result.reason = f"platform {job.platform_choice} chosen from index {job.image.digest}; the tag carries that child"
    used.update(n.digest for n in job.nodes)
    used.update(d.digest for d in job.image.blob_descriptors(job.nodes))


def report_json(outcome: Outcome, fmt: str, out: Path) -> dict:
    return {
        "schema": REPORT_SCHEMA,
        "format": fmt,
        "out": str(out),
        "input": {"compression": outcome.catalog.inventory.compression,
                  "bytes": outcome.catalog.inventory.source_bytes},
        "images": [r.to_json() for r in outcome.results],
        "summary": {s: outcome.count(s) for s in (WRITTEN, SKIPPED, FAILED)},
        "problems": [p.to_json() for p in outcome.catalog.problems],
    }


def write_report(path: Path, outcome: Outcome, fmt: str, out: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report_json(outcome, fmt, out), indent=2) + "\n")
    os.replace(tmp, path)

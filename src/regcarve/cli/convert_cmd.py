"""`regcarve convert`: every selected image of a source into OUT, in one of the output formats."""

from __future__ import annotations

import os
from pathlib import Path

import click

from regcarve.cli import common
from regcarve.cli.common import (
    Failure,
    PlatformParam,
    fails_strictly,
    input_summary,
    lost_by_name,
    nothing_selected,
    opened_source,
    pack_json_option,
    read_source,
    receiving,
    refuse_writes_into_storage,
    run_options,
    schema1_lines,
    schema1_option,
    verify_option,
)
from regcarve.blobs.made import MadeBlobs
from regcarve.cli.text import human_size
from regcarve.model.problems import Severity
from regcarve.report import write_report
from regcarve.plan.schema1 import Schema1Mode
from regcarve.run import Outcome, Selection, convert
from regcarve.safefiles import OutputError
from regcarve.sinks import FORMATS, sink_class
from regcarve.sinks.base import OptionError, Options, Refusal, Result, Sink, Status
from regcarve.sinks.fsout import STATE_DIR, OutFolder, OutputRefused, prepare_out, undo_prepare_out
from regcarve.sources.delivery import Receiving

FORMAT_ONLY = {"--repo-prefix": "docker-archive", "--keep-compressed": "docker-archive",
               "--single-file": "docker-archive", "--oci-layout": "oci"}


def checked_options(fmt: str, out: Path, options: Options, given: dict[str, bool]) -> Options:
    """The options, as the chosen format normalises them; options of another format are a usage error."""
    for option, owner in FORMAT_ONLY.items():
        if given[option] and fmt != owner:
            raise click.UsageError(f"{option} goes with --format {owner}")
    check = getattr(sink_class(fmt), "check_options", None)
    if check is None:
        return options
    try:
        return check(options, out)
    except OptionError as e:
        raise click.BadParameter(str(e), param_hint=e.option) from None


EXAMPLES = """\b
Examples:
  regcarve convert docker.tar.gz -o out
  skopeo sync --src dir --dest docker --scoped --all out harbor.example.com
  regcarve convert docker.tar.gz -o oci --format oci --image 'team/*' --platform linux/amd64
  zstd -dc docker.tar.zst | regcarve convert - -o archives --format docker-archive
  regcarve convert /media/delivery-a /media/delivery-b -o out
"""


@click.command("convert", epilog=EXAMPLES + "\n" + common.EXIT_CODES_HELP)
@click.argument("archive", nargs=-1, required=True, metavar="ARCHIVE...")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created; must be empty or an earlier regcarve output).")
@click.option("-f", "--format", "fmt", type=click.Choice(tuple(FORMATS)), default="dir", show_default=True,
              help="dir: skopeo dir: trees for `skopeo sync --src dir`; oci: OCI image layouts; "
                   "docker-archive: tarballs for `docker load`.")
@click.option("--image", "include", multiple=True, metavar="GLOB",
              help="Only tags whose repo:tag matches (repeatable; a GLOB without ':' means any tag).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out tags whose repo:tag matches (repeatable).")
@click.option("--platform", "platforms", multiple=True, type=PlatformParam(),
              help="For multi-arch tags, write only the first instance matching these platforms, in the order given; "
                   "the tag then carries that child manifest (a new digest), as skopeo does without --all. "
                   "Single images of another platform are skipped. docker-archive holds one platform per tag: "
                   "without --platform, indexes give linux/amd64 and single images are written whatever theirs.")
@click.option("--no-attachments", "attachments", is_flag=True, flag_value=False, default=True,
              help="Leave out what is attached to images (cosign .sig/.att/.sbom tags, referrers indexes, artifacts "
                   "with a subject), even tags the globs name; by default a selected image takes them along.")
@click.option("--default-project", metavar="PROJECT", default="", callback=common.check_project,
              help="Write repositories with a single name component (app) under this project (PROJECT/app), so "
                   "that one skopeo sync lands every repository in a Harbor project; library is the usual choice.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report (schema regcarve.report/v1).")
@click.option("--force", is_flag=True, help="Write into an OUT that regcarve did not make, replacing what is in the way.")
@click.option("--oci-layout", type=click.Choice(("per-tag", "shared")), default="per-tag", show_default=True,
              help="oci: one layout per tag (readable by every skopeo), or one shared layout at OUT.")
@click.option("--repo-prefix", default="", metavar="HOST[/PATH]",
              help="docker-archive: prefix RepoTags, so `docker load` then `docker push` lands there.")
@click.option("--keep-compressed", is_flag=True, help="docker-archive: keep gzip layers as stored (diff_ids still checked).")
@click.option("--single-file", type=click.Path(path_type=Path),
              help="docker-archive: write all selected images into this one archive, each layer once.")
@pack_json_option
@click.option("--blobs-from", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              metavar="OUT",
              help="An earlier OUT of convert --format dir (repeatable): blobs this delta volume expects from "
                   "earlier deliveries are taken from its store, each hashed first, hardlinked (else copied).")
@schema1_option
@verify_option
@run_options("written")
@click.pass_context
def convert_command(ctx, archive, out, fmt, include, exclude, platforms, attachments, default_project, report, force,
                    oci_layout, repo_prefix, keep_compressed, single_file, pack_json, blobs_from, schema1, verification,
                    quiet, no_progress, strict) -> None:
    """Write every tag of ARCHIVE (or those selected) to OUT, in one read of ARCHIVE.

    Several archives (volumes of regcarve pack, or MEDIA folders standing for their volumes in pack.json
    order) are read one after the other as one storage, as if untarred in that order into one folder.

    ARCHIVE may also be the storage folder itself (/var/lib/registry, …/docker/registry/v2): its blob
    files are then hardlinked into OUT when OUT is on the same filesystem (editing such a file in OUT
    edits the storage), and nothing in the storage is written.

    Images that cannot be pushed as they are (missing or corrupt blobs, dangling tags) are not
    written; each is reported with its reason and the exit code is 1. Blobs are verified while
    they stream and stored once (OUT/.regcarve/blobs), hardlinked into every image that uses them.
    """
    given = {"--repo-prefix": bool(repo_prefix), "--keep-compressed": keep_compressed,
             "--single-file": single_file is not None, "--oci-layout": oci_layout != "per-tag"}
    options = checked_options(fmt, out, Options(force, repo_prefix, keep_compressed, oci_layout, single_file), given)
    if schema1 is Schema1Mode.KEEP and Refusal.SCHEMA1 in sink_class(fmt).capabilities.refuses:
        raise click.BadParameter(f"--format {fmt} cannot hold schema1 images: use --schema1 convert or skip",
                                 param_hint="--schema1")
    out = Path(os.path.normpath(out))
    if any(os.path.isdir(a) and os.path.lexists(out) and os.path.samefile(a, out) for a in archive):
        raise click.UsageError("OUT is the source itself: give another folder")
    refuse_writes_into_storage(archive, {"--out": out, "--report": report, "--single-file": single_file})
    selection = Selection(include, exclude, list(platforms), default_project, schema1, attachments)
    delta = receiving(archive, pack_json, blobs_from)
    outcome, lost = _convert(archive, verification, out, fmt, selection, options, (quiet, no_progress), delta)
    if report:
        try:
            write_report(report, outcome, fmt, out)
        except OutputError as e:
            raise Failure(f"the report: {e}", common.EXIT_PROBLEMS) from None
    for text in summary_lines(outcome, fmt):
        click.echo(text, err=True)
    written = outcome.count(Status.WRITTEN)
    complete = written == len(outcome.results) and not lost and not outcome.catalog.inventory.input.truncated
    ctx.exit(common.EXIT_OK if complete and not fails_strictly(outcome.catalog, strict) else common.EXIT_PROBLEMS)


def _convert(archive: tuple[str, ...], verification: str, out: Path, fmt: str, selection: Selection, options: Options,
             quietness: tuple[bool, bool], delta: Receiving) -> tuple[Outcome, list[str]]:
    """Prepare OUT, read the source once into its store, and write every image; what was lost by name."""
    had_out, had_state = os.path.lexists(out), os.path.lexists(out / STATE_DIR)
    try:
        store = prepare_out(out, options.force)
    except OutputRefused as e:
        raise Failure(str(e), common.EXIT_USAGE) from None
    stored_before = store.digests()
    try:  # temporary files go whatever ends the run: disk full, an interrupt, a bug
        try:
            with opened_source(archive, verification) as source:
                catalog = read_source(source, store, quietness[0] or quietness[1], delta)
                blobs = MadeBlobs(delta.blobs(source.blobs(catalog.inventory, store)), store.blobs)
            if (nothing := nothing_selected(catalog, selection)) is not None:
                raise Failure(nothing, common.EXIT_NOTHING_SELECTED)
        except Failure as e:
            if e.exit_code in (common.EXIT_INPUT, common.EXIT_NOTHING_SELECTED):  # OUT stays as it was found
                for digest in store.digests() - stored_before:
                    store.remove(digest)
                store.cleanup()
                undo_prepare_out(out, had_out, had_state)
            raise
        lost = lost_by_name(catalog, selection)
        sink: Sink = sink_class(fmt)(OutFolder(out, options.force), blobs, options)
        return convert(catalog, store, blobs, sink, selection, lambda r: _line(r, quietness[0])), lost
    except OutputError as e:
        raise Failure(str(e), common.EXIT_PROBLEMS) from None
    finally:
        store.cleanup()


def _line(r: Result, quiet: bool) -> None:
    if not quiet or r.status is not Status.WRITTEN:
        why = f": {r.reason}" if r.reason else ""
        click.echo(f"{r.status.value:7} {r.ref}{why}", err=r.status is not Status.WRITTEN)


def summary_lines(outcome: Outcome, fmt: str) -> list[str]:
    written = [r for r in outcome.results if r.status is Status.WRITTEN]
    lines = [
        f"{len(written)} written, {outcome.count(Status.SKIPPED)} skipped, {outcome.count(Status.FAILED)} failed "
        f"({fmt}); {human_size(outcome.unique_bytes)} of distinct blobs; {input_summary(outcome.catalog.inventory)}; "
        f"{outcome.seconds:.1f} s after the read",
    ]
    chosen = [r for r in written if r.reason.startswith("platform ")]
    if chosen:
        lines.append(f"--platform: {len(chosen)} multi-arch tag(s) now carry a single-platform child manifest "
                     "(its digest, not the index's)")
    if outcome.reused_blobs:
        lines.append(f"{outcome.reused_blobs} blob(s) verified by an earlier run into OUT were reused, not written again")
    lines += schema1_lines(outcome.results)
    lines += [f"note: {n}" for n in outcome.notes]
    warnings = [p for p in outcome.catalog.problems if p.severity is Severity.WARNING]
    if warnings:
        lines.append(f"{len(warnings)} warning(s) about the input (orphan blobs, dangling links, …): see `regcarve list`")
    lines += outcome.hint
    return lines

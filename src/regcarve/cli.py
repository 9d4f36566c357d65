"""Command line: argument handling, progress, messages and exit codes only."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from regcarve import __version__
from regcarve.sources.tarball import ArchiveError, Input, open_input
from regcarve.blobs.store import BlobStore, OutputError
from regcarve.model.catalog import Catalog, resolve
from regcarve.model.inventory import Inventory, Severity
from regcarve.run import (
    STATE_DIR,
    Outcome,
    OutputRefused,
    Selection,
    convert,
    prepare_out,
    undo_prepare_out,
    write_report,
)
from regcarve.report import catalog_json, human_size, problem_lines, table_lines
from regcarve.model.manifests import Platform
from regcarve.sources.tarball.scan import NotRegistryStorage, scan
from regcarve.sinks.fsout import FAILED, SKIPPED, WRITTEN, Options, Result

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    every selected image was written (list: no problem found)
  1    some images were skipped or failed (each listed with its reason), or the
       input is truncated (what came before the cut is still written); list:
       problems were found; convert: the output failed (disk full)
  2    usage error
  3    input unreadable, or not registry storage
  130  interrupted
"""


class Fatal(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    click.echo(f"regcarve: {message}", err=True)


@contextmanager
def progress_bar(inp: Input, quiet: bool) -> Iterator[callable | None]:
    """A byte progress bar on a terminal; nothing (and no tqdm import) otherwise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=inp.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="reading",
               file=sys.stderr, leave=False, mininterval=0.5)
    last = 0

    def update(i: Input) -> None:
        nonlocal last
        now = i.source_bytes
        if now - last >= 1 << 20:
            bar.update(now - last)
            last = now

    try:
        yield update
    finally:
        bar.close()


def read_catalog(source: str, store: BlobStore | None, quiet: bool) -> Catalog:
    """Open, scan and resolve the input: the one read of the archive."""
    try:
        with open_input(source) as inp, progress_bar(inp, quiet) as update:
            inventory = scan(inp, store, update)
    except FileNotFoundError:
        raise Fatal(f"{source}: no such file", EXIT_INPUT) from None
    except IsADirectoryError:
        raise Fatal(f"{source}: is a directory; regcarve reads the tarball, not an extracted tree", EXIT_INPUT) from None
    except PermissionError:
        raise Fatal(f"{source}: permission denied", EXIT_INPUT) from None
    except (ArchiveError, NotRegistryStorage) as e:
        raise Fatal(str(e), EXIT_INPUT) from None
    except OutputError as e:
        raise Fatal(str(e), EXIT_PROBLEMS) from None
    for line in input_lines(inventory):
        err(line)
    return resolve(inventory)


def input_lines(inv: Inventory) -> list[str]:
    """What is wrong with the input as a whole (a cut, data after the end): one line each."""
    lines = [inv.truncated] if inv.truncated else []
    lines += [f"warning: {p.message}" for p in inv.problems if p.subject == "input" and p.severity is Severity.WARNING]
    return lines


# input-level problems that lose tags no image result can name (the name itself is what is wrong)
LOST_BY_NAME = ("invalid-repository-name", "invalid-tag")


def run(fn) -> None:
    try:
        code = fn()
    except Fatal as e:
        err(str(e))
        code = e.code
    except KeyboardInterrupt:
        err("interrupted; files under final names are complete and verified, rerun to finish")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_PROBLEMS
    sys.exit(code)


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regcarve")
def main() -> None:
    """Carve the images out of a Docker Registry storage tarball, in one pass, without extracting it.

    ARCHIVE is a tar of the registry's storage directory (`cd /var/lib/registry && tar czf
    docker.tar.gz docker`), plain, gzip or zstd compressed (detected from its first bytes), or `-`
    to read it from standard input. Every blob's sha256 is checked as it streams by.
    """


@main.command("list", epilog=EXIT_CODES_HELP)
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Print the whole inventory as JSON (schema regcarve.inventory/v1).")
@click.option("--untagged", is_flag=True, help="Also list revisions that no tag (or tagged index) reaches.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def list_command(archive: str, as_json: bool, untagged: bool, quiet: bool) -> None:
    """List every tag the archive holds: digest, kind, platforms, size, status.

    Reads the input exactly once and writes nothing. Problems found (corrupt or missing blobs,
    dangling tags, orphan blobs, …) are printed to stderr, and make the exit code 1.
    """

    def go() -> int:
        catalog = read_catalog(archive, None, quiet)
        if as_json:
            click.echo(json.dumps(catalog_json(catalog, untagged), indent=2))
        else:
            for line in table_lines(catalog, untagged):
                click.echo(line)
            # problems with the input as a whole were said once already, by read_catalog
            rest = [p for p in catalog.problems if p.subject != "input"]
            for line in problem_lines(dataclasses.replace(catalog, problems=rest)):
                click.echo(line, err=True)
        return EXIT_PROBLEMS if catalog.problems else EXIT_OK

    run(go)


FORMATS = ("dir", "oci", "docker-archive")


def make_writer(fmt: str):
    if fmt == "dir":
        from regcarve.sinks.dirfmt import DirWriter

        return DirWriter()
    if fmt == "oci":
        from regcarve.sinks.oci import OciWriter

        return OciWriter()
    from regcarve.sinks.dockerarchive import DockerArchiveWriter

    return DockerArchiveWriter()


# formats that hold one platform per tag: what an index gives them when --platform is not used
INDEX_PLATFORM_DEFAULT = {"docker-archive": (Platform("linux", "amd64"),)}


def check_docker_archive_options(repo_prefix: str, single_file: Path | None, force: bool,
                                 out: Path) -> tuple[str, Path | None]:
    """Refuse a bad --repo-prefix or an existing --single-file before the archive is read."""
    from regcarve.sinks.dockerarchive import check_repo_prefix, check_single_file

    if repo_prefix:
        try:
            repo_prefix = check_repo_prefix(repo_prefix)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--repo-prefix") from None
    if single_file is not None:
        single_file = Path(os.path.abspath(single_file))
        why = check_single_file(single_file, force, out)
        if why:
            raise click.BadParameter(why, param_hint="--single-file")
    return repo_prefix, single_file


def parse_platforms(values: tuple[str, ...]) -> list[Platform]:
    try:
        return [Platform.parse(v) for v in values]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--platform") from None


@main.command("convert", epilog=EXIT_CODES_HELP)
@click.argument("archive")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created; must be empty or an earlier regcarve output).")
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="dir", show_default=True,
              help="dir: skopeo dir: trees for `skopeo sync --src dir`; oci: OCI image layouts; "
                   "docker-archive: tarballs for `docker load`.")
@click.option("--image", "include", multiple=True, metavar="GLOB",
              help="Only tags whose repo:tag matches (repeatable; a GLOB without ':' means any tag).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out tags whose repo:tag matches (repeatable).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="For multi-arch tags, write only the first instance matching these platforms, in the order given; "
                   "the tag then carries that child manifest (a new digest), as skopeo does without --all. "
                   "Single images of another platform are skipped. docker-archive holds one platform per tag: "
                   "without --platform, indexes give linux/amd64 and single images are written whatever theirs.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report (schema regcarve.report/v1).")
@click.option("--force", is_flag=True, help="Write into an OUT that regcarve did not make, replacing what is in the way.")
@click.option("--oci-layout", type=click.Choice(("per-tag", "shared")), default="per-tag", show_default=True,
              help="oci: one layout per tag (readable by every skopeo), or one shared layout at OUT.")
@click.option("--repo-prefix", default="", metavar="HOST[/PATH]",
              help="docker-archive: prefix RepoTags, so `docker load` then `docker push` lands there.")
@click.option("--keep-compressed", is_flag=True, help="docker-archive: keep gzip layers as stored (diff_ids still checked).")
@click.option("--single-file", type=click.Path(path_type=Path),
              help="docker-archive: write all selected images into this one archive, each layer once.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, and no line for each image written.")
def convert_command(archive, out, fmt, include, exclude, platforms, report, force, oci_layout, repo_prefix,
                    keep_compressed, single_file, quiet) -> None:
    """Write every tag of ARCHIVE (or those selected) to OUT, in one read of ARCHIVE.

    Images that cannot be pushed as they are (missing or corrupt blobs, dangling tags) are not
    written; each is reported with its reason and the exit code is 1. Blobs are verified while
    they stream and stored once (OUT/.regcarve/blobs), hardlinked into every image that uses them.
    """
    selection = Selection(include, exclude, parse_platforms(platforms),
                          index_platforms=list(INDEX_PLATFORM_DEFAULT.get(fmt, ())))
    if fmt == "docker-archive":
        repo_prefix, single_file = check_docker_archive_options(repo_prefix, single_file, force, out)
    elif repo_prefix or keep_compressed or single_file:
        raise click.UsageError("--repo-prefix, --keep-compressed and --single-file go with --format docker-archive")
    if fmt != "oci" and oci_layout != "per-tag":
        raise click.UsageError("--oci-layout goes with --format oci")
    options = Options(force=force, repo_prefix=repo_prefix, keep_compressed=keep_compressed,
                      oci_layout=oci_layout, single_file=single_file)
    out = Path(os.path.normpath(out))

    def go() -> int:
        writer = make_writer(fmt)
        had_out, had_state = os.path.lexists(out), os.path.lexists(out / STATE_DIR)
        try:
            store = prepare_out(out, force)
        except OutputRefused as e:
            raise Fatal(str(e), EXIT_USAGE) from None

        def line(r: Result) -> None:
            if not quiet or r.status != WRITTEN:
                why = f": {r.reason}" if r.reason else ""
                click.echo(f"{r.status:7} {r.ref}{why}", err=r.status != WRITTEN)

        try:  # temporary files go whatever ends the run: disk full, an interrupt, a bug
            try:
                catalog = read_catalog(archive, store, quiet)
            except Fatal as e:
                if e.code == EXIT_INPUT:  # nothing was read: OUT stays as it was found
                    store.cleanup()
                    undo_prepare_out(out, had_out, had_state)
                raise
            lost = [] if include else [p for p in catalog.problems if p.code in LOST_BY_NAME]
            for p in lost:
                click.echo(f"{SKIPPED:7} {p.message}", err=True)
            outcome = convert(catalog, store, writer, out, selection, options, line)
        except OutputError as e:
            raise Fatal(str(e), EXIT_PROBLEMS) from None
        finally:
            store.cleanup()
        if report:
            try:
                write_report(report, outcome, fmt, out)
            except OSError as e:
                raise Fatal(f"cannot write the report {report}: {e.strerror}", EXIT_PROBLEMS) from None
        for text in summary_lines(outcome, fmt):
            click.echo(text, err=True)
        if not outcome.results and (include or exclude):
            err("no tag matched the selection")
        complete = outcome.count(WRITTEN) == len(outcome.results) and not lost and not catalog.inventory.truncated
        return EXIT_OK if complete else EXIT_PROBLEMS

    run(go)


def summary_lines(outcome: Outcome, fmt: str) -> list[str]:
    written = [r for r in outcome.results if r.status == WRITTEN]
    inv = outcome.catalog.inventory
    lines = [
        f"{len(written)} written, {outcome.count(SKIPPED)} skipped, {outcome.count(FAILED)} failed "
        f"({fmt}); {human_size(outcome.unique_bytes)} of distinct blobs; input {human_size(inv.source_bytes)} "
        f"({inv.compression}) read once; {outcome.seconds:.1f} s after the read",
    ]
    chosen = [r for r in written if r.reason.startswith("platform ")]
    if chosen:
        lines.append(f"--platform: {len(chosen)} multi-arch tag(s) now carry a single-platform child manifest "
                     "(its digest, not the index's)")
    if outcome.reused_blobs:
        lines.append(f"{outcome.reused_blobs} blob(s) verified by an earlier run into OUT were reused, not written again")
    lines += [f"note: {n}" for n in outcome.notes]
    warnings = [p for p in outcome.catalog.problems if p.severity.value == "warning"]
    if warnings:
        lines.append(f"{len(warnings)} warning(s) about the input (orphan blobs, dangling links, …): see `regcarve list`")
    lines += outcome.push_hint
    return lines

"""What every command shares: exit codes, the one error type that carries one, reading a source, progress."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from regcarve.blobs.store import BlobStore
from regcarve.cli.text import human_size
from regcarve.model.catalog import Catalog
from regcarve.model.inventory import Inventory
from regcarve.model.manifests import DOCKER_SCHEMA1_SIGNED, Platform
from regcarve.model.names import project_problem
from regcarve.model.problems import LOST_BY_NAME, Severity, fails_run
from regcarve.plan.schema1 import Schema1Mode
from regcarve.plan.select import select_images
from regcarve.run import Selection, read_catalog
from regcarve.safefiles import OutputError
from regcarve.sinks.base import Result, Status
from regcarve.model.expected import ExpectedError
from regcarve.sources import InputError, StorageSource, open_sources, storage_root
from regcarve.sources.base import VERIFICATIONS, Progress
from regcarve.sources.delivery import Receiving, expected_for_all
from regcarve.sources.earlier import EarlierOutError, check_earlier

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DESTINATION = 4
EXIT_NOTHING_SELECTED = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    every selected image was written or pushed (warnings about the input,
       such as orphan blobs, do not count unless --strict)
  1    some images were skipped or failed (each listed with its reason), or the
       input is truncated (what came before the cut is still written);
       convert: the output failed (disk full); --strict: any warning too
  2    usage error (also: a storage folder or OUT among several sources)
  3    input unreadable, or not registry storage
  4    push: the registry cannot be used (unreachable, untrusted TLS, not a
       registry, credentials refused); checked before the input is read
  5    --image/--exclude matched no tag (nothing written, OUT left as found)
  130  interrupted
"""
LIST_EXIT_CODES_HELP = """\b
Exit codes:
  0    no error: every tag can be written (warnings, such as orphan blobs or
       untagged revisions, do not count unless --strict)
  1    errors: a tag cannot be written (missing or corrupt blob, dangling
       tag, invalid name), or the input is truncated; --strict: any warning too
  3    input unreadable, or not registry storage
  130  interrupted
"""
INTERRUPTED = "interrupted; files under final names are complete and verified, rerun to finish"


class Failure(click.ClickException):
    """A one-line message and the exit code it ends the run with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        err(self.message)


class Commands(click.Group):
    """The command group: an interrupt anywhere in a command ends it with its own exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Failure(INTERRUPTED, EXIT_INTERRUPTED) from None


def err(message: str) -> None:
    click.echo(f"regcarve: {message}", err=True)


class PlatformParam(click.ParamType):
    name = "OS/ARCH[/VARIANT]"

    def convert(self, value, param, ctx) -> Platform:
        if isinstance(value, Platform):
            return value
        try:
            return Platform.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def check_project(ctx, param, value: str) -> str:
    """--default-project: one valid name component."""
    if value and (why := project_problem(value)) is not None:
        raise click.BadParameter(why)
    return value


@contextmanager
def progress_bar(total: int | None, quiet: bool) -> Iterator[Progress | None]:
    """A byte progress bar on a terminal; nothing (and no tqdm import) otherwise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="reading",
               file=sys.stderr, leave=False, mininterval=0.5)
    last = 0

    def update(now: int) -> None:
        nonlocal last
        if now - last >= 1 << 20:
            bar.update(now - last)
            last = now

    try:
        yield update
    finally:
        bar.close()


verify_option = click.option(
    "--verify", "verification", type=click.Choice(VERIFICATIONS), default="sha256", show_default=True,
    help="For a storage folder: sha256 hashes every blob, on every core; size trusts content addressing and "
         "only checks that each blob is there with the size its descriptors give (manifests and configs are "
         "still hashed). A tarball is always hashed.")


def _schema1_mode(ctx, param, value: str | None) -> Schema1Mode | None:
    return None if value is None else Schema1Mode(value)


schema1_option = click.option(
    "--schema1", type=click.Choice([m.value for m in Schema1Mode]), default=None, callback=_schema1_mode,
    help="Schema1 images: keep them as schema1 (signed, digest kept; the default where the output can hold "
         "them: dir, oci, push), convert them to Docker v2 schema2 (a new config and manifest, so a new digest; "
         "layers unchanged; the default for docker-archive) — current Docker and containerd pull only those —, "
         "or skip them.")


def schema1_lines(results: list[Result]) -> list[str]:
    """What became of the schema1 images that went out: kept ones cannot be pulled by current runtimes."""
    done = [r for r in results if r.status.done]
    kept = sum(1 for r in done if r.media_type == DOCKER_SCHEMA1_SIGNED)
    converted = sum(1 for r in done if r.source_digest)
    lines = []
    if kept:
        lines.append(f"note: {kept} schema1 image(s) went out as schema1 (digests kept): current containerd (2.1 "
                     "rejects schema1) and Docker (>= 20.10 refuses to pull it by default) cannot pull them, and "
                     "Distribution v3 will not store them; --schema1 convert makes them Docker v2 schema2 images")
    if converted:
        lines.append(f"note: {converted} schema1 image(s) were converted to Docker v2 schema2: their tags carry new "
                     "digests (the report gives each beside the source's, as source_digest)")
    return lines


def refuse_writes_into_storage(sources: tuple[str, ...], outputs: dict[str, object]) -> None:
    """A usage error when an output the command would write lies inside a storage folder it reads."""
    from regcarve.sources.tree import is_inside

    for source in sources:
        root = storage_root(source)
        for option, path in outputs.items():
            if root is not None and path is not None and is_inside(str(path), root):
                raise click.UsageError(f"{option} {path} is inside the storage folder {root}; regcarve never "
                                       "writes into the storage it reads")


@contextmanager
def opened_source(paths: tuple[str, ...], verification: str = "sha256") -> Iterator[StorageSource]:
    """The source the SOURCE arguments name: one, or several tar streams read as one storage."""
    try:
        source = open_sources(paths, verification)
    except InputError as e:
        raise Failure(str(e), EXIT_INPUT) from None
    except ValueError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    try:
        yield source
    finally:
        source.close()


def read_source(source: StorageSource, store: BlobStore | None, quiet: bool,
                receiving: Receiving | None = None) -> Catalog:
    """The one read of the input, with its one-line errors and its whole-input warnings said."""
    try:
        with progress_bar(source.total_bytes, quiet) as update:
            catalog = read_catalog(source, store, update, receiving)
    except InputError as e:
        raise Failure(str(e), EXIT_INPUT) from None
    except OutputError as e:
        raise Failure(str(e), EXIT_PROBLEMS) from None
    for line in input_lines(catalog.inventory) + (receiving.lines() if receiving else []):
        err(line)
    return catalog


pack_json_option = click.option(
    "--pack-json", type=click.Path(path_type=Path, dir_okay=False),
    help="The pack.json of the delivery SOURCE is a volume of: the blobs its volumes expect from earlier "
         "deliveries are then known as such. Default: the pack.json beside SOURCE, when it lists SOURCE "
         "(of a MEDIA folder given as SOURCE: the one in it).")


def receiving(sources: tuple[str, ...], pack_json: Path | None, blobs_from: tuple[Path, ...] = ()) -> Receiving:
    """What SOURCE, volumes of delta deliveries, expects, and the earlier OUTs to take that from."""
    try:
        return Receiving(expected_for_all(list(sources), pack_json), tuple(check_earlier(p) for p in blobs_from))
    except (ExpectedError, EarlierOutError) as e:
        raise Failure(str(e), EXIT_USAGE) from None


def lost_by_name(catalog: Catalog, selection: Selection) -> list[str]:
    """The tags the input loses to invalid names (said as skipped; unknowable when --image selects)."""
    lost = [] if selection.include else [p.message for p in catalog.problems if p.code in LOST_BY_NAME]
    for message in lost:
        click.echo(f"{Status.SKIPPED.value:7} {message}", err=True)
    return lost


def nothing_selected(catalog: Catalog, selection: Selection) -> str | None:
    """The message when --image/--exclude leave no tag of the input, else None."""
    if not (selection.include or selection.exclude) or select_images(catalog.images, selection.include,
                                                                      selection.exclude):
        return None
    given = " ".join([f"--image {g!r}" for g in selection.include] + [f"--exclude {g!r}" for g in selection.exclude])
    return (f"no tag matched the selection ({given}) among the input's {len(catalog.images)} tag(s); "
            "`regcarve list` shows them")


def fails_strictly(catalog: Catalog, strict: bool) -> bool:
    """--strict: any problem with the input at all makes the exit code 1."""
    return strict and any(fails_run(p, strict) for p in catalog.problems)


def run_options(verb: str):
    """The options every command that reads a source shares: quiet, no progress, strict."""
    def decorate(command):
        for option in reversed((
                click.option("-q", "--quiet", is_flag=True,
                             help=f"No progress bar{'' if verb == 'list' else f', and no line for each image {verb}'}."),
                click.option("--no-progress", is_flag=True, help="No progress bar (the lines are kept)."),
                click.option("--strict", is_flag=True,
                             help="Warnings about the input (orphan blobs, untagged revisions, …) make the exit "
                                  "code 1 as well."))):
            command = option(command)
        return command
    return decorate


def input_lines(inv: Inventory) -> list[str]:
    """Where a storage folder was found, and what is wrong with the input as a whole (a cut, data after
    the end, blobs not hashed): one line each."""
    facts = inv.input
    lines = [f"storage folder: {facts.root} (read in place)"] if facts.root else []
    if facts.verification == "size":
        lines.append(f"{unhashed_note(inv)}: only their presence and the sizes their descriptors give were checked")
    lines += [facts.truncated] if facts.truncated else []
    lines += [f"warning: {p.message}" for p in inv.problems if p.subject == "input" and p.severity is Severity.WARNING]
    return lines


def unhashed_note(inv: Inventory) -> str:
    unhashed = [b for b in inv.blobs.values() if not b.hashed]
    return f"--verify size: {len(unhashed)} of {len(inv.blobs)} blobs NOT hashed"


def input_summary(inv: Inventory) -> str:
    """How the input was read, for the summary of a run."""
    facts = inv.input
    if facts.compression == "convert-dir":
        return f"source: an OUT of convert --format dir, its verified store of {human_size(facts.bytes)} reused"
    if facts.root and facts.verification == "size":
        return f"storage folder {facts.root}; {unhashed_note(inv)} (presence and size checked)"
    if facts.root:
        return f"storage folder {facts.root}: {human_size(facts.bytes)} of blobs hashed in place"
    return f"input {human_size(facts.bytes)} ({facts.compression}) read once"

"""What every command shares: exit codes, the one error type that carries one, reading a source, progress."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import click

from regcarve.blobs.store import BlobStore
from regcarve.cli.text import human_size
from regcarve.model.catalog import Catalog
from regcarve.model.inventory import Inventory
from regcarve.model.manifests import Platform
from regcarve.model.problems import Severity
from regcarve.run import Selection, read_catalog
from regcarve.safefiles import OutputError
from regcarve.sinks.base import Status
from regcarve.sources import InputError, StorageSource, open_source, storage_root
from regcarve.sources.base import VERIFICATIONS, Progress

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DESTINATION = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    every selected image was written or pushed (list: no problem found)
  1    some images were skipped or failed (each listed with its reason), or the
       input is truncated (what came before the cut is still written); list:
       problems were found; convert: the output failed (disk full)
  2    usage error
  3    input unreadable, or not registry storage
  4    push: the registry cannot be used (unreachable, untrusted TLS, not a
       registry, credentials refused); checked before the input is read
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


def refuse_writes_into_storage(source: str, outputs: dict[str, object]) -> None:
    """A usage error when an output the command would write lies inside the storage folder it reads."""
    root = storage_root(source)
    if root is None:
        return
    from regcarve.sources.tree import is_inside

    for option, path in outputs.items():
        if path is not None and is_inside(str(path), root):
            raise click.UsageError(f"{option} {path} is inside the storage folder {root}; regcarve never writes "
                                   "into the storage it reads")


@contextmanager
def opened_source(path: str, verification: str = "sha256") -> Iterator[StorageSource]:
    try:
        source = open_source(path, verification)
    except InputError as e:
        raise Failure(str(e), EXIT_INPUT) from None
    except ValueError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    try:
        yield source
    finally:
        source.close()


def read_source(source: StorageSource, store: BlobStore | None, quiet: bool) -> Catalog:
    """The one read of the input, with its one-line errors and its whole-input warnings said."""
    try:
        with progress_bar(source.total_bytes, quiet) as update:
            catalog = read_catalog(source, store, update)
    except InputError as e:
        raise Failure(str(e), EXIT_INPUT) from None
    except OutputError as e:
        raise Failure(str(e), EXIT_PROBLEMS) from None
    for line in input_lines(catalog.inventory):
        err(line)
    return catalog


# input-level problems that lose tags no image result can name (the name itself is what is wrong)
LOST_BY_NAME = ("invalid-repository-name", "invalid-tag")


def lost_by_name(catalog: Catalog, selection: Selection) -> list[str]:
    """The tags the input loses to invalid names (said as skipped; unknowable when --image selects)."""
    lost = [] if selection.include else [p.message for p in catalog.problems if p.code in LOST_BY_NAME]
    for message in lost:
        click.echo(f"{Status.SKIPPED.value:7} {message}", err=True)
    return lost


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

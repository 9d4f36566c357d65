"""`regcarve push`: every selected image of a source straight into a registry, digests unchanged."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore
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
from regcarve.report import write_report
from regcarve.run import Outcome, Selection, emit_all
from regcarve.safefiles import OutputError
from regcarve.sinks.base import Result, Status
from regcarve.sinks.fsout import OutputRefused, prepare_out
from regcarve.sinks.registry.destination import Destination
from regcarve.sources.delivery import Receiving

if TYPE_CHECKING:  # the HTTP client is imported when a push runs, not for every command
    from regcarve.sinks.registry.sink import RegistrySink
    from regcarve.sinks.registry.transport import Transport

DEFAULT_JOBS = 16
PUSH_STATUSES = (Status.PUSHED, Status.PRESENT, Status.SKIPPED, Status.FAILED)
EXAMPLES = """\b
Examples:
  regcarve push docker.tar.gz harbor.example.com --default-project library --creds admin
  ssh host 'cd /var/lib/registry && tar cf - docker' | regcarve push - registry.local:5000/mirror
  regcarve push docker.tar.gz harbor.example.com --dry-run --authfile ~/.docker/config.json
  regcarve push /media/delivery-a/registry-0001.tar /media/delivery-a/registry-0002.tar registry.local:5000
"""


@click.command("push", epilog=EXAMPLES + "\n" + common.EXIT_CODES_HELP)
@click.argument("source", nargs=-1, required=True, metavar="SOURCE...")
@click.argument("dest", metavar="DEST")
@click.option("--image", "include", multiple=True, metavar="GLOB",
              help="Only tags whose repo:tag matches (repeatable; a GLOB without ':' means any tag).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out tags whose repo:tag matches (repeatable).")
@click.option("--platform", "platforms", multiple=True, type=PlatformParam(),
              help="For multi-arch tags, push only the first instance matching these platforms: the tag then "
                   "carries that child manifest (a new digest). Single images of another platform are skipped.")
@click.option("--no-attachments", "attachments", is_flag=True, flag_value=False, default=True,
              help="Leave out what is attached to images (cosign .sig/.att/.sbom tags, referrers indexes, artifacts "
                   "with a subject), even tags the globs name; by default a selected image takes them along.")
@click.option("--default-project", metavar="PROJECT", default="",
              help="Put repositories with a single name component (app) into this project (PROJECT/app); "
                   "the others keep their path. Harbor needs one: library is the usual choice.")
@click.option("--creds", metavar="USER[:PASS]", help="Credentials (asked for the password on a terminal when absent).")
@click.option("--password-stdin", is_flag=True, help="Read the password of --creds USER from standard input.")
@click.option("--authfile", type=click.Path(path_type=Path, dir_okay=False),
              help="Auth file (docker/containers format); default: $REGISTRY_AUTH_FILE, "
                   "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.")
@click.option("--ca-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Trust this CA (PEM) for the registry's TLS certificate, besides the system's.")
@click.option("--insecure", is_flag=True, help="Do not verify the registry's TLS certificate (unsafe; for tests).")
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to the registry (no TLS at all).")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=DEFAULT_JOBS, show_default=True,
              help="Requests in flight at once (keep-alive connections).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where the verified blobs are kept while pushing (needs their size, each blob once); kept "
                   "afterwards, so a rerun reuses them. Default: a temporary folder, removed at the end.")
@click.option("--dry-run", is_flag=True,
              help="Ask the registry what it holds and say what would be uploaded, mounted and put; send nothing.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a JSON report (schema regcarve.report/v1).")
@pack_json_option
@schema1_option
@verify_option
@run_options("pushed")
@click.pass_context
def push_command(ctx, source, dest, include, exclude, platforms, attachments, default_project, creds, password_stdin,
                 authfile, ca_cert, insecure, plain_http, jobs, work_dir, dry_run, report, pack_json, schema1,
                 verification, quiet, no_progress, strict) -> None:
    """Push every tag of SOURCE (or those selected) into the registry DEST, digests unchanged.

    SOURCE is what `convert` reads (a tarball of registry storage, or `-`, or the storage folder itself),
    or an OUT that `regcarve convert --format dir` wrote (its verified store is used; nothing is read twice). DEST is
    HOST[:PORT][/PREFIX]: repository R lands at HOST[:PORT]/PREFIX/R. SOURCE is read once, every blob
    verified into the work folder; then each blob is uploaded once and mounted into every other
    repository that needs it, and each tag's manifest is put last, with its exact bytes. A rerun
    sends only what the registry lacks.

    Several SOURCE tarballs (volumes of regcarve pack, or MEDIA folders standing for their volumes in
    pack.json order) are read one after the other as one storage; DEST is the last argument.
    """
    try:
        destination = Destination.parse(dest, default_project)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="DEST") from None
    if password_stdin and "-" in source:
        raise click.UsageError("--password-stdin cannot be used when SOURCE is - (standard input)")
    from regcarve.sinks.registry.sink import RegistrySink

    refuse_writes_into_storage(source, {"--work-dir": work_dir, "--report": report})
    selection = Selection(include, exclude, list(platforms), schema1=schema1, attachments=attachments)
    delta = receiving(source, pack_json)
    with connected(destination, creds, password_stdin, authfile, ca_cert, not insecure, plain_http, jobs) as transport:
        outcome, lost = _push(source, verification, work_dir, (quiet, no_progress), selection, delta,
                              lambda blobs: RegistrySink(transport, destination, blobs, jobs, dry_run,
                                                         delta.expected.repositories))
    statuses = PUSH_STATUSES + ((Status.PLANNED,) if dry_run else ())
    if report:
        try:
            write_report(report, outcome, "registry", str(destination), statuses)
        except OutputError as e:
            raise Failure(f"the report: {e}", common.EXIT_PROBLEMS) from None
    for line in summary_lines(outcome):
        click.echo(line, err=True)
    complete = all(r.status.done or r.status is Status.PLANNED for r in outcome.results)
    whole = complete and not lost and not outcome.catalog.inventory.input.truncated
    ctx.exit(common.EXIT_OK if whole and not fails_strictly(outcome.catalog, strict) else common.EXIT_PROBLEMS)


@contextmanager
def connected(destination: Destination, creds: str | None, password_stdin: bool, authfile: Path | None,
              ca_cert: Path | None, tls_verify: bool, plain_http: bool, jobs: int) -> Iterator[Transport]:
    """A transport to the registry whose credentials were proved: before the source is read, so that a
    wrong password or an unreachable registry costs nothing."""
    from regcarve.sinks.registry import RegistryError
    from regcarve.sinks.registry.credentials import CredentialsError, resolve_credentials
    from regcarve.sinks.registry.transport import ConnectionSettings, RetryPolicy, Transport

    first_contact = RetryPolicy(attempts=3, total_seconds=10.0, first_delay=0.5, max_delay=2.0)
    try:
        credentials = resolve_credentials(destination.host, creds=creds, password_stdin=password_stdin,
                                          auth_file=authfile)
    except CredentialsError as e:
        raise Failure(str(e), common.EXIT_USAGE) from None
    settings = ConnectionSettings(plain_http=plain_http, tls_verify=tls_verify, ca_cert=ca_cert, connections=jobs)
    transport = Transport(destination.host, credentials, settings)
    try:
        transport.check_credentials(retry=first_contact)
    except RegistryError as e:
        transport.close()
        raise Failure(str(e), common.EXIT_DESTINATION) from None
    try:
        yield transport
    finally:
        transport.close()


@contextmanager
def work_store(work_dir: Path | None, needed: bool) -> Iterator[BlobStore | None]:
    """The verified store of the push: in --work-dir (kept), or in a temporary folder (removed); none
    when the source keeps its verified blobs itself."""
    if not needed:
        yield None
        return
    folder = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="regcarve-push-"))
    try:
        try:
            store = prepare_out(folder, force=False)
        except OutputRefused as e:
            raise Failure(f"--work-dir: {e}", common.EXIT_USAGE) from None
        try:
            yield store
        finally:
            store.cleanup()
    finally:
        if work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _push(source: tuple[str, ...], verification: str, work_dir: Path | None, quietness: tuple[bool, bool], selection: Selection,
          delta: Receiving, make_sink: Callable[[BlobSource], RegistrySink]) -> tuple[Outcome, list[str]]:
    """Read the source once into the work store, then push what it holds."""
    quiet, no_progress = quietness
    try:
        with opened_source(source, verification) as src, work_store(work_dir, src.needs_store) as store:
            catalog = read_source(src, store, quiet or no_progress, delta)
            if (nothing := nothing_selected(catalog, selection)) is not None:
                raise Failure(nothing, common.EXIT_NOTHING_SELECTED)
            blobs = MadeBlobs(delta.blobs(src.blobs(catalog.inventory, store)), store.blobs if store is not None else None)
            lost = lost_by_name(catalog, selection)
            started = time.monotonic()
            sink = make_sink(blobs)
            results, _ = emit_all(catalog, blobs, sink, selection, lambda r: _line(r, quiet))
            return Outcome(results, catalog, time.monotonic() - started, sink.notes, sink.hint(results)), lost
    except OutputError as e:
        raise Failure(str(e), common.EXIT_PROBLEMS) from None


def _line(r: Result, quiet: bool) -> None:
    if not quiet or not r.status.done:
        why = f": {r.reason}" if r.reason else ""
        click.echo(f"{r.status.value:7} {r.ref}{why}", err=not r.status.done)


def summary_lines(outcome: Outcome) -> list[str]:
    return (outcome.hint + schema1_lines(outcome.results) + [f"note: {n}" for n in outcome.notes]
            + [f"{input_summary(outcome.catalog.inventory)}; {outcome.seconds:.1f} s after the read"])

"""`regcarve list`: every tag of a source, as a table or as the inventory JSON."""

from __future__ import annotations

import click

from regcarve.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    LIST_EXIT_CODES_HELP,
    opened_source,
    pack_json_option,
    read_source,
    receiving,
    run_options,
    verify_option,
)
from regcarve.cli.text import problem_lines, table_lines
from regcarve.model.problems import fails_run
from regcarve.report import write_inventory

ECHOED_LINES = 4096

EXAMPLES = """\b
Examples:
  regcarve list docker.tar.gz
  regcarve list docker.tar.gz --json | jq -r '.tags[].reference'
  ssh host 'cd /var/lib/registry && tar cf - docker' | regcarve list -
  regcarve list /media/dvd1/registry-0001.tar /media/dvd2/registry-0002.tar
  regcarve list MEDIA
"""


@click.command("list", epilog=EXAMPLES + "\n" + LIST_EXIT_CODES_HELP)
@click.argument("archive", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--json", "as_json", is_flag=True, help="Print the whole inventory as JSON (schema regcarve.inventory/v1).")
@click.option("--untagged", is_flag=True, help="Also list revisions that no tag (or tagged index) reaches.")
@click.option("-w", "--wide", is_flag=True, help="Never shorten long references to fit the terminal.")
@pack_json_option
@verify_option
@run_options("list")
@click.pass_context
def list_command(ctx: click.Context, archive: tuple[str, ...], as_json: bool, untagged: bool, wide: bool, pack_json,
                 verification: str, quiet: bool, no_progress: bool, strict: bool) -> None:
    """List every tag the archive (or the storage folder) holds: digest, kind, platforms, size, status.

    Several archives (volumes of regcarve pack, or a MEDIA folder standing for its volumes in pack.json
    order) are read one after the other as one storage, as if untarred in that order into one folder.

    Reads the input exactly once and writes nothing. Problems found are printed to stderr, each as
    an error (a tag cannot be written: missing or corrupt blob, dangling tag, …) or a warning
    (nothing is lost: orphan blobs, untagged revisions, …); only errors make the exit code 1,
    unless --strict.
    """
    delta = receiving(archive, pack_json)
    with opened_source(archive, verification) as source:
        catalog = read_source(source, None, quiet or no_progress, delta)
    if as_json:
        write_inventory(click.get_text_stream("stdout"), catalog, untagged)
    else:
        lines = table_lines(catalog, untagged, None if wide else _terminal_width())
        for start in range(0, len(lines), ECHOED_LINES):  # never the whole table joined into one text
            click.echo("\n".join(lines[start:start + ECHOED_LINES]))
        # problems with the input as a whole were said once already, by read_source
        for line in problem_lines([p for p in catalog.problems if p.subject != "input"]):
            click.echo(line, err=True)
    failing = any(fails_run(p, strict) for p in catalog.problems)
    ctx.exit(EXIT_PROBLEMS if failing else EXIT_OK)


def _terminal_width() -> int | None:
    """The terminal's width when stdout is one (a pipe or a file gets every line whole)."""
    stream = click.get_text_stream("stdout")
    if not stream.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns

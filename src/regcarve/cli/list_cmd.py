"""`regcarve list`: every tag of a source, as a table or as the inventory JSON."""

from __future__ import annotations

import json

import click

from regcarve.cli.common import EXIT_CODES_HELP, EXIT_OK, EXIT_PROBLEMS, opened_source, read_source, verify_option
from regcarve.cli.text import problem_lines, table_lines
from regcarve.report import catalog_json


@click.command("list", epilog=EXIT_CODES_HELP)
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Print the whole inventory as JSON (schema regcarve.inventory/v1).")
@click.option("--untagged", is_flag=True, help="Also list revisions that no tag (or tagged index) reaches.")
@verify_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def list_command(ctx: click.Context, archive: str, as_json: bool, untagged: bool, verification: str,
                 quiet: bool) -> None:
    """List every tag the archive (or the storage folder) holds: digest, kind, platforms, size, status.

    Reads the input exactly once and writes nothing. Problems found (corrupt or missing blobs,
    dangling tags, orphan blobs, …) are printed to stderr, and make the exit code 1.
    """
    with opened_source(archive, verification) as source:
        catalog = read_source(source, None, quiet)
    if as_json:
        click.echo(json.dumps(catalog_json(catalog, untagged), indent=2))
    else:
        for line in table_lines(catalog, untagged):
            click.echo(line)
        # problems with the input as a whole were said once already, by read_source
        for line in problem_lines([p for p in catalog.problems if p.subject != "input"]):
            click.echo(line, err=True)
    ctx.exit(EXIT_PROBLEMS if catalog.problems else EXIT_OK)

"""Command line: argument handling, progress, messages and exit codes only — one module per command."""

from __future__ import annotations

import click

from regcarve import __version__
from regcarve.cli.common import EXIT_CODES_HELP, Commands
from regcarve.cli.convert_cmd import convert_command
from regcarve.cli.list_cmd import list_command
from regcarve.cli.pack_cmd import pack_command
from regcarve.cli.push_cmd import push_command
from regcarve.cli.verify_cmd import verify_command


@click.group(cls=Commands, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regcarve")
def main() -> None:
    """Carve the images out of a Docker Registry storage tarball, in one pass, without extracting it.

    ARCHIVE is a tar of the registry's storage directory (`cd /var/lib/registry && tar czf
    docker.tar.gz docker`), plain, gzip or zstd compressed (detected from its first bytes), or `-`
    to read it from standard input. Every blob's sha256 is checked as it streams by.
    """


main.add_command(list_command)
main.add_command(convert_command)
main.add_command(push_command)
main.add_command(pack_command)
main.add_command(verify_command)

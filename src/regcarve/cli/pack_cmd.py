"""`regcarve pack`: the selected images of a source cut into MEDIA's volumes, each a registry storage."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import click

from regcarve.cli import common
from regcarve.cli.common import (
    Failure,
    PlatformParam,
    fails_strictly,
    lost_by_name,
    nothing_selected,
    opened_source,
    read_source,
    refuse_writes_into_storage,
    run_options,
    verify_option,
)
from regcarve.cli.push_cmd import work_store
from regcarve.model.catalog import Catalog
from regcarve.report import catalog_json
from regcarve.run import Selection, emit_all
from regcarve.safefiles import OutputError, is_temp
from regcarve.sinks.base import Result, Status
from regcarve.sinks.pack import PackOptions, PackSink
from regcarve.sinks.pack.index import PACK_JSON, SHA256SUMS, STATE, SinceError, held_blobs
from regcarve.sinks.pack.sink import NAME
from regcarve.sinks.pack.sizes import SIZE_HELP, parse_size

EXAMPLES = """\b
Examples:
  regcarve pack docker.tar.gz -o media --volume-size 4.7GB          # DVDs
  regcarve pack /var/lib/registry -o stick --volume-size 4095M       # FAT32: under 4 GiB a file
  regcarve pack docker.tar.gz -o delta --since old-media/pack.json  # only what the far side lacks
  regcarve pack docker.tar.gz -o dvd --volume-size 4.7GB --split-oversize
      # an image over 4.7 GB: its volume cut into dvd/docker-0003.tar.part000, .part001, …
      # read back with: regcarve list dvd   (or the parts, in order; or cat them into one .tar)
"""


class SizeParam(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if size < 16 << 10:
            self.fail(f"{value!r} is below the least volume size, 16K", param, ctx)
        return size


def default_name(source: str) -> str:
    """The volumes' name from the source's: `docker.tar.gz` → `docker`; `registry` when nothing is left."""
    base = os.path.basename(os.path.normpath(source)) if source != "-" else ""
    base = re.sub(r"(\.tar)?(\.gz|\.tgz|\.zst|\.tar)$", "", base)
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")[:24]
    return base if NAME.fullmatch(base) else "registry"


def prepare_media(media: Path, name: str, force: bool) -> None:
    """Create MEDIA, or accept it empty or holding only what pack writes."""
    if os.path.islink(media):
        raise Failure(f"{media} is a symlink; give the real path", common.EXIT_USAGE)
    if media.exists() and not media.is_dir():
        raise Failure(f"{media} exists and is not a directory", common.EXIT_USAGE)
    ours = re.compile(re.escape(name) + r"-\d{4}\.tar(\.gz|\.zst)?(\.part\d{3,})?")
    if media.is_dir() and not force:
        foreign = [n for n in os.listdir(media)
                   if not (n in (PACK_JSON, SHA256SUMS, STATE) or ours.fullmatch(n) or is_temp(n))]
        if foreign:
            raise Failure(f"{media} holds files regcarve pack did not write ({foreign[0]}, …); "
                          "use --force to write beside them", common.EXIT_USAGE)
    try:
        media.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Failure(f"cannot create {media}: {e.strerror}", common.EXIT_PROBLEMS) from None


def source_summary(source: str, catalog: Catalog) -> dict:
    doc = catalog_json(catalog)
    return {"path": source, "input": doc["input"], "tags": len(catalog.images), "blobs": doc["blobs"]}


@click.command("pack", epilog=EXAMPLES + "\n" + common.EXIT_CODES_HELP)
@click.argument("source")
@click.option("-o", "--out", "media", required=True, type=click.Path(path_type=Path),
              help="MEDIA: the folder that receives the volumes, pack.json and SHA256SUMS.")
@click.option("--volume-size", default="4095M", show_default=True, type=SizeParam(),
              help=f"Largest volume file. {SIZE_HELP}.")
@click.option("--compress", "compression", type=click.Choice(("none", "gzip", "zstd")), default="none",
              show_default=True, help="Compress each volume (layers are compressed already: none is usual).")
@click.option("--name", default="", help="Volume names: NAME-0001.tar … (default: from SOURCE's name).")
@click.option("--since", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="What the far side holds: an earlier delivery's pack.json, or `regcarve list --json` of its "
                   "storage (repeatable). Configs and layers it holds are left out; manifests and links never.")
@click.option("--split-oversize", is_flag=True,
              help="An image larger than --volume-size gets a volume of its own, written as byte parts "
                   "NAME-0003.tar.part000, .part001, … of at most the size each (the volume's bytes cut in "
                   "order; `cat` joins them). Without it such an image is refused, by name.")
@click.option("--image", "include", multiple=True, metavar="GLOB", help="Only tags whose repo:tag matches (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out tags whose repo:tag matches (repeatable).")
@click.option("--platform", "platforms", multiple=True, type=PlatformParam(),
              help="For multi-arch tags, pack only the first matching instance (the tag then names that child).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Keep the verified blobs of a tarball source here (default: a temporary folder, removed).")
@click.option("--force", is_flag=True, help="Write into a MEDIA folder that holds other files.")
@verify_option
@run_options("packed")
@click.pass_context
def pack_command(ctx, source, media, volume_size, compression, name, since, split_oversize, include, exclude, platforms,
                 work_dir, force, verification, quiet, no_progress, strict) -> None:
    """Cut SOURCE into volumes of whole images in MEDIA, each a registry storage of its own.

    Each volume (NAME-0001.tar …) holds whole images — manifests, configs, layers and the repository
    links — so it can be read alone by regcarve, or untarred into a registry's storage and served. An
    image never spans two volumes. MEDIA/pack.json describes them; MEDIA/SHA256SUMS checks them. With
    --split-oversize an image larger than a volume is packed in a volume of its own cut into byte parts,
    which every regcarve command reads back as one volume (given MEDIA, or the parts in order).
    """
    name = name or default_name(source)
    if not NAME.fullmatch(name):
        raise click.BadParameter("1 to 24 of A-Z a-z 0-9 _ -, starting with a letter or digit", param_hint="--name")
    held: dict[str, str] = {}
    try:
        for path in since:
            held.update(held_blobs(path))
    except SinceError as e:
        raise Failure(str(e), common.EXIT_USAGE) from None
    refuse_writes_into_storage((source,), {"--out": media, "--work-dir": work_dir})
    prepare_media(media, name, force)
    selection = Selection(include, exclude, list(platforms))
    options = PackOptions(volume_size, compression, name, held, tuple(map(str, since)), split_oversize=split_oversize)
    results, catalog, hint = _pack(source, verification, work_dir, media, options, selection, (quiet, no_progress))
    for line in hint:
        click.echo(line, err=True)
    done = all(r.status is Status.WRITTEN for r in results) and not catalog.inventory.input.truncated
    ctx.exit(common.EXIT_OK if done and not fails_strictly(catalog, strict) else common.EXIT_PROBLEMS)


def _pack(source: str, verification: str, work_dir: Path | None, media: Path, options: PackOptions,
          selection: Selection, quietness: tuple[bool, bool]) -> tuple[list[Result], Catalog, list[str]]:
    quiet, no_progress = quietness
    try:
        with opened_source((source,), verification) as src, work_store(work_dir, src.needs_store) as store:
            catalog = read_source(src, store, quiet or no_progress)
            if (nothing := nothing_selected(catalog, selection)) is not None:
                raise Failure(nothing, common.EXIT_NOTHING_SELECTED)
            blobs = src.blobs(catalog.inventory, store)
            lost_by_name(catalog, selection)
            options = replace(options, source=source_summary(source, catalog))
            throwaway = store is not None and work_dir is None  # a --work-dir is kept for a rerun
            sink = PackSink(media, blobs, options, store.keep_only if throwaway else None)
            results, _ = emit_all(catalog, blobs, sink, selection, lambda r: _line(r, quiet))
            return results, catalog, sink.hint(results)
    except OutputError as e:
        raise Failure(str(e), common.EXIT_PROBLEMS) from None


def _line(r: Result, quiet: bool) -> None:
    if not quiet or r.status is not Status.WRITTEN:
        why = f": {r.reason}" if r.reason else ""
        click.echo(f"{'packed' if r.status is Status.WRITTEN else r.status.value:7} {r.ref}{why}",
                   err=r.status is not Status.WRITTEN)

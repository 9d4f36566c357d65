"""`regcarve pack`: the selected images cut into volumes, each a registry storage of its own, with
MEDIA/pack.json and MEDIA/SHA256SUMS.

Volumes are planned once every image is known (`prepare`), then written one after the other
(`write_all` yields each image when its volume is complete; a volume's hash, read back on another
core, still runs while the next one is written). A volume finished by an interrupted run
is kept by the rerun when it was planned the same and its bytes still hash as recorded. With
`split_oversize`, an image larger than a volume gets a volume of its own, cut into byte parts (cut.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from regcarve.blobs.source import BlobSource
from regcarve.model.parts import part_of
from regcarve.sinks.base import Capabilities, ImageFailed, ImageOut, Result, Status
from regcarve.sinks.pack.document import pack_document, summary_lines
from regcarve.sinks.pack.index import (
    SCHEMA,
    FinishedVolume,
    Part,
    file_sha256,
    read_state,
    write_index,
    write_state,
)
from regcarve.sinks.pack.layout import BlobFile, LinkFile, blob_path, links
from regcarve.sinks.pack.options import PackOptions
from regcarve.sinks.pack.plan import Plan, VolumePlan, image_needs, plan_volumes
from regcarve.sinks.pack.volume import SUFFIXES, VolumeWriter
from regcarve.safefiles import remove_path, remove_stale_temps

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,23}")  # with -0001.tar.zst: short, ASCII, valid on FAT32/exFAT/NTFS


def room(volume_size: int, compression: str) -> int:
    """The tar bytes a volume may plan for: all of it uncompressed; compressed, less the most gzip or zstd
    can add to incompressible data (stored blocks: well under 0.2 %, plus headers)."""
    return volume_size if compression == "none" else volume_size - volume_size // 500 - 65536


@dataclass
class VolumeFiles:
    blobs: list[BlobFile]
    links: list[LinkFile]

    @property
    def plan_id(self) -> str:
        listing = [[b.path, b.size] for b in self.blobs] + [[k.path, k.target] for k in self.links]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def volume_files(volume: VolumePlan) -> VolumeFiles:
    blobs = [BlobFile(blob_path(d), d, size) for d, size in volume.blobs.items()]
    seen: dict[str, LinkFile] = {}
    for needs in volume.images:
        for link in links(needs.image):
            seen.setdefault(link.path, link)
    return VolumeFiles(blobs, list(seen.values()))


@dataclass
class _Pending:
    volume: VolumePlan
    files: VolumeFiles
    writer: VolumeWriter


class PackSink:
    format = "pack"
    capabilities = Capabilities(keeps_store_links=False)

    def __init__(self, media: Path, blobs: BlobSource, options: PackOptions,
                 keep_only: Callable[[set[str]], None] | None = None):
        """`keep_only`, when the blobs are a throwaway copy: hears the blobs still needed each time that set
        shrinks (once planned, and after each volume), so that the others can go at once."""
        self.media, self.blobs, self.options = media, blobs, options
        self._keep_only = keep_only or (lambda needed: None)
        self.notes: list[str] = []
        self.plan = Plan([], [])
        self.written: dict[int, FinishedVolume] = {}  # volume number → what was written
        self.reused = 0

    def relpath(self, repository: str, tag: str) -> str:
        return f"{repository}:{tag}"

    def file_name(self, volume: VolumePlan) -> str:
        return f"{self.options.name}-{volume.number:04d}{SUFFIXES[self.options.compression]}"

    def prepare(self, images: list[ImageOut]) -> None:
        sizes = {}
        for image in images:
            sizes.update((d, self.blobs.size(d)) for d in (image.manifest.digest, *(m.digest for m in image.children)))
            sizes.update((d.digest, self.blobs.size(d.digest)) for d in image.blobs)
        needs = [image_needs(image, i, sizes, self.options.held) for i, image in enumerate(images)]
        self.plan = plan_volumes(needs, room(self.options.volume_size, self.options.compression),
                                 self.options.split_oversize)
        self._remove_stale_volumes()

    def _remove_stale_volumes(self) -> None:
        """Volume files (and parts) of earlier runs that this plan has no use for: a volume it writes whole
        keeps no parts, one it cuts keeps no whole file."""
        ours = {self.file_name(v): v.oversize for v in self.plan.volumes}
        pattern = re.compile(re.escape(self.options.name) + r"-\d{4}\.tar(\.gz|\.zst)?")
        for name in os.listdir(self.media):
            whole, number = part_of(name) or (name, None)
            if pattern.fullmatch(whole) and ours.get(whole) is not (number is not None):
                remove_path(self.media / name)

    def write(self, image: ImageOut) -> None:  # pragma: no cover - run uses write_all
        raise NotImplementedError("pack writes whole volumes: use write_all")

    def write_all(self, images: list[ImageOut]) -> Iterator[tuple[ImageOut, Status | BaseException]]:
        for needs, size in self.plan.too_big:
            yield needs.image, ImageFailed(
                f"needs {size:,} bytes in a volume, more than the volume size leaves "
                f"({room(self.options.volume_size, self.options.compression):,} bytes of tar); give a larger "
                "--volume-size, cut its volume into parts with --split-oversize, or leave it out with --exclude")
        finished = read_state(self.media)
        pending: _Pending | None = None  # a volume written whose hash is still running
        last_use = {d: i for i, volume in enumerate(self.plan.volumes) for d in volume.blobs}
        needed = set(last_use)
        self._keep_only(needed)
        try:
            for i, volume in enumerate(self.plan.volumes):
                outcome = self._volume(volume, finished)
                needed.difference_update(d for d in volume.blobs if last_use[d] == i)
                self._keep_only(needed)
                if pending is not None:  # its hash ran while this volume was written
                    yield from self._settled(pending, finished)
                    pending = None
                if isinstance(outcome, _Pending):
                    pending = outcome
                else:
                    yield from ((needs.image, outcome) for needs in volume.images)
            if pending is not None:
                yield from self._settled(pending, finished)
                pending = None
        finally:
            if pending is not None:  # an error or an interrupt: the unfinished volume goes
                pending.writer.discard()

    def _volume(self, volume: VolumePlan, finished: dict[str, FinishedVolume]) -> _Pending | Status | BaseException:
        name = self.file_name(volume)
        final = self.media / name
        files = volume_files(volume)
        earlier = finished.get(name)
        if earlier and earlier.plan == files.plan_id and bool(earlier.parts) == volume.oversize and _still(final, earlier):
            self.written[volume.number] = earlier
            self.reused += 1
            return Status.WRITTEN
        remove_stale_temps(final)
        writer = VolumeWriter(final, self.options.compression, self.options.volume_size if volume.oversize else 0)
        try:
            for blob in files.blobs:
                writer.add_blob(blob, self.blobs)
            for link in files.links:
                writer.add_link(link)
            writer.complete()
        except OSError as e:  # a blob unreadable now (BlobUnavailable is one): this volume's images fail
            writer.discard()
            return ImageFailed(f"volume {name} not written: {e}")
        except BaseException:
            writer.discard()
            raise
        return _Pending(volume, files, writer)

    def _settled(self, pending: _Pending, finished: dict[str, FinishedVolume]
                 ) -> Iterator[tuple[ImageOut, Status | BaseException]]:
        """The volume renamed into place once its hash is known, recorded; each of its images' outcome."""
        volume, writer, plan_id = pending.volume, pending.writer, pending.files.plan_id
        name = self.file_name(volume)
        parts: tuple[Part, ...] = ()
        try:
            if volume.oversize:
                sha256, parts = writer.settle_in_parts()
            else:
                sha256 = writer.settle()
        except OSError as e:
            outcome: Status | BaseException = ImageFailed(f"volume {name} not written: {e}")
        else:
            if writer.size > self.options.volume_size and not parts:
                remove_path(writer.final)
                outcome = ImageFailed(f"volume {name} came out at {writer.size:,} bytes, over the volume size; "
                                      "pack again with --compress none")
            else:
                finished[name] = FinishedVolume(plan_id, writer.size, sha256, writer.tar_bytes, parts)
                self.written[volume.number] = finished[name]
                write_state(self.media, finished)
                outcome = Status.WRITTEN
        for needs in volume.images:
            yield needs.image, outcome

    def finish(self, results: list[Result]) -> None:
        if self.written:
            write_index(self.media, pack_document(self, results))

    def hint(self, results: list[Result]) -> list[str]:
        return summary_lines(self, results)


def _still(path: Path, earlier: FinishedVolume) -> bool:
    """Whether a volume an earlier run finished is still there, whole: its size, then its sha256 (of each
    part, for a volume cut into parts)."""
    files = [(path.with_name(p.file), p.size, p.sha256) for p in earlier.parts] or [(path, earlier.size, earlier.sha256)]
    try:
        return all(os.stat(f).st_size == size and file_sha256(f) == sha256 for f, size, sha256 in files)
    except OSError:
        return False


__all__ = ["SCHEMA", "NAME", "PackOptions", "PackSink"]

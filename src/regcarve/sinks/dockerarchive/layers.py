"""An image's layers into an archive, each checked against its diff_id: decoded once a run, copied after.

A layer that an archive finished earlier in this run holds is copied from that file in the kernel
(copy_file_range), not decoded again; every other is decoded from its blob by a thread (blobs.decode),
hashed and written here. `--keep-compressed` copies gzip layers as stored while still decoding them
to check the diff_id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from regcarve.blobs import decode
from regcarve.blobs.codecs import compression_of
from regcarve.blobs.decode import Ahead, Decoding, LayerFailed, LayerSource
from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import Descriptor
from regcarve.sinks.base import ImageFailed
from regcarve.sinks.tarout import BLOCK, TarOut

HELD_MAX = 64  # finished archives kept open to copy their layers from

__all__ = ["Ahead", "Finished", "LayerKey", "LayerWriter", "new_layers"]

LayerKey = tuple[str, str]  # (diff_id, the stored blob's digest with --keep-compressed, else "")


class Archive(Protocol):
    """What layers are written into: a tar, and what it holds (an archive.Archive)."""

    tar: TarOut
    layers: dict[str, str]  # diff_id → entry name
    decoded: dict[LayerKey, tuple[int, int, str]]  # → (data offset, size, entry name)



class Finished:
    """The layers that archives finished earlier in the run hold, for later archives to copy.

    Each such archive stays open for reading (the HELD_MAX used last), so what is copied is the
    very file this run wrote and checked, wherever its name has gone since; one whose size or mtime
    has changed since is let go."""

    def __init__(self) -> None:
        self.where: dict[LayerKey, tuple[int, int, int, str]] = {}  # → (fd, data offset, size, entry name)
        self.held: OrderedDict[int, list[LayerKey]] = OrderedDict()  # fd → its layers, least recently used first
        self.stamps: dict[int, tuple[int, int]] = {}  # fd → (size, mtime) as finished

    def add(self, fd: int, layers: dict[LayerKey, tuple[int, int, str]]) -> None:
        """Take `fd`, open on a finished archive, and the layers it decoded."""
        keys = [k for k in layers if k not in self.where]
        try:
            stamp = _stamp(fd)
        except OSError:
            keys = []
        if not keys:
            os.close(fd)
            return
        for k in keys:
            self.where[k] = (fd, *layers[k])
        self.held[fd] = keys
        self.stamps[fd] = stamp
        while len(self.held) > HELD_MAX:
            self._drop(next(iter(self.held)))

    def get(self, key: LayerKey) -> tuple[int, int, int, str] | None:
        found = self.where.get(key)
        if found is not None:
            fd = found[0]
            try:
                same = _stamp(fd) == self.stamps[fd]
            except OSError:
                same = False
            if not same:
                self._drop(fd)
                return None
            self.held.move_to_end(fd)
        return found

    def forget(self, key: LayerKey) -> None:
        fd = self.where.pop(key)[0]
        self.held[fd].remove(key)
        if not self.held[fd]:
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        for k in self.held.pop(fd):
            del self.where[k]
        del self.stamps[fd]
        os.close(fd)

    def close(self) -> None:
        while self.held:
            self._drop(next(iter(self.held)))


def _stamp(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


class LayerWriter:
    """Puts an image's layers into an archive, each checked against its diff_id.

    A layer that an archive finished earlier in this run holds (`finished`) is copied from that file
    in the kernel, not decoded again; every other is decoded from the store by a Decoding thread,
    hashed and written here."""

    def __init__(self, blobs: BlobSource, keep_compressed: bool, finished: Finished | None = None):
        self.blobs = blobs
        self.keep = keep_compressed
        self.finished = finished if finished is not None else Finished()

    def key(self, layer: Descriptor, diff_id: str) -> LayerKey:
        return diff_id, layer.digest if self.keep else ""

    def add_all(self, archive: Archive, layers: list[Descriptor], diff_ids: list[str],
                ahead: Ahead | None = None) -> None:
        """`ahead`: the run's decoding; without it, the layers to decode get a thread of their own."""
        todo = new_layers(archive.layers, layers, diff_ids)
        own = ahead is None
        if ahead is None:
            ahead = decode.Ahead([self.source(i, layer, diff_id) for i, layer, diff_id in todo
                                  if self.finished.get(self.key(layer, diff_id)) is None])
        try:
            for i, layer, diff_id in todo:
                if self._copied(archive, layer, diff_id):
                    continue
                src = ahead.take(self.key(layer, diff_id))
                if src is not None and src.layer.digest == layer.digest:
                    self._decoded(archive, ahead, dataclasses.replace(src, index=i), self.keep)
                else:
                    self._decode_alone(archive, self.source(i, layer, diff_id), self.keep)
        finally:
            if own:
                ahead.close()

    def source(self, index: int, layer: Descriptor, diff_id: str) -> LayerSource:
        opener = functools.partial(self.blobs.open, layer.digest)
        try:
            with opener() as f:
                head = f.read(8)
        except OSError as e:
            raise ImageFailed(f"layer {index} {layer.digest}: cannot read the stored blob ({e.strerror})") from None
        return LayerSource(index, layer, diff_id, opener, compression_of(head), self.key(layer, diff_id))

    def _decode_alone(self, archive: Archive, src: LayerSource, keep: bool) -> None:
        pipe = decode.Decoding([src])
        try:
            self._decoded(archive, pipe, src, keep)
        finally:
            pipe.close()

    def _decoded(self, archive: Archive, pipe: Decoding | Ahead, src: LayerSource, keep: bool) -> None:
        """The layer's next chunks from `pipe`, hashed and (unless kept as stored) written."""
        tar, layer, index, diff_id = archive.tar, src.layer, src.index, src.diff_id
        keep = keep and src.kind == "gzip"
        start = tar.begin()
        if keep:  # the stored bytes go in as they are; what `pipe` decodes is only hashed
            try:
                with src.open() as f:
                    tar.copy(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as e:
                raise ImageFailed(f"layer {index} {layer.digest}: cannot read the stored blob ({e.strerror})") from None
        h = hashlib.sha256()
        update, write = h.update, tar.write

        def hash_and_write(chunk: bytes) -> None:
            update(chunk)
            write(chunk)

        item = decode.consume(pipe, update if keep else hash_and_write)
        if isinstance(item, LayerFailed):
            raise ImageFailed(f"layer {index} {layer.digest}: {decode.failure_reason(item.error)}")
        actual = "sha256:" + h.hexdigest()
        if actual != diff_id:
            raise ImageFailed(f"layer {index} {layer.digest} ({src.kind}): its uncompressed content hashes to "
                              f"{actual}, but the config's rootfs.diff_ids[{index}] is {diff_id}")
        if keep and item.padded:  # gzip padding some readers reject: store this one decompressed
            tar.rollback(start)
            self._decode_alone(archive, src, False)
            return
        name = diff_id.removeprefix("sha256:") + (".tar.gz" if keep else ".tar")
        size = tar.end(start, name)
        archive.layers[diff_id] = name
        archive.decoded[self.key(layer, diff_id)] = (start + BLOCK, size, name)

    def _copied(self, archive: Archive, layer: Descriptor, diff_id: str) -> bool:
        """Copy the layer from the finished archive that holds it; False when none does or it cannot be read."""
        key = self.key(layer, diff_id)
        found = self.finished.get(key)
        if found is None:
            return False
        fd, offset, size, name = found
        tar = archive.tar
        start = tar.begin()
        try:
            tar.copy(fd, offset, size)
        except OSError:  # the source's (the output's raise OutputError): decode the layer instead
            self.finished.forget(key)
            tar.rollback(start)
            return False
        tar.end(start, name)
        archive.layers[diff_id] = name
        return True


def new_layers(held: Iterable[str], layers: list[Descriptor], diff_ids: list[str]) -> list[tuple[int, Descriptor, str]]:
    """(index, layer, diff_id) of the layers an archive holding the diff_ids `held` does not hold yet:
    it holds each once, however often images list it."""
    todo, seen = [], set(held)
    for i, (layer, diff_id) in enumerate(zip(layers, diff_ids)):
        if diff_id not in seen:
            seen.add(diff_id)
            todo.append((i, layer, diff_id))
    return todo

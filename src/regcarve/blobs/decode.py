"""Layers decoded in a thread of their own, ahead of the caller that hashes and writes them.

zlib, zstd, bz2 and lzma decoding, sha256 of large buffers and file writes all let go of the GIL, so a
decoding thread and its caller run on two cores. The queue between them is bounded, so memory is too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import BinaryIO

from regcarve.blobs import codecs
from regcarve.blobs.codecs import CHUNK, LayerError
from regcarve.model.manifests import Descriptor

QUEUE_DEPTH = 16  # decoded chunks waiting to be hashed and written
AHEAD_DEPTH = 32  # the same for a whole run's decoding, which runs on while repeated layers are copied


@dataclass(frozen=True)
class LayerSource:
    """A layer to decode from its verified blob."""

    index: int
    layer: Descriptor
    diff_id: str
    open: Callable[[], BinaryIO]  # the blob's bytes, unbuffered
    kind: str  # compression_of its first bytes
    key: Hashable  # what a run decodes once


class LayerDone:
    """The end of one layer's chunks."""

    def __init__(self, padded: bool):
        self.padded = padded


class LayerFailed:
    """Decoding a layer stopped: the error."""

    def __init__(self, error: BaseException):
        self.error = error


def consume(pipe: "Decoding | Ahead", each: Callable[[bytes], object]) -> LayerDone | LayerFailed:
    """Give each chunk of the pipe's current layer to `each`; the item that ends the layer."""
    get = pipe.get
    item = get()
    while type(item) is bytes:
        each(item)
        item = get()
    assert isinstance(item, (LayerDone, LayerFailed))
    return item


def failure_reason(error: BaseException) -> str:
    """Why a layer could not be decoded, in a few words; anything but a read or decoding error is raised
    (a bug, or no memory: as if it had happened in the caller)."""
    if isinstance(error, OSError):
        return f"cannot read the stored blob ({error.strerror or error})"
    if isinstance(error, LayerError):
        return str(error)
    raise error


class Decoding:
    """Decodes layers, one after the other, in a thread of its own into a bounded queue of chunks.

    The caller hashes and writes each chunk while the next one, or the next layer, is decompressed:
    zlib, zstd, bz2 and lzma decoding, sha256 of large buffers and file writes all let go of the GIL,
    so the two run on two cores. At most QUEUE_DEPTH chunks wait, so memory stays bounded."""

    def __init__(self, sources: list[LayerSource], depth: int | None = None):
        self.q: queue.Queue = queue.Queue(depth or QUEUE_DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(sources,), name="regcarve-decode", daemon=True)
        self.thread.start()

    def _run(self, sources: list[LayerSource]) -> None:
        for src in sources:
            item: object
            try:
                with src.open() as raw:
                    dec = codecs.decoder(src.kind, raw)
                    while chunk := dec.read(CHUNK):
                        if not self._put(chunk):
                            return
                item = LayerDone(getattr(dec, "padded", False))
            except BaseException as e:  # the caller raises it, in its own thread
                item = LayerFailed(e)
            if not self._put(item):
                return

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def get(self) -> object:
        """The next chunk (bytes), or the LayerDone or LayerFailed that ends a layer."""
        while True:
            try:
                return self.q.get(timeout=1)
            except queue.Empty:
                if not self.thread.is_alive() and self.q.empty():
                    return LayerFailed(RuntimeError("the decoding thread ended early"))

    def close(self) -> None:
        """Stop the thread, wherever it is, and wait for it."""
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.q.get(timeout=0.05)  # unblocks a put
            except queue.Empty:
                pass
        self.thread.join()


class Ahead:
    """Layers decoded by one Decoding thread in the order the archives will ask for them.

    Made for a whole run (DockerArchiveWriter.prepare), the thread goes on into the next image's
    layers while this image's repeated layers are copied and its archive is finished. When an image
    fails part-way, the layers it did not take are skipped, and a later image needing one of them
    decodes it alone."""

    def __init__(self, sources: list[LayerSource], depth: int | None = None):
        self.sources = sources
        self.where = {s.key: i for i, s in enumerate(sources)}  # callers give each key once
        self.pos = 0  # the layer whose items come next
        self.inside = False  # some of its items were taken already
        self.pipe = Decoding(sources, depth) if sources else None

    def take(self, key: Hashable) -> LayerSource | None:
        """Skip to the layer of `key` and return its source; None when it is not ahead any more."""
        i = self.where.get(key, -1)
        if i < self.pos + self.inside:
            return None
        while self.pos < i:
            self._skip()
        self.inside = True
        return self.sources[i]

    def get(self) -> object:
        """As Decoding.get."""
        assert self.pipe is not None
        item = self.pipe.get()
        if type(item) is not bytes:
            self.pos, self.inside = self.pos + 1, False
        return item

    def _skip(self) -> None:
        while type(self.get()) is bytes:
            pass

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()

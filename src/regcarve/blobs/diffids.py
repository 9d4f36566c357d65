"""diff_ids of layer blobs: each decompressed once a run, hashed while it inflates, nothing written.

The layers are decoded in the decoding thread docker-archive uses (blobs/decode.py), so inflating one
chunk and hashing the one before run on two cores; no uncompressed byte is kept beyond the bounded queue.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

from regcarve.blobs import decode
from regcarve.blobs.codecs import compression_of
from regcarve.blobs.decode import LayerFailed, LayerSource
from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import Descriptor


class DiffIdError(Exception):
    """A layer whose uncompressed content cannot be read: why (the layer is named)."""


@dataclass(frozen=True)
class _Failed:
    reason: str


class DiffIds:
    """The diff_id of each layer blob asked for, computed at most once however often it is asked."""

    def __init__(self, blobs: BlobSource):
        self.blobs = blobs
        self.known: dict[str, str | _Failed] = {}
        self.inflated: Counter[str] = Counter()  # layer digest → times decoded (once, or the cache is broken)

    def of(self, digests: list[str]) -> list[str]:
        """The diff_id of each digest, in order; DiffIdError for the first that cannot be decoded."""
        todo = list(dict.fromkeys(d for d in digests if d not in self.known))
        if todo:
            self._decode(todo)
        out = []
        for digest in digests:
            found = self.known[digest]
            if isinstance(found, _Failed):
                raise DiffIdError(found.reason)
            out.append(found)
        return out

    def _decode(self, digests: list[str]) -> None:
        sources, opened = [], []
        try:
            for digest in digests:
                try:  # opened once: its first bytes say how it is compressed, then it is decoded from the start
                    f = self.blobs.open(digest)
                    opened.append(f)
                    head = f.read(8)
                    f.seek(0)
                except OSError as e:
                    self.known[digest] = _Failed(f"layer {digest}: {decode.failure_reason(e)}")
                    continue
                layer = Descriptor("", digest, -1)
                sources.append(LayerSource(len(sources), layer, "", functools.partial(_same, f), compression_of(head),
                                           digest))
            if sources:
                self._hash_all(sources)
        finally:
            for f in opened:
                f.close()

    def _hash_all(self, sources: list[LayerSource]) -> None:
        pipe = decode.Decoding(sources)
        try:
            for src in sources:
                self.inflated[src.key] += 1
                self.known[src.layer.digest] = self._hash(pipe, src)
        finally:
            pipe.close()

    @staticmethod
    def _hash(pipe: decode.Decoding, src: LayerSource) -> str | _Failed:
        h = hashlib.sha256()
        item = decode.consume(pipe, h.update)
        if isinstance(item, LayerFailed):
            return _Failed(f"layer {src.layer.digest} ({src.kind}): {decode.failure_reason(item.error)}")
        return "sha256:" + h.hexdigest()


def _same(f: BinaryIO) -> BinaryIO:
    return f

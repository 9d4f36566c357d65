"""A cursor over the blocks of a (decompressed) stream: offsets, takes and skips across block edges."""

from __future__ import annotations

from typing import BinaryIO

from regcarve.sources.tarball.bzip2 import Bzip2Decoder
from regcarve.sources.tarball.decoders import GzipDecoder, PlainBlocks, ThreadedBlocks, ZstdDecoder
from regcarve.sources.tarball.errors import SourceError, TruncatedInput, count_nonzero
from regcarve.sources.tarball.lz4frames import Lz4Decoder
from regcarve.sources.tarball.source import RawSource
from regcarve.sources.tarball.xz import XzDecoder

PIXZ_INDEX_MAGIC = 0xDBAE14D62E324CA6 .to_bytes(8, "little")
_DECODERS = {"gzip": GzipDecoder, "zstd": ZstdDecoder, "xz": XzDecoder, "bzip2": Bzip2Decoder, "lz4": Lz4Decoder}


class BlockCursor:
    """The stream as large reused blocks, decompressed in a background thread when it is compressed.

    Subclasses say where in their format the cursor is (`_where`), for the one-line errors."""

    def __init__(self, raw: RawSource, compression: str, owned: BinaryIO | None, piped: bool = False) -> None:
        self.compression = compression
        self.piped = piped
        self._raw = raw
        self._owned = owned
        self._blocks: PlainBlocks | ThreadedBlocks
        decoder = _DECODERS.get(compression)
        self._blocks = ThreadedBlocks(decoder(raw)) if decoder is not None else PlainBlocks(raw)
        self._blk = memoryview(b"")
        self._pos = 0
        self._base = 0  # stream offset of self._blk[0]
        self._eof = False
        self._closed = False

    @property
    def source_bytes(self) -> int:
        return self._raw.count

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._blocks.close()
        if self._owned is not None:
            self._owned.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _where(self) -> str:
        return f"(at byte {self._offset} of the tar stream)"

    @property
    def _offset(self) -> int:
        return self._base + self._pos

    def _next_block(self) -> bool:
        """Replace the current block with the next one; False at the end of the stream."""
        if self._eof:
            return False
        self._base += len(self._blk)
        self._blk, self._pos = memoryview(b""), 0
        try:
            blk = self._blocks.next()
        except SourceError as e:
            self._eof = True
            raise e.cls(f"{e.message}, {self._where()}") from e
        self._blk = blk
        if not blk:
            self._eof = True
        return bool(blk)

    def _need_block(self) -> None:
        if not self._next_block():
            raise self._truncated("")

    def _take(self, n: int) -> bytes:
        """Up to n bytes; fewer only at the end of the stream."""
        pos = self._pos
        if len(self._blk) - pos >= n:
            self._pos = pos + n
            return self._blk[pos : pos + n].tobytes()
        parts: list[bytes] = []
        got = 0
        while got < n:
            avail = len(self._blk) - self._pos
            if not avail:
                if not self._next_block():
                    break
                continue
            k = min(avail, n - got)
            parts.append(self._blk[self._pos : self._pos + k].tobytes())
            self._pos += k
            got += k
        return b"".join(parts)

    def _take_all(self, n: int) -> bytes:
        """n bytes; the stream ending before them is a truncation."""
        data = self._take(n)
        if len(data) < n:
            raise self._truncated("")
        return data

    def _skip(self, n: int) -> None:
        while n:
            avail = len(self._blk) - self._pos
            if not avail:
                self._need_block()
                continue
            k = min(avail, n)
            self._pos += k
            n -= k

    def _skip_pixz_index(self) -> int | None:
        """After the end of a tar in an .xz stream: pixz writes its own index of the tar there, at a 512-byte
        boundary, and it is not trailing data. None when it was there (the stream is then read to its end,
        so that xz checks it all); else the non-zero bytes of the first 512 that are not all zero."""
        while unit := self._take(512):
            if unit.startswith(PIXZ_INDEX_MAGIC):
                self._pos = len(self._blk)
                while self._next_block():
                    self._pos = len(self._blk)
                return None
            if unit.strip(b"\0"):
                return count_nonzero(unit)
        return 0

    def _nonzero_to_end(self) -> int:
        """Read to the end of the stream, so that the decoders check their trailers: the non-zero bytes met
        (none are counted in a pixz index)."""
        nonzero = self._skip_pixz_index() if self.compression == "xz" else 0
        if nonzero is None:
            return 0
        while True:
            rest = self._blk[self._pos :].tobytes()
            self._pos = len(self._blk)
            nonzero += count_nonzero(rest)
            if not self._next_block():
                return nonzero

    def _garbage_note(self) -> str:
        garbage = self._container_garbage
        if garbage:
            kind = self.compression
            return f"; {garbage} bytes that are not {kind} follow the {kind} stream"
        return ""

    @property
    def _container_garbage(self) -> int:
        blocks = self._blocks
        return blocks.decoder.garbage if isinstance(blocks, ThreadedBlocks) else 0

    def _truncated(self, what: str) -> TruncatedInput:
        return TruncatedInput(f"input truncated: ended {what}{self._where()}{self._garbage_note()}")

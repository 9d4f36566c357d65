"""Decompression: gzip (multi-member, own member loop) and zstd (frames followed on the compressed side),
run in a background thread that hands out large blocks."""

from __future__ import annotations

import queue
import threading
import time
from typing import Protocol

import zstandard

from regcarve.blobs import inflate
from regcarve.sources.tarball.errors import (
    CorruptInput,
    SourceError,
    TruncatedInput,
    count_nonzero,
)
from regcarve.sources.tarball.pieces import CutPieces, FieldWalker, PieceDecoder
from regcarve.sources.tarball.source import ZSTD_MAGIC, RawSource

BUFFER_SIZE = 1 << 20  # decompressed bytes per block; tests shrink it to hit block edges
_QUEUE_DEPTH = 3  # blocks the decompression thread may run ahead
_READ_SIZE = 1 << 20  # compressed bytes per read (gzip)
CLOSE_GRACE = 1.0  # seconds close() waits for the decompression thread


# --------------------------------------------------------------------------- decoders


class _Decoder(Protocol):
    @property
    def garbage(self) -> int:  # non-zero bytes found after the end of the compressed stream
        ...

    def read(self, n: int) -> bytes: ...


def _inflater() -> inflate.Inflater:
    # Raw deflate: the gzip header and trailer are checked here, so that a damaged trailer is
    # reported after every byte it covers was handed out (zlib drops a call's output on error).
    return inflate.new_inflater(-15)


_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


class GzipDecoder:
    """Multi-member gzip (pigz, eStargz, `cat a.gz b.gz`). Own member loop, so that the exact
    end of the gzip stream is known: zero padding is allowed, anything else is garbage."""

    def __init__(self, raw: RawSource) -> None:
        self._raw = raw
        self._d = _inflater()
        self._pending = b""  # compressed bytes not yet given to the inflater
        self._in_member = False
        self._done = False
        self._members = 0
        self._crc = 0
        self._size = 0
        self._error: SourceError | None = None  # raised at the next read, after the data it follows
        self.garbage = 0

    def read(self, n: int) -> bytes:
        if self._error is not None:
            raise self._error
        while not self._done:
            if not self._pending and (not self._in_member or self._d.needs_input):
                self._pending = self._raw.read(_READ_SIZE)
                if not self._pending:
                    if self._in_member:
                        raise SourceError(TruncatedInput, "input truncated: gzip stream ended early")
                    self._done = True
                    break
            if not self._in_member and not self._start_member():
                continue
            try:
                out = self._d.decompress(self._pending, n)
            except inflate.ZLIB_ERRORS as e:
                raise SourceError(CorruptInput, f"input corrupt: gzip data is damaged ({e})") from e
            self._pending = b""
            if out:
                self._crc = inflate.crc32(out, self._crc)
                self._size += len(out)
            if self._d.eof:
                self._pending = self._d.unused_data
                self._d = _inflater()
                self._in_member = False
                try:
                    self._check_trailer()
                except SourceError as e:
                    if not out:
                        raise
                    self._error = e
            if out:
                return out
        return b""

    def _fill(self, k: int) -> bytes:
        """At least k pending bytes, or fewer at the end of the input."""
        while len(self._pending) < k:
            more = self._raw.read(_READ_SIZE)
            if not more:
                break
            self._pending += more
        return self._pending

    def _check_trailer(self) -> None:
        trailer = self._fill(8)[:8]
        if len(trailer) < 8:
            raise SourceError(TruncatedInput, "input truncated: gzip stream ended early")
        self._pending = self._pending[8:]
        crc, size = int.from_bytes(trailer[:4], "little"), int.from_bytes(trailer[4:], "little")
        if crc != self._crc or size != self._size & 0xFFFFFFFF:
            raise SourceError(CorruptInput, f"input corrupt: gzip member {self._members} fails its "
                              f"{'CRC' if crc != self._crc else 'length'} check")

    def _start_member(self) -> bool:
        """At a member boundary: skip zero padding, then expect the gzip magic and parse the header."""
        self._pending = self._pending.lstrip(b"\0")
        if len(self._pending) == 1:
            self._pending += self._raw.read(1)
        if not self._pending:
            return False
        if self._pending[:2] != b"\x1f\x8b":
            self.garbage = count_nonzero(self._pending) + self._raw.drain_nonzero()
            self._pending = b""
            self._done = True
            return False
        self._skip_header()
        self._in_member = True
        self._members += 1
        self._crc = self._size = 0
        return True

    def _skip_header(self) -> None:
        head = self._fill(10)
        if len(head) < 10:
            raise SourceError(TruncatedInput, "input truncated: gzip stream ended early")
        if head[2] != 8:
            raise SourceError(CorruptInput, f"input corrupt: gzip member uses compression method {head[2]}")
        flags, pos = head[3], 10
        if flags & _FEXTRA:
            pos = self._need(pos + 2)
            pos += int.from_bytes(self._pending[pos - 2 : pos], "little")
        for flag in (_FNAME, _FCOMMENT):
            if flags & flag:
                while (end := self._pending.find(b"\0", pos)) < 0:
                    self._need(len(self._pending) + 1)
                pos = end + 1
        if flags & _FHCRC:
            pos += 2
        self._need(pos)
        self._pending = self._pending[pos:]

    def _need(self, k: int) -> int:
        if len(self._fill(k)) < k:
            raise SourceError(TruncatedInput, "input truncated: gzip stream ended early")
        return k


# Tags of the pieces _ZstdFrames cuts a zstd stream into: a frame's first piece, any later one (after a
# block's end, or its checksum alone), and a skippable frame, which is not decoded.
FRAME_START, FRAME_MORE, SKIPPABLE = "start", "more", "skippable"


class _ZstdFrames(FieldWalker[str]):
    """Follows zstd frames through the compressed bytes and says where to cut them.

    A piece ends at the end of every block and before every frame checksum, so a frame decoder given
    one piece at a time decodes at most one block (<= 128 KiB, whatever a hostile stream claims), and
    a damaged checksum is met by a call that decodes nothing: the data before it is handed out first.
    It also finds what python-zstandard does not: a stream cut inside a frame, and bytes after the last
    frame. Cost: a few operations per block."""

    def __init__(self) -> None:
        super().__init__(4, self._magic)
        self._checksum = 0

    @property
    def at_boundary(self) -> bool:
        return self._step == self._magic and not self._acc and not self._skip

    @property
    def mid_magic(self) -> bool:
        return self._step == self._magic and bool(self._acc)

    def _magic(self, b: bytes) -> None:
        magic = int.from_bytes(b, "little")
        if magic == ZSTD_MAGIC:
            self.cuts.append((self._field_at, FRAME_START))
            self._want, self._step = 1, self._frame_header
        elif magic & 0xFFFFFFF0 == 0x184D2A50:
            self.cuts.append((self._field_at, SKIPPABLE))
            self._want, self._step = 4, self._skippable_size
        else:
            self.garbage_at = self._field_at

    def _skippable_size(self, b: bytes) -> None:
        self._skip = int.from_bytes(b, "little")
        self._want, self._step = 4, self._magic

    def _frame_header(self, b: bytes) -> None:
        fhd = b[0]
        single_segment = (fhd >> 5) & 1
        self._checksum = 4 if fhd & 4 else 0
        content_size_bytes = (single_segment, 2, 4, 8)[fhd >> 6]
        dict_id_bytes = (0, 1, 2, 4)[fhd & 3]
        self._skip = (1 - single_segment) + dict_id_bytes + content_size_bytes
        self._want, self._step = 3, self._block_header

    def _block_header(self, b: bytes) -> None:
        h = int.from_bytes(b, "little")
        block_type, size = (h >> 1) & 3, h >> 3
        self._skip = 1 if block_type == 1 else size  # an RLE block stores one byte
        end = self._field_at + 3 + self._skip
        if not h & 1 or self._checksum:  # a block ends where a later one or the checksum starts
            self.cuts.append((end, FRAME_MORE))
        if h & 1:  # the last block of the frame
            self._skip += self._checksum
            self._want, self._step = 4, self._magic


class ZstdDecoder(PieceDecoder[str]):
    """Every frame of a zstd stream, each decoded piece by piece (see _ZstdFrames); skippable frames,
    as zstd:chunked writes, are passed over. An error is raised once the output before it is out."""

    def __init__(self, raw: RawSource) -> None:
        super().__init__(CutPieces(raw, _ZstdFrames(), ""))
        # 2 GiB window: streams made with `zstd --long=31` are refused by the default limit.
        self._dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
        self._frame = None

    def _refill(self, want: int) -> bool:
        """Decode the next piece into _out; False at the end of the stream."""
        piece = self._pieces.next()
        if piece is None:
            if not self._pieces.walker.at_boundary or (self._frame is not None and not self._frame.eof):
                self._error = SourceError(TruncatedInput, "input truncated: zstd stream ends inside a frame")
            return False
        tag, first, data = piece
        if tag == SKIPPABLE:
            return True
        if tag == FRAME_START and first:
            if self._frame is not None and not self._frame.eof:
                return self._corrupt("a frame ends before its last block")
            self._frame = self._dctx.decompressobj()
        elif self._frame is None or self._frame.eof:
            return self._corrupt("data after the end of a frame")
        try:
            self._out = memoryview(self._frame.decompress(data))
        except zstandard.ZstdError as e:
            return self._corrupt(str(e).removeprefix("zstd decompressor error: "))
        return True

    def _corrupt(self, reason: str) -> bool:
        self._error = SourceError(CorruptInput, f"input corrupt: zstd data is damaged ({reason})")
        return True


# --------------------------------------------------------------------------- block sources


class PlainBlocks:
    """Uncompressed input: readinto one reused buffer (a thread did not pay off here)."""

    def __init__(self, raw: RawSource) -> None:
        self._raw = raw
        self._mv = memoryview(bytearray(BUFFER_SIZE))
        self._error: SourceError | None = None

    def next(self) -> memoryview:
        if self._error is not None:
            raise self._error
        mv, n = self._mv, 0
        while n < len(mv):
            try:
                k = self._raw.readinto(mv[n:])
            except SourceError as e:
                if n:  # hand out what was read first
                    self._error = e
                    break
                raise
            if not k:
                break
            n += k
        return mv[:n]

    def close(self) -> None:
        pass


class ThreadedBlocks:
    """Runs a decoder in a background thread; zstd and zlib release the GIL while they work."""

    def __init__(self, decoder: _Decoder) -> None:
        self.decoder = decoder
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(_QUEUE_DEPTH)
        self._stop = False
        self._done = False
        self._thread = threading.Thread(target=self._run, name="regcarve-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                data = self.decoder.read(BUFFER_SIZE)
                self._queue.put(data)
                if not data:
                    return
        except BaseException as e:  # re-raised in the reading thread
            self._queue.put(e)
        finally:
            release = getattr(self.decoder, "close", None)  # a decoder with worker threads of its own (xz)
            if release is not None:
                release()

    def next(self) -> memoryview:
        if self._done:
            return memoryview(b"")
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
        return memoryview(item)

    def close(self) -> None:
        self._stop = True
        # Unblock a worker waiting on a full queue. One blocked reading a stalled pipe cannot be
        # woken: after a grace period it is left behind (a daemon thread), so an interrupt still ends the run.
        deadline = time.monotonic() + CLOSE_GRACE
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass



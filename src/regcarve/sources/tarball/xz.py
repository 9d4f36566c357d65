""".xz input: every stream of the file (xz, pixz, `cat a.xz b.xz`), with the checks the file carries; the
blocks decoded on every core when their headers give their sizes (`xz -T`, pixz), else one after the other.

xzwalk.py follows the structure on the compressed side and checks what lies between the blocks. liblzma
(Python's lzma) decodes each block as a stream of its own: its stream's header, the block as it is in the
file, then an index and footer made for it. So liblzma still checks the block header and the block check
(CRC32, CRC64, SHA-256), and a block whose size is known up front can go to a worker thread (liblzma releases
the GIL) while the blocks before it are handed out, in input order. The check reaches liblzma alone, after
every byte it covers is out; the piece in which liblzma fails names the damage (liblzma says only "Corrupt
input data")."""

from __future__ import annotations

import lzma
import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Full, Queue

from regcarve.sources.tarball.errors import CorruptInput, SourceError, TruncatedInput
from regcarve.sources.tarball.pieces import CutPieces, PieceDecoder
from regcarve.sources.tarball.source import RawSource
from regcarve.sources.tarball.xzwalk import (BLOCK_CHECK, BLOCK_DATA, BLOCK_HEADER, STREAM_PADDING, XzBlock, XzPart,
                                             XzWalker)

STEP = 1 << 16  # decoded bytes per decoder call: what one failing call takes down with it, at most
IN_FLIGHT = 64 << 20  # decoded bytes the blocks given to workers may come to, together
BATCH = 1 << 20  # decoded bytes a worker hands over at once
HELD = 12 << 20  # decoded bytes of one block that may wait to be handed out; blocks up to twice that keep 2 cores busy
MAX_JOB = IN_FLIGHT // 2  # a block larger than this, packed or not, is decoded here as it streams in


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _vli(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _index_and_footer(block: XzBlock) -> bytes:
    """The end of a stream that holds `block` alone."""
    index = b"\0\x01" + _vli(block.unpadded) + _vli(block.size)
    index += bytes(-len(index) % 4)
    index += zlib.crc32(index).to_bytes(4, "little")
    sizes_and_flags = (len(index) // 4 - 1).to_bytes(4, "little") + block.stream_header[6:8]
    return index + zlib.crc32(sizes_and_flags).to_bytes(4, "little") + sizes_and_flags + b"YZ"


class OneBlock:
    """One block, given to liblzma as a stream of its own, piece by piece as they are added."""

    def __init__(self, block: XzBlock, for_worker: bool) -> None:
        self.block = block
        self.for_worker = for_worker  # decoded whole by a worker once every piece is in; else here, as they come
        self.future: Future[None] | None = None  # the worker's run, which puts its output in `output`
        self.output: Queue[list[bytes] | BaseException | None] = Queue(max(1, HELD // BATCH))
        self.dropped = False  # set when its output is no longer wanted
        self.received = block.at  # input offset of the end of the pieces added
        self.closed = False
        self._lz: lzma.LZMADecompressor | None = lzma.LZMADecompressor(lzma.FORMAT_XZ)  # None once done
        self._piece = (XzPart(BLOCK_HEADER, block.stream, block), block.at, block.at)  # the one in flight
        self._in: bytes | memoryview = block.stream_header
        self._todo: deque[tuple[XzPart, int, int, bytes | memoryview]] = deque()

    @property
    def done(self) -> bool:
        return self._lz is None

    def add(self, part: XzPart, data: bytes | memoryview) -> None:
        self._todo.append((part, self.received, self.received + len(data), data))
        self.received += len(data)

    def close(self) -> None:
        """Every piece of the block is in: the index and footer made for it follow."""
        block = self.block
        self._todo.append((XzPart(BLOCK_DATA, block.stream, block), block.end, block.end, _index_and_footer(block)))
        self.closed = True

    def decode(self, limit: int) -> bytes:
        """Up to `limit` decoded bytes; b"" once done, or when liblzma needs a piece not added yet."""
        while self._lz is not None:
            if not self._in and self._lz.needs_input:
                if not self._todo:
                    return b""
                part, at, end, self._in = self._todo.popleft()
                self._piece = (part, at, end)
            try:
                out = self._lz.decompress(self._in, limit)
            except lzma.LZMAError as e:
                raise SourceError(CorruptInput, f"input corrupt: {self._damage(str(e))}") from None
            self._in = b""
            if self._lz.eof:
                self._lz = None  # its dictionary (8 MiB at xz -6) is freed now, not when the block is handed out
            if out:
                return out
        return b""

    def decode_to(self, output: Queue[list[bytes] | BaseException | None]) -> None:
        """In a worker: every decoded byte of the block in order, in batches of about BATCH bytes (fewer
        hand-overs between threads), then None, or the error that ended it. It waits while HELD bytes of it
        wait to be handed out."""
        batch: list[bytes] = []
        size = 0
        try:
            while not self.dropped and (chunk := self.decode(STEP)):
                batch.append(chunk)
                size += len(chunk)
                if size >= BATCH:
                    self._put(output, batch)
                    batch, size = [], 0
            if not self.done:  # liblzma wants more than the block and the end made for it
                raise SourceError(CorruptInput, f"input corrupt: {self._damage('the block ends early')}")
            self._put(output, batch)
            self._put(output, None)
        except BaseException as e:  # raised in the reading thread, after what was decoded before it
            self._put(output, batch)
            self._put(output, e)

    def _put(self, output: Queue[list[bytes] | BaseException | None], item: list[bytes] | BaseException | None,
             ) -> None:
        while not self.dropped:
            try:
                output.put(item, timeout=0.05)
                return
            except Full:
                pass

    def _damage(self, reason: str) -> str:
        """What failed, for liblzma's error `reason` met in the piece in flight."""
        part, at, end = self._piece
        block = self.block
        of_stream = f" of stream {block.stream}" if block.stream > 1 else ""
        name = f"xz block {block.number}{of_stream} (at byte {block.at} of the input)"
        if part.region == BLOCK_CHECK:
            return f"{name} fails its {block.check} check (stored at byte {at})"
        if part.region == BLOCK_HEADER:
            return f"{name} has a damaged header: it fails its CRC32 check or names what xz does not know ({reason})"
        return f"{name} is damaged: its LZMA2 data does not decode ({reason}; found by byte {end})"


class XzDecoder(PieceDecoder[XzPart]):
    """Every stream of an .xz file, block by block (see OneBlock). An error is raised once the output before
    it is out; a failed block check costs no data it covers."""

    def __init__(self, raw: RawSource, workers: int | None = None) -> None:
        super().__init__(CutPieces(raw, XzWalker(), XzPart(STREAM_PADDING)))
        self._workers = _cores() if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._units: deque[OneBlock | SourceError] = deque()  # in input order; each handed out whole in turn
        self._open: OneBlock | None = None  # the block whose pieces are still coming
        self._region = STREAM_PADDING  # of the last piece taken
        self._input_done = False
        self._batch: deque[bytes] = deque()  # a worker's output, to hand out

    def close(self) -> None:
        """Drop the blocks not handed out yet; a worker's block under way ends at its next step."""
        for unit in self._units:
            if isinstance(unit, OneBlock):
                unit.dropped = True
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _refill(self, want: int) -> bool:
        """Set _out to the next decoded bytes; False at the end, or with _error set."""
        while True:
            if self._batch:
                self._out = memoryview(self._batch.popleft())
                return True
            self._fill()
            if not self._units:
                return False
            head = self._units[0]
            if isinstance(head, SourceError):
                return self._fail(head)
            if head.future is not None:  # handed out as the worker decodes it
                item = head.output.get()
                if isinstance(item, list):
                    self._batch.extend(item)
                    continue
                if isinstance(item, SourceError):
                    return self._fail(item)
                if item is not None:
                    raise item
                self._units.popleft()
                continue
            try:
                out = head.decode(min(want, STEP))
            except SourceError as e:
                return self._fail(e)
            if out:
                self._out = memoryview(out)
                return True
            if head.done:
                self._units.popleft()
            elif head is self._open and not self._input_done:
                self._pull()
            else:  # the input ended inside it: the error queued after it says so
                self._units.popleft()

    def _fail(self, error: SourceError) -> bool:
        self._error = error
        self.close()
        return False

    def _fill(self) -> None:
        """Take pieces while a block for a worker is being gathered and there is room for it."""
        while not self._input_done and self._error is None:
            unit = self._open
            if unit is not None and not unit.for_worker:
                return  # taken as it is decoded
            if not self._room(unit.block.declared_size or 0 if unit is not None else 0):
                return
            self._pull()

    def _room(self, size: int) -> bool:
        """Whether a block of `size` decoded bytes may go to a worker now: one is free, and the blocks given
        to workers and not handed out yet, with this one, stay within IN_FLIGHT."""
        jobs = [u for u in self._units if isinstance(u, OneBlock) and u.future is not None]
        busy = sum(not u.future.done() for u in jobs if u.future is not None)
        return busy < self._workers and sum(u.block.declared_size or 0 for u in jobs) + size <= IN_FLIGHT

    def _pull(self) -> None:
        """Take the next piece and give it to the block it belongs to."""
        at = self._pieces.at
        piece = self._pieces.next()
        fault = self._pieces.walker.fault
        if fault is not None and (piece is None or at >= fault[0]):
            self._stop(SourceError(CorruptInput, f"input corrupt: {fault[1]}"))
            return
        if piece is None:
            self._end_of_input()
            return
        part, _, data = piece
        self._region = part.region
        block = part.block
        if block is None:
            return  # the walker checks what lies between the blocks
        unit = self._open
        if unit is None or unit.block is not block:
            unit = self._open = self._start(block)
        unit.add(part, data)
        if block.end and unit.received == block.end:
            unit.close()
            self._open = None
            if unit.for_worker and block.end == block.declared_end:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="regcarve-xz")
                unit.future = self._pool.submit(unit.decode_to, unit.output)
            else:
                unit.for_worker = False
        elif unit.for_worker and unit.received >= (block.declared_end or 0):
            unit.for_worker = False  # larger than its header says: liblzma will say why, as it streams in

    def _start(self, block: XzBlock) -> OneBlock:
        sizes = (block.declared_packed, block.declared_size)
        for_worker = self._workers > 1 and None not in sizes and max(sizes) <= MAX_JOB  # type: ignore[type-var]
        unit = OneBlock(block, for_worker)
        self._units.append(unit)
        return unit

    def _end_of_input(self) -> None:
        walker = self._pieces.walker
        if self._open is not None or not (walker.at_boundary or walker.garbage_at is not None):
            self._stop(SourceError(TruncatedInput, f"input truncated: xz stream ends inside its {self._region}"))
        self._input_done = True

    def _stop(self, error: SourceError) -> None:
        """No more pieces: the blocks before `error` are handed out, then it is raised."""
        self._units.append(error)
        self._input_done = True
        if self._open is not None:
            self._open.for_worker = False  # what there is of it is decoded here

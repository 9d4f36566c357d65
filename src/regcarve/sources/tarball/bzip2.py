""".bz2 input: every stream of the file (bzip2, lbzip2, pbzip2 writes one per block, `cat a.bz2 b.bz2`).

libbzip2 (Python's bz2) decodes each block whole, then hands it out while it computes the block's CRC,
and fails the call that hands out the block's last byte when the CRC differs. Its error says only
"Invalid data stream". Blocks start at any bit, so they are not followed on the way: only when an error
comes are the last compressed bytes searched for block starts, and each block there is decoded again on
its own to say which one is damaged and how."""

from __future__ import annotations

import bz2
from collections import deque
from dataclasses import dataclass

from regcarve.sources.tarball.errors import CorruptInput, SourceError, TruncatedInput, count_nonzero
from regcarve.sources.tarball.source import RawSource, is_bzip2_header

STEP = 1 << 20  # decoded bytes per decoder call
SLICE = 4096  # compressed bytes per decoder call
_READ_SIZE = 1 << 20
_HOLD_LIMIT = 64 << 20  # decoded bytes held back at most; ordinary blocks are < 1 MB
_KEPT = 3 << 20  # compressed bytes kept to look back into after an error: more than two whole blocks
BLOCK_MAGIC, END_MAGIC = 0x314159265359, 0x177245385090  # 48 bits each, at any bit offset
_BZIP2_ERRORS = (OSError, EOFError, ValueError)


def bit_offsets(data: bytes, magic: int) -> list[int]:
    """Every bit offset at which the 48-bit `magic` starts in `data`."""
    found = []
    for shift in range(8):
        field = magic << (8 - shift) % 8  # the magic as it lies in bytes when it starts `shift` bits in
        width = 7 if shift else 6
        middle = field.to_bytes(width, "big")[1:6] if shift else field.to_bytes(6, "big")
        start = 1 if shift else 0
        i = data.find(middle)
        while i >= 0:
            first = i - start
            if first >= 0 and first + width <= len(data):
                bits = int.from_bytes(data[first : first + width], "big") >> ((8 - shift) % 8)
                if bits & ((1 << 48) - 1) == magic:
                    found.append(first * 8 + shift)
            i = data.find(middle, i + 1)
    return sorted(found)


def _bits(data: bytes, start: int, count: int) -> int:
    """`count` bits of `data` from bit offset `start`, as an integer."""
    first, last = start // 8, (start + count + 7) // 8
    value = int.from_bytes(data[first:last], "big")
    return (value >> (last * 8 - start - count)) & ((1 << count) - 1)


def judge_block(data: bytes, start: int, end: int) -> str:
    """Decode the block that lies in `data` from bit `start` to bit `end` as a stream of its own:
    "ok", "crc" (it decodes whole and fails its CRC) or "damaged" (it does not decode)."""
    length = end - start
    if length < 80:
        return "damaged"
    block = _bits(data, start, length)
    stored_crc = (block >> (length - 80)) & 0xFFFFFFFF
    single = ((block << 48 | END_MAGIC) << 32) | stored_crc  # its own CRC is the stream's CRC too
    total = length + 80
    single <<= -total % 8
    d = bz2.BZ2Decompressor()
    try:
        d.decompress(b"BZh9" + single.to_bytes((total + 7) // 8, "big"), 1)  # no byte out before it decodes
    except _BZIP2_ERRORS:
        return "damaged"
    try:
        while not d.eof and not d.needs_input:
            d.decompress(b"", 1 << 20)
    except _BZIP2_ERRORS:
        return "crc"
    return "ok" if d.eof else "damaged"


@dataclass(frozen=True)
class Damage:
    """Where in the input a bzip2 failure lies, and what failed there."""

    at: int  # input offset
    what: str
    blocks_ok: bool = False  # every block passed its own CRC: only the stream's CRC or end failed

    def message(self) -> str:
        return f"input corrupt: {self.what} (at byte {self.at} of the input)"


def find_damage(window: bytes, window_at: int, reason: str) -> Damage | None:
    """Which block of the last compressed bytes fails, and how; `window` ends where the decoder failed.
    None when every whole block there decodes and no stream ends there."""
    starts = bit_offsets(window, BLOCK_MAGIC)
    ends = bit_offsets(window, END_MAGIC)
    for i, start in enumerate(starts):
        later = [b for b in (*starts[i + 1 : i + 2], *ends) if b > start]
        if not later:
            break
        verdict = judge_block(window, start, min(later))
        if verdict == "crc":
            return Damage(window_at + start // 8, "bzip2 block fails its CRC check")
        if verdict == "damaged":
            return Damage(window_at + start // 8, f"bzip2 block is damaged: it does not decode ({reason})")
    if ends:
        return Damage(window_at + ends[0] // 8, "bzip2 stream fails its combined CRC check", blocks_ok=True)
    return None


class Bzip2Decoder:
    """Every bzip2 stream of the input, in turn; zero padding after the last is allowed, anything else
    is garbage. An error is raised once the output before it is out."""

    def __init__(self, raw: RawSource) -> None:
        self._raw = raw
        self._bz: bz2.BZ2Decompressor | None = None
        self._unfed: bytes | memoryview = b""  # compressed bytes read, not yet given to the decoder
        self._pending: bytes | memoryview = b""  # the slice of them the decoder gets next
        self._held: list[bytes] = []  # decoded, not yet known to have passed its block's CRC
        self._held_size = 0
        self._ready = memoryview(b"")  # passed, not handed out yet
        self._kept: deque[tuple[int, bytes]] = deque()  # (input offset, bytes) of the last reads
        self._kept_size = 0
        self._done = False
        self._stream_at = 0  # input offset of the stream being decoded
        self._error: SourceError | None = None
        self.garbage = 0

    def read(self, n: int) -> bytes:
        while not self._ready and self._error is None:
            bz = self._bz
            if bz is None or bz.eof or (not self._pending and bz.needs_input):
                self._release()  # waiting for input: every block it has handed out passed its CRC
                if not self._next_input():
                    break
                continue
            try:
                out = bz.decompress(self._pending, STEP)
            except _BZIP2_ERRORS as e:
                damage = self._damage(str(e))
                if damage.blocks_ok:
                    self._release()
                self._error = SourceError(CorruptInput, damage.message())
                break
            self._pending = b""
            if out:
                self._held.append(out)
                self._held_size += len(out)
            if self._held_size >= _HOLD_LIMIT:  # a stream that expands this far is hostile: nothing to wait for
                self._release()
        if self._ready:
            out, self._ready = self._ready[:n], self._ready[n:]
            return bytes(out)
        if self._error is not None:
            raise self._error
        return b""

    def _release(self) -> None:
        if self._held:
            self._ready = memoryview(b"".join(self._held))
            self._held.clear()
            self._held_size = 0

    def _read_raw(self) -> bytes:
        at = self._raw.handed_out
        data = self._raw.read(_READ_SIZE)
        if data:
            self._kept.append((at, data))
            self._kept_size += len(data)
            while self._kept_size - len(self._kept[0][1]) >= _KEPT:
                self._kept_size -= len(self._kept.popleft()[1])
        return data

    def _next_input(self) -> bool:
        """More compressed bytes for the decoder, a new stream after the end of one; False at the end.

        The decoder gets small slices: it hands out a block once the block's last bits are in, and asks
        for input only when the block is out and has passed its CRC, so output is released whenever it
        asks. A damaged block then takes down with it only the blocks that end in the same slice."""
        bz = self._bz
        if bz is not None and bz.eof:
            self._unfed, self._bz = bz.unused_data + bytes(self._unfed), None
            return self._start_stream()
        if bz is not None:
            if not self._unfed:
                self._unfed = memoryview(self._read_raw())
            self._pending, self._unfed = self._unfed[:SLICE], self._unfed[SLICE:]
            if not self._pending:
                damage = self._damage_found("the input ends inside it")  # a block damaged, or just cut?
                self._error = (SourceError(CorruptInput, damage.message()) if damage and not damage.blocks_ok
                               else SourceError(TruncatedInput, "input truncated: bzip2 stream ended early"))
                return False
            return True
        return self._start_stream()

    def _start_stream(self) -> bool:
        """At a stream boundary: skip zero padding, then expect a bzip2 stream header."""
        unfed = bytes(self._unfed)
        while not self._done:
            unfed = unfed.lstrip(b"\0")
            if len(unfed) >= 4:
                break
            more = self._read_raw()
            if not more:
                self._done = True
            unfed += more
        self._unfed = memoryview(unfed)
        if not unfed:
            return False
        if not is_bzip2_header(unfed):
            self.garbage = count_nonzero(unfed) + self._raw.drain_nonzero()
            self._unfed, self._done = b"", True
            return False
        self._bz = bz2.BZ2Decompressor()
        self._stream_at = self._raw.handed_out - len(unfed)
        return True

    def _damage(self, reason: str) -> Damage:
        return self._damage_found(reason) or Damage(self._raw.handed_out, f"bzip2 data is damaged ({reason}) after "
                                                                     "the last whole block")

    def _damage_found(self, reason: str) -> Damage | None:
        """Looked for from the start of the stream in which the decoder failed, or as far back as kept."""
        window = b"".join(data for _, data in self._kept)
        window_at = self._kept[0][0] if self._kept else 0
        skip = max(0, self._stream_at - window_at)
        return find_damage(window[skip:], window_at + skip, reason)

""".xz structure, followed on the compressed side: where each block starts and ends, and the checks of the
stream around the blocks.

The walker reads every field but the compressed bytes themselves: stream headers (liblzma checks them),
block headers (the sizes they may carry), the LZMA2 chunk headers up to each block's end (the sizes they
carry), the index (checked against the blocks walked: count, sizes, CRC32) and the stream footer (CRC32,
index size, flags). liblzma is then only ever given one block at a time (xz.py), so these stream checks
are made here; a failed one is a `fault`, raised by the decoder once everything before it is out."""

from __future__ import annotations

import hashlib
import lzma
import re
import zlib
from dataclasses import dataclass, field

from regcarve.sources.tarball.pieces import FieldWalker
from regcarve.sources.tarball.source import XZ_MAGIC

CHECK_SIZES = (0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64)
_CHECK_NAMES = {1: "CRC32", 4: "CRC64", 10: "SHA-256"}
_NONZERO = re.compile(rb"[^\x00]")
_HAS_PACKED_SIZE, _HAS_SIZE = 0x40, 0x80  # block header flags


@dataclass
class XzBlock:
    """One block, filled in by the walker as it passes: its header's claims first, its true extent at its end."""

    stream: int  # 1 for the first stream of the file
    number: int  # 1 for the first block of its stream
    at: int  # input offset of the block header
    check_id: int
    stream_header: bytes  # the 12 bytes of its stream's header
    header_size: int
    declared_packed: int | None = None  # compressed size, when the header says
    declared_size: int | None = None  # uncompressed size, when the header says
    end: int = 0  # input offset after the block check; 0 until the walker is past it
    unpadded: int = 0  # header + compressed data + check, as the index counts it
    size: int = 0  # uncompressed, as the LZMA2 chunk headers add up

    @property
    def check(self) -> str:
        return _CHECK_NAMES.get(self.check_id, f"check {self.check_id}")

    @property
    def declared_end(self) -> int | None:
        """Where the block ends if its header tells the truth; None when the header does not say."""
        if self.declared_packed is None or self.declared_size is None:
            return None
        data_end = self.at + self.header_size + self.declared_packed
        return data_end + _align4(data_end - self.at) + CHECK_SIZES[self.check_id]


@dataclass(frozen=True)
class XzPart:
    """What a piece of an .xz file is: a region of one stream, and the block it belongs to."""

    region: str  # one of the region names below
    stream: int = 0
    block: XzBlock | None = field(default=None, compare=False)


STREAM_HEADER, BLOCK_HEADER, BLOCK_DATA, BLOCK_CHECK = "stream header", "block header", "block data", "block check"
INDEX, STREAM_FOOTER, STREAM_PADDING = "index", "stream footer", "stream padding"
BLOCK_REGIONS = (BLOCK_HEADER, BLOCK_DATA, BLOCK_CHECK)


def _align4(n: int) -> int:
    return -n % 4


def _varint(b: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(b) and shift < 63:
        value |= (b[pos] & 0x7F) << shift
        pos += 1
        if not b[pos - 1] & 0x80:
            return value, pos
        shift += 7
    return None, pos


def _size_record(unpadded: int, size: int) -> bytes:
    return unpadded.to_bytes(8, "little") + size.to_bytes(8, "little")


class XzWalker(FieldWalker[XzPart]):
    """The .xz format through its bytes: a handful of Python operations per LZMA2 chunk (<= 64 KiB in)."""

    def __init__(self) -> None:
        super().__init__(1, self._boundary)
        self.stream = 0
        self.fault: tuple[int, str] | None = None  # (input offset, what failed) of the first failed stream check
        self._header = b""
        self._block: XzBlock | None = None
        self._blocks = 0
        self._blocks_hash = hashlib.sha256()
        self._control = 0
        self._index_at = self._index_crc = 0
        self._records: int | None = None
        self._varints_left = 0
        self._varint = self._varint_shift = 0
        self._record: list[int] = []
        self._records_hash = hashlib.sha256()

    @property
    def at_boundary(self) -> bool:
        return self._step == self._boundary and not self._acc and not self._skip

    @property
    def mid_magic(self) -> bool:
        return self._step == self._stream_header and bool(self._acc)

    def feed(self, data: bytes | memoryview) -> None:
        if self._step == self._boundary and not self._acc and not self._skip and self.garbage_at is None:
            found = _NONZERO.search(data)  # stream padding: zero bytes, skipped in one go
            if found is None:
                self.pos += len(data)
                return
            self.pos += found.start()
            data = data[found.start():]
        super().feed(data)

    def _part(self, region: str) -> XzPart:
        return XzPart(region, self.stream, self._block if region in BLOCK_REGIONS else None)

    def _fail(self, at: int, what: str, reason: str) -> None:
        of_stream = f" of stream {self.stream}" if self.stream > 1 else ""
        self.fault = (at, f"xz {what} ({reason}; at byte {at} of the input{of_stream})")
        self._skip = 1 << 62  # nothing after it is walked

    def _boundary(self, b: bytes) -> None:
        if b[0] == 0:
            return  # stream padding
        self._acc += b  # the first byte of what must be a stream header
        self._want, self._step = 12, self._stream_header

    def _stream_header(self, b: bytes) -> None:
        if b[:6] != XZ_MAGIC:
            self.garbage_at = self._field_at
            return
        self.stream += 1
        self._header = b
        self._blocks = 0
        self._blocks_hash = hashlib.sha256()
        self.cuts.append((self._field_at, self._part(STREAM_HEADER)))
        self._want, self._step = 1, self._block_or_index
        try:
            lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(b)
        except lzma.LZMAError as e:
            self._fail(self._field_at, "stream header fails its CRC32 check or names what xz does not know", str(e))

    def _block_or_index(self, b: bytes) -> None:
        if b[0] == 0:
            self._index_at = self._field_at
            self._index_crc = zlib.crc32(b)
            self._block = None
            self.cuts.append((self._field_at, self._part(INDEX)))
            self._records = None
            self._records_hash = hashlib.sha256()
            self._step = self._index_varint
            return
        self._blocks += 1
        header_size = (b[0] + 1) * 4
        self._block = XzBlock(self.stream, self._blocks, self._field_at, self._header[7] & 0x0F, self._header,
                              header_size)
        self.cuts.append((self._field_at, self._part(BLOCK_HEADER)))
        self.cuts.append((self._field_at + header_size, self._part(BLOCK_DATA)))
        self._want, self._step = header_size - 1, self._block_header

    def _block_header(self, b: bytes) -> None:
        """Only the sizes are read: liblzma checks the header (CRC32, filters) when it decodes the block."""
        block, flags, pos = self._block, b[0], 1
        assert block is not None
        if flags & _HAS_PACKED_SIZE:
            block.declared_packed, pos = _varint(b, pos)
        if flags & _HAS_SIZE:
            block.declared_size, pos = _varint(b, pos)
        self._want, self._step = 1, self._lzma2_control

    def _lzma2_control(self, b: bytes) -> None:
        control = b[0]
        if control == 0:  # the end of the block's LZMA2 data
            self._end_block(self._field_at + 1)
        elif control in (1, 2):  # a stored chunk: its size follows
            self._want, self._step = 2, self._stored_chunk
        elif control >= 0x80:  # an LZMA chunk: sizes, and properties after a reset
            self._control = control
            self._want, self._step = 4, self._lzma_chunk
        else:  # not LZMA2: liblzma says why; nothing after it is cut
            self._skip = 1 << 62

    def _end_block(self, data_end: int) -> None:
        block = self._block
        assert block is not None
        check_at = data_end + _align4(data_end - block.at)
        check_size = CHECK_SIZES[block.check_id]
        block.unpadded = data_end - block.at + check_size
        block.end = check_at + check_size
        self._blocks_hash.update(_size_record(block.unpadded, block.size))
        self.cuts.append((check_at, self._part(BLOCK_CHECK)))
        self._skip = block.end - data_end
        self._want, self._step = 1, self._block_or_index

    def _stored_chunk(self, b: bytes) -> None:
        size = int.from_bytes(b, "big") + 1
        assert self._block is not None
        self._block.size += size
        self._skip = size
        self._want, self._step = 1, self._lzma2_control

    def _lzma_chunk(self, b: bytes) -> None:
        assert self._block is not None
        self._block.size += ((self._control & 0x1F) << 16 | int.from_bytes(b[:2], "big")) + 1
        self._skip = int.from_bytes(b[2:4], "big") + 1 + (self._control >= 0xC0)
        self._want, self._step = 1, self._lzma2_control

    def _index_varint(self, b: bytes) -> None:
        self._index_crc = zlib.crc32(b, self._index_crc)
        self._varint |= (b[0] & 0x7F) << self._varint_shift
        self._varint_shift += 7
        if b[0] & 0x80:
            if self._varint_shift > 63:
                self._fail(self._index_at, "index fails its CRC32 check or does not match the blocks",
                           "a number in it is longer than xz allows")
            return
        value, self._varint, self._varint_shift = self._varint, 0, 0
        if self._records is None:  # the number of records; two varints each follow
            self._records, self._varints_left = value, 2 * value
        else:
            self._record.append(value)
            self._varints_left -= 1
            if len(self._record) == 2:
                self._records_hash.update(_size_record(*self._record))
                self._record.clear()
        if self._varints_left == 0:
            index_end = self._field_at + 1
            self._want, self._step = _align4(index_end - self._index_at) + 4, self._index_end

    def _index_end(self, b: bytes) -> None:
        """The index's padding and CRC32: the index is checked whole against the blocks walked."""
        reason = ""
        if any(b[:-4]):
            reason = "its padding is not zero"
        elif zlib.crc32(b[:-4], self._index_crc) != int.from_bytes(b[-4:], "little"):
            reason = "its CRC32 does not match"
        elif self._records != self._blocks:
            reason = f"it lists {self._records} blocks, the stream holds {self._blocks}"
        elif self._records_hash.digest() != self._blocks_hash.digest():
            reason = "the sizes it lists are not those of the blocks"
        if reason:
            self._fail(self._index_at, "index fails its CRC32 check or does not match the blocks", reason)
            return
        footer_at = self._field_at + len(b)
        self.cuts.append((footer_at, self._part(STREAM_FOOTER)))
        self._want, self._step = 12, self._footer

    def _footer(self, b: bytes) -> None:
        index_size = self._field_at - self._index_at
        reason = ""
        if zlib.crc32(b[4:10]) != int.from_bytes(b[:4], "little"):
            reason = "its CRC32 does not match"
        elif (int.from_bytes(b[4:8], "little") + 1) * 4 != index_size:
            reason = "the index size it gives is not that of the index"
        elif b[8:10] != self._header[6:8]:
            reason = "its stream flags are not those of the stream header"
        elif b[10:] != b"YZ":
            reason = "it does not end with YZ"
        if reason:
            self._fail(self._field_at, "stream footer fails its CRC32 check or does not match the index", reason)
            return
        self.cuts.append((self._field_at + 12, self._part(STREAM_PADDING)))
        self._want, self._step = 1, self._boundary

""".xz input: every stream of the file (xz, pixz, `cat a.xz b.xz`), with the checks the file carries.

liblzma (Python's lzma) decodes and checks; this module follows the .xz structure on the compressed
side (stream header, block headers, the LZMA2 chunk headers up to each block's end, block checks,
index, footer, stream padding) so that each block's check reaches the decoder alone, after every byte
it covers is out, and so that a failure can be named: liblzma says only "Corrupt input data"."""

from __future__ import annotations

import lzma
import re
from dataclasses import dataclass

from regcarve.sources.tarball.errors import CorruptInput, SourceError, TruncatedInput, handed_out
from regcarve.sources.tarball.pieces import CutPieces, FieldWalker
from regcarve.sources.tarball.source import XZ_MAGIC, RawSource

STEP = 1 << 16  # decoded bytes per decoder call: what one failing call takes down with it, at most

_CHECK_SIZES = (0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64)
_CHECK_NAMES = {1: "CRC32", 4: "CRC64", 10: "SHA-256"}
_NONZERO = re.compile(rb"[^\x00]")


@dataclass(frozen=True)
class XzPart:
    """What a piece of an .xz file is: a region of one stream, and the block it belongs to."""

    region: str  # one of the region names below
    stream: int = 0  # 1 for the first stream of the file
    block: int = 0  # 1 for the first block of its stream; 0 outside blocks
    block_at: int = 0  # input offset of the block's header
    check: str = ""  # the block check the stream uses: CRC32, CRC64, SHA-256, ...


STREAM_HEADER, BLOCK_HEADER, BLOCK_DATA, BLOCK_CHECK = "stream header", "block header", "block data", "block check"
INDEX, STREAM_FOOTER, STREAM_PADDING = "index", "stream footer", "stream padding"


def _align4(n: int) -> int:
    return -n % 4


class XzWalker(FieldWalker[XzPart]):
    """The .xz format through its bytes: a handful of Python operations per LZMA2 chunk (<= 64 KiB in)."""

    def __init__(self) -> None:
        super().__init__(1, self._boundary)
        self.stream = 0
        self._block = 0
        self._block_at = 0
        self._check_id = 0
        self._control = 0
        self._index_at = 0
        self._varints_left: int | None = None
        self._varint = self._varint_shift = 0

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
        return XzPart(region, self.stream, self._block, self._block_at, _CHECK_NAMES.get(self._check_id,
                                                                                        f"check {self._check_id}"))

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
        self._block = 0
        self._check_id = b[7] & 0x0F
        self.cuts.append((self._field_at, self._part(STREAM_HEADER)))
        self._want, self._step = 1, self._block_or_index

    def _block_or_index(self, b: bytes) -> None:
        if b[0] == 0:
            self._index_at = self._field_at
            self._block = 0
            self.cuts.append((self._field_at, self._part(INDEX)))
            self._varints_left = None
            self._step = self._index_varint
            return
        self._block += 1
        self._block_at = self._field_at
        header_size = (b[0] + 1) * 4
        self.cuts.append((self._field_at, self._part(BLOCK_HEADER)))
        self.cuts.append((self._field_at + header_size, self._part(BLOCK_DATA)))
        self._skip = header_size - 1
        self._step = self._lzma2_control

    def _lzma2_control(self, b: bytes) -> None:
        control = b[0]
        if control == 0:  # the end of the block's LZMA2 data
            data_end = self._field_at + 1
            check_at = data_end + _align4(data_end - self._block_at)
            self.cuts.append((check_at, self._part(BLOCK_CHECK)))
            self._skip = check_at - data_end + _CHECK_SIZES[self._check_id]
            self._step = self._block_or_index
        elif control in (1, 2):  # a stored chunk: its size follows
            self._want, self._step = 2, self._stored_chunk
        elif control >= 0x80:  # an LZMA chunk: sizes, and properties after a reset
            self._control = control
            self._want, self._step = 4, self._lzma_chunk
        else:  # not LZMA2: liblzma says why; nothing after it is cut
            self._skip = 1 << 62

    def _stored_chunk(self, b: bytes) -> None:
        self._skip = int.from_bytes(b, "big") + 1
        self._want, self._step = 1, self._lzma2_control

    def _lzma_chunk(self, b: bytes) -> None:
        self._skip = int.from_bytes(b[2:4], "big") + 1 + (self._control >= 0xC0)
        self._want, self._step = 1, self._lzma2_control

    def _index_varint(self, b: bytes) -> None:
        self._varint |= (b[0] & 0x7F) << self._varint_shift
        self._varint_shift += 7
        if b[0] & 0x80:
            if self._varint_shift > 63:  # no varint of .xz is that long: liblzma says why
                self._skip = 1 << 62
            return
        value, self._varint, self._varint_shift = self._varint, 0, 0
        if self._varints_left is None:  # the number of records; two varints each follow
            self._varints_left = 2 * value
        else:
            self._varints_left -= 1
        if self._varints_left == 0:
            index_end = self._field_at + 1
            footer_at = index_end + _align4(index_end - self._index_at) + 4  # padding, then the index CRC32
            self.cuts.append((footer_at, self._part(STREAM_FOOTER)))
            self.cuts.append((footer_at + 12, self._part(STREAM_PADDING)))
            self._skip = footer_at + 12 - index_end
            self._step = self._boundary


class XzDecoder:
    """Every stream of an .xz file, fed to liblzma in the pieces XzWalker cuts. An error is raised once
    the output before it is out; a failed block check costs no data it covers."""

    def __init__(self, raw: RawSource) -> None:
        self._pieces: CutPieces[XzPart] = CutPieces(raw, XzWalker(), XzPart(STREAM_PADDING))
        self._lz: lzma.LZMADecompressor | None = None
        self._part = XzPart(STREAM_PADDING)  # what the piece in flight is
        self._piece_at = self._piece_end = 0  # its input offsets
        self._in: bytes | memoryview = b""  # the piece, until given to the decoder
        self._error: SourceError | None = None

    @property
    def garbage(self) -> int:
        return self._pieces.garbage

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < n and self._error is None:
            lz = self._lz
            if lz is None or (not self._in and (lz.eof or lz.needs_input)):
                if not self._next_piece():
                    break
                continue
            try:
                out = lz.decompress(self._in, min(n - size, STEP))
            except lzma.LZMAError as e:
                self._error = SourceError(CorruptInput, f"input corrupt: {self._damage(str(e))}")
                break
            self._in = b""
            if out:
                parts.append(out)
                size += len(out)
        return handed_out(parts, self._error)

    def _next_piece(self) -> bool:
        """Take the next piece: False at the end of the input, or when an error is set."""
        self._piece_at = self._pieces.at
        piece = self._pieces.next()
        self._piece_end = self._pieces.at
        if piece is None:
            walker = self._pieces.walker
            ended_well = walker.at_boundary or walker.garbage_at is not None
            if not ended_well or (self._lz is not None and not self._lz.eof):
                self._error = SourceError(TruncatedInput, f"input truncated: xz stream ends inside its "
                                                          f"{self._part.region}")
            return False
        part, first, data = piece
        self._part = part
        if part.region == STREAM_PADDING:
            return True
        if part.region == STREAM_HEADER and first:
            self._lz = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        elif self._lz is None or self._lz.eof:
            self._error = SourceError(CorruptInput, f"input corrupt: xz data goes on after the end of its stream, "
                                                    f"at byte {self._piece_at} of the input")
            return False
        self._in = data
        return True

    def _damage(self, reason: str) -> str:
        """What failed, for liblzma's error `reason` met in the piece in flight."""
        p = self._part
        stream = f" of stream {p.stream}" if p.stream > 1 else ""
        block = f"xz block {p.block}{stream} (at byte {p.block_at} of the input)"
        if p.region == BLOCK_CHECK:
            return f"{block} fails its {p.check} check (stored at byte {self._piece_at})"
        if p.region == BLOCK_DATA:
            return f"{block} is damaged: its LZMA2 data does not decode ({reason}; found by byte {self._piece_end})"
        if p.region == BLOCK_HEADER:
            return f"{block} has a damaged header: it fails its CRC32 check or names what xz does not know ({reason})"
        what = {INDEX: "index fails its CRC32 check or does not match the blocks",
                STREAM_FOOTER: "stream footer fails its CRC32 check or does not match the index",
                }.get(p.region, "stream header fails its CRC32 check or names what xz does not know")
        return f"xz {what} ({reason}; at byte {self._piece_at} of the input{stream})"

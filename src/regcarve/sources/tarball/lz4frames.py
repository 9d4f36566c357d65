"""lz4 frame input (`lz4`, `tar -I lz4`, concatenated frames, skippable frames between them), decoded
by liblz4 through python-lz4, which checks what each frame carries: block checksums when the frame
has them (`lz4 -BX`), and the content checksum lz4 writes by default.

Output goes out in steps of at most STEP bytes, and the last HOLD bytes read are given to the decoder
only with the next read: a frame's end mark and content checksum then arrive in a call of their own,
after every byte they cover is out, and a failing call takes at most its block with it."""

from __future__ import annotations

import lz4.frame

from regcarve.sources.tarball.errors import CorruptInput, SourceError, TruncatedInput, count_nonzero, handed_out
from regcarve.sources.tarball.source import LZ4_MAGIC, RawSource

STEP = 1 << 20  # decoded bytes per decoder call
_READ = 1 << 16  # compressed bytes per decoder call: a failing call loses the blocks it completes
HOLD = 8  # an end mark and a content checksum
_SKIPPABLE = 0x184D2A50  # …0x184D2A5F: a 4-byte size, then that many bytes to pass over
_REASONS = {
    "ERROR_contentChecksum_invalid": "the frame's content checksum does not match",
    "ERROR_blockChecksum_invalid": "a block's checksum does not match",
    "ERROR_frameType_unknown": "not an lz4 frame",
}


class Lz4Decoder:
    def __init__(self, raw: RawSource) -> None:
        self._raw = raw
        self._frame: lz4.frame.LZ4FrameDecompressor | None = None
        self._frames = 0
        self._pending = b""  # compressed bytes read but not given to a frame yet
        self._held = b""  # the last bytes read, given with the next read (see HOLD)
        self._garbage = 0
        self._done = False
        self._error: SourceError | None = None

    @property
    def garbage(self) -> int:
        return self._garbage

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < n and not self._done:
            out = self._decode(min(n - size, STEP))
            if out:
                parts.append(out)
                size += len(out)
        return handed_out(parts, self._error)

    def _decode(self, want: int) -> bytes:
        if self._frame is not None and not self._frame.eof:
            data = b""
            if self._frame.needs_input:
                more = self._take(_READ)
                if more:
                    data, self._held = (self._held + more)[:-HOLD], (self._held + more)[-HOLD:]
                elif self._held:  # the end of the input: what was held back goes alone
                    data, self._held = self._held, b""
                else:
                    return self._fail(TruncatedInput, "input truncated: the lz4 stream ends inside a frame")
            return self._run(data, want)
        head = self._take_exactly(4)
        if head == LZ4_MAGIC:
            self._frame = lz4.frame.LZ4FrameDecompressor()
            self._frames += 1
            return self._run(head, want)
        if len(head) == 4 and int.from_bytes(head, "little") & 0xFFFFFFF0 == _SKIPPABLE:
            self._skip_frame()
            return b""
        self._garbage = count_nonzero(head) + self._raw.drain_nonzero()  # zero padding is no garbage
        self._done = True
        return b""

    def _run(self, data: bytes, want: int) -> bytes:
        assert self._frame is not None
        try:
            out = self._frame.decompress(data, max_length=want)
        except RuntimeError as e:
            code = str(e).rsplit(":", 1)[-1].strip()
            return self._fail(CorruptInput, f"input corrupt: lz4 frame {self._frames} is damaged "
                                            f"({_REASONS.get(code, code)}; found by byte {self._raw.handed_out} "
                                            "of the input)")
        if self._frame.eof:
            self._pending = (self._frame.unused_data or b"") + self._held + self._pending
            self._held = b""
        return out

    def _take(self, n: int) -> bytes:
        """Up to `n` compressed bytes: what is pending first, then the input."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return self._raw.read(n)

    def _take_exactly(self, n: int) -> bytes:
        """`n` bytes, fewer only at the end of the input (a pipe may hand out less per read)."""
        data = b""
        while len(data) < n and (more := self._take(n - len(data))):
            data += more
        return data

    def _skip_frame(self) -> None:
        size = self._take_exactly(4)
        left = int.from_bytes(size, "little") if len(size) == 4 else -1
        while left > 0:
            got = len(self._take(min(left, _READ)))
            if not got:
                break
            left -= got
        if left:
            self._fail(TruncatedInput, "input truncated: the lz4 stream ends inside a skippable frame")

    def _fail(self, kind: type[Exception], message: str) -> bytes:
        self._error = SourceError(kind, message)
        self._done = True
        return b""

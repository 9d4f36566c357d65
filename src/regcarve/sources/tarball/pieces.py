"""Compressed streams followed on the compressed side, and cut into pieces where their structure says.

zstd and xz are both handed to their decoders in such pieces: a piece ends before every checksum, so a
damaged checksum is met by a call that decodes nothing, after the data it covers is out; and the tag of
the piece in which the decoder fails says what was damaged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from regcarve.sources.tarball.errors import SourceError, count_nonzero, handed_out
from regcarve.sources.tarball.source import RawSource

READ_SIZE = 1 << 20  # compressed bytes per read

Tag = TypeVar("Tag")


class FieldWalker(Generic[Tag]):
    """Fixed-size fields handed to `_step` once whole, and stretches skipped without a look.

    A subclass sets `_want` (the size of the next field) and `_step` (what reads it) in each step, and
    `_skip` for bytes to pass over first. It appends (offset, tag) to `cuts` where a piece must start,
    and sets `garbage_at` at the first byte that starts nothing of its format."""

    def __init__(self, want: int, step: Callable[[bytes], None]) -> None:
        self.pos = 0  # bytes fed so far
        self.garbage_at: int | None = None
        self.cuts: list[tuple[int, Tag]] = []  # not yet taken by the pieces
        self._skip = 0
        self._acc = bytearray()
        self._want = want
        self._field_at = 0  # offset of the field being gathered
        self._step = step

    @property
    def mid_magic(self) -> bool:
        """Inside a would-be magic, which must be judged whole before any of it reaches a decoder."""
        return False

    def give_up(self) -> None:
        """EOF inside a would-be magic: those bytes are not the format."""
        self.garbage_at = self._field_at
        self._acc.clear()

    def feed(self, data: bytes | memoryview) -> None:
        i, n = 0, len(data)
        while i < n and self.garbage_at is None:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            if not self._acc:
                self._field_at = self.pos + i
            k = min(self._want - len(self._acc), n - i)
            self._acc += data[i : i + k]
            i += k
            if len(self._acc) == self._want:
                field = bytes(self._acc)
                self._acc.clear()
                self._step(field)
        self.pos += n


class CutPieces(Generic[Tag]):
    """The compressed bytes up to the end of the last unit a FieldWalker recognises, in the pieces it cuts."""

    def __init__(self, raw: RawSource, walker: FieldWalker[Tag], first_tag: Tag) -> None:
        self._raw = raw
        self.walker = walker
        self.garbage = 0
        self._done = False
        self._buf = memoryview(b"")
        self._at = 0  # offset of _buf[0] in the stream
        self._tag = first_tag  # tag of the piece _buf starts in
        self._cut = 0  # cuts already taken

    @property
    def at(self) -> int:
        """Offset of the next byte a piece will hand out."""
        return self._at

    def next(self) -> tuple[Tag, bool, memoryview] | None:
        """(tag, whether a piece starts here, bytes) of the next piece or part of one; None at the end."""
        while not self._buf:
            if self._done or not self._fill():
                return None
        cuts, first = self.walker.cuts, False
        while self._cut < len(cuts) and cuts[self._cut][0] <= self._at:
            self._tag, first = cuts[self._cut][1], True
            self._cut += 1
        end = len(self._buf)
        if self._cut < len(cuts):
            end = min(end, cuts[self._cut][0] - self._at)
        piece, self._buf = self._buf[:end], self._buf[end:]
        self._at += end
        return self._tag, first, piece

    def _fill(self) -> bool:
        walker = self.walker
        start = walker.pos
        data = self._raw.read(READ_SIZE)
        walker.feed(data)
        while data and walker.mid_magic and walker.garbage_at is None:
            more = self._raw.read(4)
            if not more:
                walker.give_up()
                break
            walker.feed(more)
            data += more
        if walker.garbage_at is not None:
            cut = walker.garbage_at - start
            self.garbage = count_nonzero(data[cut:]) + self._raw.drain_nonzero()
            self._done = True
            data = data[:cut]
        elif not data:
            self._done = True
        self._buf = memoryview(data)
        if len(walker.cuts) > 4 * self._cut + 64:  # keep the list short
            del walker.cuts[: self._cut]
            self._cut = 0
        return bool(data)


class PieceDecoder(Generic[Tag]):
    """A decoder fed by CutPieces: its output handed out in reads of any size, an error once all before it is
    out. A subclass decodes into `_out` (or sets `_error`) in `_refill`."""

    def __init__(self, pieces: CutPieces[Tag]) -> None:
        self._pieces = pieces
        self._out = memoryview(b"")  # decoded, not handed out yet
        self._error: SourceError | None = None

    @property
    def garbage(self) -> int:
        return self._pieces.garbage

    def read(self, n: int) -> bytes:
        parts: list[memoryview] = []
        size = 0
        while size < n:  # large reads: the walker's work is per block
            if not self._out:
                if self._error is not None or not self._refill(n - size):
                    break
                continue
            take = self._out[: n - size]
            self._out = self._out[len(take):]
            parts.append(take)
            size += len(take)
        return handed_out(parts, self._error)

    def _refill(self, want: int) -> bool:
        """Decode more into _out (about `want` bytes, or what one piece gives); False at the end or on error."""
        raise NotImplementedError

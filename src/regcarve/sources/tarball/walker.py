"""The one pass over a tar stream: members and their content, over large reused blocks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from regcarve.sources.tarball.common import read_common
from regcarve.sources.tarball.cursor import BlockCursor
from regcarve.sources.tarball.errors import (
    CorruptInput,
    NotATar,
    SourceError,
    count_nonzero,
)
from regcarve.sources.tarball.source import (
    DECOMPRESS,
    RawSource,
    hex_bytes,
    open_source,
    pipe_hint,
    readable_compression,
    regular_size,
    cpio_fix,
    cpio_kind,
    sniff_compression,
)
from regcarve.sources.tarball.tarheader import (
    BLOCK,
    META_LIMIT,
    META_TYPES,
    NO_RECORDS,
    ZERO_BLOCK,
    Member,
    checksum_ok,
    cstr,
    looks_like_tar,
    parse_member,
    parse_number,
    parse_pax,
)

# --------------------------------------------------------------------------- the walker


class Input(BlockCursor):
    """One pass over a tar stream. Use `members()`; for each member optionally `chunks()` or
    `read_content()`; content not consumed is skipped. Close it (or use `with`)."""

    def __init__(self, raw: RawSource, compression: str, total_bytes: int | None, owned: BinaryIO | None,
                 piped: bool = False) -> None:  # piped (stdin): hints say what to put in the pipe, not FILE
        super().__init__(raw, compression, owned, piped)
        self.total_bytes = total_bytes
        self.end_marker_seen = False
        self._cur: Member | None = None
        self._content_left = 0
        self._pad_left = 0
        self._in_member = False  # in the content or padding of self._cur
        self._in_meta = False  # in a GNU long name or PAX header (of the member that follows)
        self._after_end = False
        self._tar_trailing = 0
        self._global_pax: dict[str, bytes] = {}
        self.skip_directories = False  # set by a reader with no use for them: plain directories counted, not yielded
        self.directories_skipped = 0

    # -- public ---------------------------------------------------------------------------
    @property
    def trailing_bytes(self) -> int:
        """Non-zero bytes after the end-of-archive marker: in the tar stream, plus those after
        the end of the gzip/zstd stream (known once members() has finished)."""
        return self._tar_trailing + self._container_garbage

    def members(self) -> Iterator[Member]:
        while True:
            self._finish_member()
            member = self._next_member()
            if member is None:
                if self.end_marker_seen:  # read to EOF: the decoders check their trailers, garbage is counted
                    self._tar_trailing += self._nonzero_to_end()
                return
            yield member

    def chunks(self) -> Iterator[memoryview]:
        while self._content_left:
            avail = len(self._blk) - self._pos
            if not avail:
                self._need_block()
                continue
            k = min(avail, self._content_left)
            view = self._blk[self._pos : self._pos + k]
            self._pos += k
            self._content_left -= k
            yield view

    def read_content(self, limit: int) -> bytes:
        m = self._cur
        if m is None:
            raise ValueError("no current member")
        if m.size > limit:
            raise ValueError(f"member {m.name!r} has {m.size} bytes, more than the limit {limit}")
        if self._content_left != m.size:
            raise ValueError(f"content of member {m.name!r} was already consumed")
        pos, size = self._pos, m.size
        if len(self._blk) - pos >= size:
            self._pos, self._content_left = pos + size, 0
            return self._blk[pos : pos + size].tobytes()
        out = bytearray()
        for view in self.chunks():
            out += view
        return bytes(out)

    def _where(self) -> str:
        at = f"(at byte {self._offset} of the tar stream)"
        prev = f"after member {self._cur.name!r} " if self._cur is not None else ""
        if self._after_end:
            return f"after the end of the tar archive {at}"
        if self._in_meta:
            return f"inside an extended header {prev}{at}"
        if self._in_member and self._cur is not None:
            return f"inside member {self._cur.name!r} {at}"
        return f"{prev or 'before the first member '}{at}"

    # -- tar ------------------------------------------------------------------------------

    def _finish_member(self) -> None:
        if self._in_member:
            self._skip(self._content_left)
            self._content_left = 0
            self._skip(self._pad_left)
            self._in_member = False

    def _header(self, meta_pending: bool) -> bytes | None:
        """The next 512-byte header, or None at the end of the stream on a member boundary."""
        at_start = self._offset == 0
        hdr = self._take(BLOCK)
        if at_start and not looks_like_tar(hdr):
            raise _not_a_tar(self.compression, hdr, self.piped)
        if len(hdr) == BLOCK:
            return hdr
        if not meta_pending and not hdr.strip(b"\0"):
            return None  # zero padding cut short counts as a clean end; the caller sees no marker
        raise self._truncated("inside a tar header, " if hdr else "after an extended header, ")

    def _next_member(self) -> Member | None:
        found = self._common_headers()
        if isinstance(found, Member):
            return found
        longname: bytes | None = found
        longlink: bytes | None = None
        pax: dict[str, bytes] = {}
        while True:
            start = self._offset
            meta_pending = longname is not None or longlink is not None or bool(pax)
            hdr = self._header(meta_pending)
            if hdr is None:
                return None
            if hdr == ZERO_BLOCK:
                if meta_pending:
                    raise CorruptInput(
                        f"input corrupt: end-of-archive marker right after an extended header"
                        f" at byte {start} of the tar stream"
                    )
                self._end_marker()
                return None
            if not checksum_ok(hdr):
                after = f" after member {self._cur.name!r}" if self._cur is not None else ""
                raise CorruptInput(
                    f"input corrupt: bad tar header checksum at byte {start} of the tar stream{after}"
                )
            typeflag = chr(hdr[156])
            if typeflag == "5" and self.skip_directories and _plain_directory(hdr, longname, longlink, pax,
                                                                              self._global_pax):
                self.directories_skipped += 1
                longname = None
                continue
            if typeflag in META_TYPES:
                self._in_meta = True
                data = self._meta_content(hdr, start)
                self._in_meta = False
                if typeflag == "L":
                    longname = cstr(data)
                elif typeflag == "K":
                    longlink = cstr(data)
                else:
                    try:
                        records = parse_pax(data)
                    except ValueError:
                        raise CorruptInput(
                            f"input corrupt: malformed PAX header at byte {start} of the tar stream"
                        ) from None
                    target = self._global_pax if typeflag == "g" else pax
                    target.update(records)
                continue
            return self._member(hdr, typeflag, start, longname, longlink, pax)

    def _common_headers(self) -> Member | bytes | None:
        """What common.read_common finds from here (not before the first header: that one is sniffed)."""
        if not self._base + self._pos or self._global_pax:
            return None
        self._pos, found, skipped = read_common(self._blk, self._pos, self.skip_directories)
        self.directories_skipped += skipped
        if isinstance(found, Member):
            self._begin(found)
        return found

    def _member(self, hdr: bytes, typeflag: str, start: int, longname: bytes | None, longlink: bytes | None,
                pax: dict[str, bytes]) -> Member:
        # An empty PAX value cancels the keyword (a global default or the header field).
        if pax or self._global_pax:
            records = {k: v for k, v in {**self._global_pax, **pax}.items() if v}
        else:
            records = NO_RECORDS
        member = self._begin(parse_member(hdr, typeflag, start, longname, longlink, records))
        if typeflag == "S" and hdr[482]:
            self._skip_sparse_extensions()  # (a cut in them is "inside member …")
        return member

    def _begin(self, member: Member) -> Member:
        """`member`'s header is read: its content is next."""
        self._cur, self._in_member = member, True
        self._content_left, self._pad_left = member.size, -member.size % BLOCK
        return member

    def _meta_content(self, hdr: bytes, start: int) -> bytes:
        try:
            size = parse_number(hdr[124:136])
        except ValueError:
            raise CorruptInput(f"input corrupt: bad size in the tar header at byte {start} of the tar stream") from None
        if not 0 <= size <= META_LIMIT:
            raise CorruptInput(
                f"input corrupt: extended header of {size} bytes at byte {start} of the tar stream"
            )
        data = self._take_all(size)
        self._skip(-size % BLOCK)
        return data

    def _skip_sparse_extensions(self) -> None:
        while self._take_all(BLOCK)[504]:  # each extension block says whether another follows
            pass

    def _end_marker(self) -> None:
        """After one zero block: a second one (or EOF) ends the archive."""
        self.end_marker_seen = True
        self._after_end = True
        self._tar_trailing += count_nonzero(self._take(BLOCK))



def _plain_directory(hdr: bytes, longname: bytes | None, longlink: bytes | None, pax: dict[str, bytes],
                     global_pax: dict[str, bytes]) -> bool:
    """A directory header with no PAX records or link name and no '..' in its name (name and ustar
    prefix fields side by side: a '..' across them only makes it not plain)."""
    if pax or global_pax or longlink is not None:
        return False
    return b".." not in (longname if longname is not None else hdr[:100] + hdr[345:500])


def _not_a_tar(compression: str, head: bytes, piped: bool) -> NotATar:
    if not head:
        return NotATar(f"{compression}-compressed input holds no data")
    use = pipe_hint(DECOMPRESS[compression], piped)
    if (inner := readable_compression(head)) is not None:
        return NotATar(f"{compression}-compressed input holds {inner}-compressed data again: it was compressed "
                       f"twice, and regcarve takes one layer of compression — use: {use}")
    if (kind := cpio_kind(head)) is not None:
        return NotATar(f"{compression}-compressed input is a cpio archive ({kind}), not a tar — {cpio_fix(piped)}")
    return NotATar(f"{compression}-compressed input is not a tar archive"
                   f" (first bytes after decompression: {hex_bytes(head[:8])})")


def open_input(source: str | os.PathLike[str] | BinaryIO, own: bool = False) -> Input:
    """Open a path, "-" (stdin) or a binary file object. Only what is opened here is closed (and a file
    object given with `own`)."""
    f, owned = open_source(source)
    if own and owned is None:
        owned = f
    try:
        total = regular_size(f)
        raw = RawSource(f)
        try:
            head = raw.sniff(BLOCK)
        except SourceError as e:
            raise e.cls(e.message) from e
        piped = isinstance(source, (str, os.PathLike)) and os.fspath(source) == "-"
        return Input(raw, sniff_compression(head, piped), total, owned, piped)
    except BaseException:
        if owned is not None:
            owned.close()
        raise

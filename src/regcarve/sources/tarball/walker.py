"""The one pass over a tar stream: members and their content, over large reused blocks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from regcarve.sources.tarball.decoders import (
    GzipDecoder,
    PlainBlocks,
    ThreadedBlocks,
    ZstdDecoder,
)
from regcarve.sources.tarball.errors import (
    CorruptInput,
    NotATar,
    SourceError,
    TruncatedInput,
    count_nonzero,
)
from regcarve.sources.tarball.source import (
    RawSource,
    hex_bytes,
    open_source,
    regular_size,
    sniff_compression,
)
from regcarve.sources.tarball.tarheader import (
    BLOCK,
    KINDS,
    META_LIMIT,
    META_TYPES,
    NO_DATA_TYPES,
    NO_RECORDS,
    ZERO_BLOCK,
    Member,
    MemberKind,
    checksum_ok,
    cstr,
    decode_name,
    looks_like_tar,
    parse_number,
    parse_pax,
)

# --------------------------------------------------------------------------- the walker


class Input:
    """One pass over a tar stream. Use `members()`; for each member optionally `chunks()` or
    `read_content()`; content not consumed is skipped. Close it (or use `with`)."""

    def __init__(
        self,
        raw: RawSource,
        compression: str,
        total_bytes: int | None,
        owned: BinaryIO | None,
    ) -> None:
        self.compression = compression
        self.total_bytes = total_bytes
        self.end_marker_seen = False
        self._raw = raw
        self._owned = owned
        self._blocks: PlainBlocks | ThreadedBlocks
        if compression == "gzip":
            self._blocks = ThreadedBlocks(GzipDecoder(raw))
        elif compression == "zstd":
            self._blocks = ThreadedBlocks(ZstdDecoder(raw))
        else:
            self._blocks = PlainBlocks(raw)
        self._blk = memoryview(b"")
        self._pos = 0
        self._base = 0  # tar-stream offset of self._blk[0]
        self._eof = False
        self._cur: Member | None = None
        self._content_left = 0
        self._pad_left = 0
        self._in_member = False  # in the content or padding of self._cur
        self._in_meta = False  # in a GNU long name or PAX header (of the member that follows)
        self._after_end = False
        self._tar_trailing = 0
        self._global_pax: dict[str, bytes] = {}
        self._closed = False

    # -- public ---------------------------------------------------------------------------

    @property
    def source_bytes(self) -> int:
        return self._raw.count

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
                if self.end_marker_seen:
                    self._drain()
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
        out = bytearray()
        for view in self.chunks():
            out += view
        return bytes(out)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._blocks.close()
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- blocks ---------------------------------------------------------------------------

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

    def _skip(self, n: int) -> None:
        while n:
            avail = len(self._blk) - self._pos
            if not avail:
                self._need_block()
                continue
            k = min(avail, n)
            self._pos += k
            n -= k

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
            raise self._not_a_tar(hdr)
        if len(hdr) == BLOCK:
            return hdr
        if not meta_pending and not hdr.strip(b"\0"):
            return None  # zero padding cut short counts as a clean end; the caller sees no marker
        raise self._truncated("inside a tar header, " if hdr else "after an extended header, ")

    def _not_a_tar(self, head: bytes) -> NotATar:
        if not head:
            return NotATar(f"{self.compression}-compressed input holds no data")
        return NotATar(
            f"{self.compression}-compressed input is not a tar archive"
            f" (first bytes after decompression: {hex_bytes(head[:8])})"
        )

    def _next_member(self) -> Member | None:
        longname: bytes | None = None
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

    def _member(
        self,
        hdr: bytes,
        typeflag: str,
        start: int,
        longname: bytes | None,
        longlink: bytes | None,
        pax: dict[str, bytes],
    ) -> Member:
        # An empty PAX value cancels the keyword (a global default or the header field).
        if pax or self._global_pax:
            records = {k: v for k, v in {**self._global_pax, **pax}.items() if v}
        else:
            records = NO_RECORDS
        name = self._name(hdr, longname, records)
        linkname = decode_name(records.get("linkpath", longlink if longlink is not None else cstr(hdr[157:257])))
        try:
            size = int(records["size"]) if "size" in records else parse_number(hdr[124:136])
            mtime = float(records["mtime"]) if "mtime" in records else float(parse_number(hdr[136:148]))
        except ValueError:
            raise CorruptInput(
                f"input corrupt: bad size or mtime in the tar header at byte {start} of the tar stream"
            ) from None
        if size < 0:
            raise CorruptInput(f"input corrupt: negative size in the tar header at byte {start} of the tar stream")
        kind = KINDS.get(typeflag, MemberKind.OTHER)
        if typeflag in ("0", "\0") and name.endswith("/"):  # V7 and BSD tars mark dirs this way
            kind = MemberKind.DIRECTORY
        if records and any(k.startswith("GNU.sparse.") for k in records):
            kind = MemberKind.OTHER
        if typeflag in NO_DATA_TYPES:
            size = 0
        self._cur = Member(name, kind, size, linkname, mtime, typeflag)
        self._in_member = True
        if typeflag == "S" and hdr[482]:
            self._skip_sparse_extensions()
        self._content_left = size
        self._pad_left = -size % BLOCK
        return self._cur

    def _name(self, hdr: bytes, longname: bytes | None, records: dict[str, bytes]) -> str:
        if "GNU.sparse.name" in records:
            return decode_name(records["GNU.sparse.name"])
        if "path" in records:
            return decode_name(records["path"])
        if longname is not None:
            return decode_name(longname)
        name = cstr(hdr[0:100])
        if hdr[257:263] == b"ustar\x00":  # POSIX ustar: prefix field (GNU uses those bytes otherwise)
            prefix = cstr(hdr[345:500])
            if prefix:
                name = prefix + b"/" + name
        return decode_name(name)

    def _meta_content(self, hdr: bytes, start: int) -> bytes:
        try:
            size = parse_number(hdr[124:136])
        except ValueError:
            raise CorruptInput(f"input corrupt: bad size in the tar header at byte {start} of the tar stream") from None
        if not 0 <= size <= META_LIMIT:
            raise CorruptInput(
                f"input corrupt: extended header of {size} bytes at byte {start} of the tar stream"
            )
        data = self._take(size)
        if len(data) < size:
            raise self._truncated("")
        self._skip(-size % BLOCK)
        return data

    def _skip_sparse_extensions(self) -> None:
        while True:
            ext = self._take(BLOCK)
            if len(ext) < BLOCK:
                raise self._truncated("")
            if not ext[504]:
                return

    def _end_marker(self) -> None:
        """After one zero block: a second one (or EOF) ends the archive."""
        self.end_marker_seen = True
        self._after_end = True
        second = self._take(BLOCK)
        self._tar_trailing += count_nonzero(second)

    def _drain(self) -> None:
        """Read to EOF so that gzip/zstd check their trailers and garbage is counted."""
        while True:
            rest = self._blk[self._pos :].tobytes()
            self._pos = len(self._blk)
            self._tar_trailing += count_nonzero(rest)
            if not self._next_block():
                return



def open_input(source: str | os.PathLike[str] | BinaryIO) -> Input:
    """Open a path, "-" (stdin) or a binary file object. Only what is opened here is closed."""
    f, owned = open_source(source)
    try:
        total = regular_size(f)
        raw = RawSource(f)
        try:
            head = raw.sniff(BLOCK)
        except SourceError as e:
            raise e.cls(e.message) from e
        return Input(raw, sniff_compression(head), total, owned)
    except BaseException:
        if owned is not None:
            owned.close()
        raise

"""The headers nearly every registry tar is made of, read inline: plain directories, GNU long names and
plain files. A registry tar holds about ten headers per tag, so the general loop's per-header cost (calls,
meta state, PAX merging) is most of the walk; this reads runs of common headers within one decompressed
block with none of it, and leaves everything else to the general loop, which is the reference for what a
header means (tests/test_walker_inline.py holds both to the same answers)."""

from __future__ import annotations

import re
from zlib import adler32

from regcarve.sources.tarball.tarheader import BLOCK, Member, MemberKind, cstr, decode_name, header_number


def read_common(blk: memoryview, pos: int, skip_directories: bool) -> tuple[int, Member | bytes | None, int]:
    """From `pos` in a block: (where the reading stopped, what was found, plain directories skipped). Found is
    a file or directory member whose header ends where the reading stopped, or else the GNU long name
    pending for the header at that point (None when there is none): the general loop goes on from there,
    which it must for PAX, links, a bad checksum, a header across the block's edge and the end."""
    longname, skipped = None, 0
    last = len(blk) - BLOCK
    lows = _CHECKSUM_LOWS
    while pos <= last:
        hdr = blk[pos : pos + BLOCK].tobytes()
        low = lows.get(hdr[148:156]) or _checksum_low(hdr)
        if low != adler32(hdr) & 0xFFFF:
            break
        flag = hdr[156]
        if flag == 53 and skip_directories and (  # a plain directory, as walker._plain_directory says
                _DOTDOT.search(longname) is None if longname is not None
                else _DOTDOT.search(hdr, 0, 100) is None and _DOTDOT.search(hdr, 345, 500) is None
                and not hdr[99] == 46 == hdr[345]):
            skipped += 1
            longname = None
            pos += BLOCK
            continue
        if flag == 76:  # 'L': a GNU long name for the member that follows
            try:
                size = header_number(hdr, 124, 136)
            except ValueError:
                break
            if not 0 <= size + (-size % BLOCK) <= last - pos:
                break  # too big, or not all in this block
            longname = cstr(blk[pos + BLOCK : pos + BLOCK + size].tobytes())
            pos += BLOCK + size + (-size % BLOCK)
            continue
        if flag not in _PLAIN_TYPES or hdr[157]:
            break
        member = _plain_member(hdr, flag, longname)
        if member is None:
            break
        return pos + BLOCK, member, skipped
    return pos, longname, skipped


_DOTDOT = re.compile(rb"\.\.")  # for two bytes, a regex finds faster than `in` (3.11)
_PLAIN_TYPES = frozenset(b"05\0")
_CHECKSUM_LOWS: dict[bytes, int] = {}  # a checksum field → what the low half of adler32 of its header must be
_CHECKSUM_LOWS_LIMIT = 1 << 16


def _checksum_low(hdr: bytes) -> int:
    """The low half of adler32 (1 + the byte sum mod 65521) that a header with this checksum field has when
    the field is right (its bytes counted as spaces); remembered per field. -1 when the field is not a
    number: the general loop then says what is wrong."""
    field = hdr[148:156]
    try:
        want = header_number(hdr, 148, 156)
    except ValueError:
        return -1
    if not 8 * 32 <= want <= 255 * 504 + 8 * 32:
        return -1  # no header sums to that
    low = 1 + (want - 8 * 32 + sum(field)) % 65521
    if len(_CHECKSUM_LOWS) < _CHECKSUM_LOWS_LIMIT:
        _CHECKSUM_LOWS[field] = low
    return low


def _plain_member(hdr: bytes, flag: int, longname: bytes | None) -> Member | None:
    """A file or directory with no link name or PAX records (what parse_member makes of it), or None when
    its size field is not the common octal form."""
    try:
        size, mtime = header_number(hdr, 124, 136), float(header_number(hdr, 136, 148))
    except ValueError:
        return None
    if size < 0:
        return None
    if longname is not None:
        name = decode_name(longname)
    else:
        raw = cstr(hdr[0:100])
        if hdr[257:263] == b"ustar\x00" and (prefix := cstr(hdr[345:500])):
            raw = prefix + b"/" + raw
        name = decode_name(raw)
    if flag == 53:
        return Member(name, MemberKind.DIRECTORY, 0, "", mtime, chr(flag))
    kind = MemberKind.DIRECTORY if name.endswith("/") else MemberKind.FILE
    return Member(name, kind, size, "", mtime, chr(flag))

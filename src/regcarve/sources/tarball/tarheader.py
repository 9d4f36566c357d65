"""Tar headers: ustar, GNU and PAX fields, checksums, member kinds."""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

from regcarve.sources.tarball.errors import CorruptInput

META_LIMIT = 16 << 20  # largest GNU long name or PAX header accepted
BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


class MemberKind(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    OTHER = "other"  # device, fifo, sparse file, unknown typeflag


@dataclass(slots=True)
class Member:
    name: str
    kind: MemberKind
    size: int
    linkname: str
    mtime: float
    typeflag: str




# --------------------------------------------------------------------------- tar headers


def cstr(field: bytes) -> bytes:
    return field.partition(b"\0")[0]


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def header_number(hdr: bytes, start: int, end: int) -> int:
    """parse_number(hdr[start:end]), the common form (octal digits, then NULs or spaces) at once."""
    field = hdr[start:end]
    if not field[0] & 0x80:
        try:
            return int(field.rstrip(b"\0 "), 8)
        except ValueError:  # empty, or a NUL inside: the general parser says what it is
            pass
    return parse_number(field)


def parse_number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256: 0x80 marks positive, 0xff negative (two's complement)
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.partition(b"\0")[0].strip(b" ")
    return int(digits, 8) if digits else 0


def checksum_ok(hdr: bytes) -> bool:
    field = hdr[148:156]
    try:
        want = header_number(hdr, 148, 156)
    except ValueError:
        return False
    # adler32's low half is 1 + (byte sum mod 65521): a C-speed byte sum, exact up to one
    # multiple of 65521 (a header sums to at most 130560); the rare mismatch falls back to sum()
    mod = ((zlib.adler32(hdr) & 0xFFFF) - 1) % 65521 - sum(field) + 8 * 32
    if want == mod or want == mod + 65521:
        return True
    unsigned = sum(hdr) - sum(field) + 8 * 32
    if want == unsigned:
        return True
    high = sum(1 for b in hdr[:148] + hdr[156:] if b & 0x80)  # old tars summed signed chars
    return want == unsigned - 256 * high


def looks_like_tar(block: bytes) -> bool:
    if len(block) == BLOCK:
        return block == ZERO_BLOCK or checksum_ok(block)
    return block[257:262] == b"ustar"  # too short to check: let the walker report truncation


def parse_pax(data: bytes) -> dict[str, bytes]:
    """Records are '<len> <key>=<value>\\n'; raises ValueError when malformed."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise ValueError("bad PAX record")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise ValueError("bad PAX record")
        records[decode_name(key)] = value
        pos += length
    return records


KINDS = {
    "0": MemberKind.FILE,
    "\0": MemberKind.FILE,
    "7": MemberKind.FILE,
    "1": MemberKind.HARDLINK,
    "2": MemberKind.SYMLINK,
    "5": MemberKind.DIRECTORY,
}
NO_DATA_TYPES = frozenset("123456")  # like tarfile: these never carry content, whatever size says
META_TYPES = frozenset("LKxXg")
NO_RECORDS: dict[str, bytes] = {}


def parse_member(hdr: bytes, typeflag: str, start: int, longname: bytes | None, longlink: bytes | None,
                 records: dict[str, bytes]) -> Member:
    """The member a header describes, with its GNU long names and effective PAX records applied."""
    name = _member_name(hdr, longname, records)
    if records or longlink is not None or hdr[157]:
        linkname = decode_name(records.get("linkpath", longlink if longlink is not None else cstr(hdr[157:257])))
    else:
        linkname = ""  # most members: no link name (checked once, not copied and decoded)
    try:
        if records:
            size = int(records["size"]) if "size" in records else header_number(hdr, 124, 136)
            mtime = float(records["mtime"]) if "mtime" in records else float(header_number(hdr, 136, 148))
        else:
            size, mtime = header_number(hdr, 124, 136), float(header_number(hdr, 136, 148))
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
    return Member(name, kind, size, linkname, mtime, typeflag)


def _member_name(hdr: bytes, longname: bytes | None, records: dict[str, bytes]) -> str:
    if records:
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

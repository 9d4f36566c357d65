"""The raw input: a file or pipe, counted byte by byte, and what its first bytes say it is."""

from __future__ import annotations

import os
import stat
import sys
from typing import BinaryIO

from regcarve.sources.tarball.errors import ArchiveError, NotATar, SourceError, count_nonzero
from regcarve.sources.tarball.tarheader import looks_like_tar

ZSTD_MAGIC = 0xFD2FB528
XZ_MAGIC = b"\xfd7zXZ\x00"
LZ4_MAGIC = b"\x04\x22\x4d\x18"

# --------------------------------------------------------------------------- raw input


class RawSource:
    """The underlying file or pipe. Counts every byte drawn and replays the sniffed head."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._readinto = getattr(f, "readinto", None)
        self._head = b""
        self.count = 0

    @property
    def handed_out(self) -> int:
        """Bytes handed out by read so far: the input offset of the next byte."""
        return self.count - len(self._head)

    def sniff(self, n: int) -> bytes:
        head = b""
        while len(head) < n:
            more = self.read(n - len(head))
            if not more:
                break
            head += more
        self._head = head
        return head

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        try:
            data = self._f.read(n)
        except OSError as e:
            raise SourceError(ArchiveError, f"cannot read input: {e.strerror or e}") from e
        if data:
            self.count += len(data)
            return data
        return b""

    def readinto(self, mv: memoryview) -> int:
        if self._head or self._readinto is None:
            data = self.read(len(mv))
            mv[: len(data)] = data
            return len(data)
        try:
            n = self._readinto(mv) or 0
        except OSError as e:
            raise SourceError(ArchiveError, f"cannot read input: {e.strerror or e}") from e
        self.count += n
        return n

    def drain_nonzero(self) -> int:
        """Read to EOF; return how many of those bytes were not zero."""
        found = 0
        while data := self.read(1 << 20):
            found += count_nonzero(data)
        return found



# --------------------------------------------------------------------------- sniffing

READABLE = "regcarve reads .tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2, .tar.lz4"
DECOMPRESS = {"gzip": "gzip -dc", "zstd": "zstd -dc", "xz": "xz -dc", "bzip2": "bzip2 -dc", "lz4": "lz4 -dc"}
_COMPRESSORS = [  # (magic, what the input is, command that decompresses to stdout)
    (b"\x02\x21\x4c\x18", "lz4-compressed in the legacy format (lz4 -l)", "lz4 -dc"),
    (b"LZIP", "lzip-compressed", "lzip -dc"),
    (b"\x89LZO\x00", "lzop-compressed", "lzop -dc"),
    (b"\x1f\x9d", "compress (.Z)-compressed", "gzip -dc"),
]
_CPIO = [(b"070707", "portable ASCII cpio, 070707"), (b"070701", "new ASCII cpio, 070701"),
         (b"070702", "new ASCII cpio with CRCs, 070702"), (b"\xc7\x71", "binary cpio"), (b"\x71\xc7", "binary cpio")]
_ARCHIVES = [
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"!<arch>\n", "ar"),
]


def hex_bytes(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def pipe_hint(command: str, piped: bool) -> str:
    """How to put `command` in front of regcarve, for a file or for what already comes down a pipe."""
    return f"… | {command} | regcarve … -" if piped else f"{command} FILE | regcarve … -"


def is_bzip2_header(head: bytes | memoryview) -> bool:
    return len(head) >= 4 and head[:3] == b"BZh" and 0x31 <= head[3] <= 0x39


def readable_compression(head: bytes) -> str | None:
    """The compression regcarve decodes that `head` starts with, if any."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 4:
        magic = int.from_bytes(head[:4], "little")
        if magic == ZSTD_MAGIC or magic & 0xFFFFFFF0 == 0x184D2A50:
            return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(LZ4_MAGIC):
        return "lz4"
    if is_bzip2_header(head) and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):  # a block, or the end of an empty stream
        return "bzip2"
    return None


def cpio_kind(head: bytes) -> str | None:
    return next((name for magic, name in _CPIO if head.startswith(magic)), None)


def cpio_fix(piped: bool) -> str:
    """bsdtar reads cpio, compressed or not, and writes it out as a tar."""
    return "convert it: " + ("… | bsdtar -cf - @- | regcarve … -" if piped else "bsdtar -cf - @FILE | regcarve … -")


def _looks_like_lzma(head: bytes) -> bool:
    """The header of a .lzma file: properties, a dictionary size xz would write, a size or 'unknown'."""
    if len(head) < 13 or head[0] >= 225:
        return False
    dict_size = int.from_bytes(head[1:5], "little")
    size = int.from_bytes(head[5:13], "little")
    top = dict_size.bit_length() - 1
    plausible_dict = 12 <= top <= 30 and dict_size in (1 << top, (1 << top) | (1 << (top - 1)))
    return plausible_dict and (size == (1 << 64) - 1 or size < 1 << 40)


def unreadable(head: bytes, piped: bool) -> NotATar:
    """Why a stream that is neither tar nor a compression regcarve reads is refused, and what to do."""
    for magic, what, command in _COMPRESSORS:
        if head.startswith(magic):
            return NotATar(f"input is {what}; {READABLE} — use: {pipe_hint(command, piped)}")
    if (kind := cpio_kind(head)) is not None:
        return NotATar(f"input is a cpio archive ({kind}), not a tar — {cpio_fix(piped)}")
    if _looks_like_lzma(head):
        return NotATar(f"input is lzma-compressed (.lzma, the format before .xz); {READABLE} — use: "
                       f"{pipe_hint('xz -dc', piped)}")
    for magic, name in _ARCHIVES:
        if head.startswith(magic):
            return NotATar(f"input is not a tar archive (first bytes: {hex_bytes(magic[:4])} = {name})")
    return NotATar(f"input is not a tar archive (first bytes: {hex_bytes(head[:8])})")


def sniff_compression(head: bytes, piped: bool = False) -> str:
    if not head:
        raise NotATar("input is empty")
    found = readable_compression(head)
    if found in ("gzip", "zstd"):
        return found
    if looks_like_tar(head):
        return "tar"
    if found is not None:
        return found
    raise unreadable(head, piped)


def open_source(source: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, BinaryIO | None]:
    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source) == "-":
            # the unbuffered file: BufferedReader retries reads internally without letting
            # a pending SIGINT through
            return getattr(sys.stdin.buffer, "raw", sys.stdin.buffer), None
        f = open(source, "rb", buffering=0)  # OSError (not found, a directory, …) propagates
        return f, f  # type: ignore[return-value]
    return source, None


def regular_size(f: BinaryIO) -> int | None:
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        return st.st_size - f.tell()
    except OSError:
        return st.st_size



"""The raw input: a file or pipe, counted byte by byte, and what its first bytes say it is."""

from __future__ import annotations

import os
import stat
import sys
from typing import BinaryIO

from regcarve.sources.tarball.errors import ArchiveError, NotATar, SourceError, count_nonzero
from regcarve.sources.tarball.tarheader import looks_like_tar

ZSTD_MAGIC = 0xFD2FB528

# --------------------------------------------------------------------------- raw input


class RawSource:
    """The underlying file or pipe. Counts every byte drawn and replays the sniffed head."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._readinto = getattr(f, "readinto", None)
        self._head = b""
        self.count = 0

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

_COMPRESSORS = [  # (magic, name, command that decompresses to stdout)
    (b"\xfd7zXZ\x00", "xz", "xz -dc"),
    (b"BZh", "bzip2", "bzip2 -dc"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
    (b"LZIP", "lzip", "lzip -dc"),
    (b"\x89LZO\x00", "lzop", "lzop -dc"),
    (b"\x1f\x9d", "compress (.Z)", "gzip -dc"),
]
_ARCHIVES = [
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"!<arch>\n", "ar"),
]


def hex_bytes(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def sniff_compression(head: bytes) -> str:
    if not head:
        raise NotATar("input is empty")
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 4:
        magic = int.from_bytes(head[:4], "little")
        if magic == ZSTD_MAGIC or magic & 0xFFFFFFF0 == 0x184D2A50:
            return "zstd"
    if looks_like_tar(head):
        return "tar"
    for magic, name, command in _COMPRESSORS:
        if head.startswith(magic):
            raise NotATar(
                f"input is {name}-compressed; regcarve reads .tar, .tar.gz, .tar.zst"
                f" — use: {command} FILE | regcarve … -"
            )
    for magic, name in _ARCHIVES:
        if head.startswith(magic):
            raise NotATar(f"input is not a tar archive (first bytes: {hex_bytes(magic[:4])} = {name})")
    raise NotATar(f"input is not a tar archive (first bytes: {hex_bytes(head[:8])})")



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



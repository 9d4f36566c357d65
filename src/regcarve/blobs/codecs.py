"""Decode a layer blob, whatever compressed it: gzip (every member: pigz, eStargz), zstd (every frame,
skippable frames as in zstd:chunked), bzip2, xz — told apart by magic bytes, not media type."""

from __future__ import annotations

import bz2
import lzma
from typing import BinaryIO, Protocol

import zstandard

from regcarve.blobs.inflate import ZLIB_ERRORS, StdlibInflater, new_inflater

try:
    from isal import igzip_lib as _isal
except ImportError:  # no wheel for this machine: zlib-ng, or the stdlib
    _isal = None

CHUNK = 1 << 20
ZSTD_WINDOW_MAX = 1 << 31


class Reader(Protocol):
    def read(self, n: int) -> bytes: ...


class LayerError(Exception):
    """The layer's bytes cannot be decoded."""


def compression_of(head: bytes) -> str:
    """gzip, zstd, bzip2, xz or none, from a blob's first bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd" or (head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50):
        return "zstd"  # a frame, or a skippable frame (zstd:chunked puts its metadata in those)
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "none"


# One gzip member each; the decoder checks its CRC (a layer fails as a whole anyway). ISA-L inflates
# layers 8 % faster than zlib-ng here, and inflating is what bounds docker-archive (benchmarks/README.md).
def _isal_inflater():
    return _isal.IgzipDecompressor(flag=_isal.DECOMP_GZIP)


def _zlib_inflater():
    return new_inflater(31)


def _stdlib_inflater():
    return StdlibInflater(31)


_new_inflater = _isal_inflater if _isal is not None else _zlib_inflater
GZIP_ERRORS = ZLIB_ERRORS + ((_isal.IsalError,) if _isal is not None else ())


class MultiGzip:
    """Every member of a gzip stream, as one stream; zero padding between or after members is skipped."""

    def __init__(self, raw: Reader):
        self.raw = raw
        self.d = None  # the decompressor of the current member
        self.buf = b""  # compressed bytes read but not given to a decompressor yet
        self.members = 0
        self.padded = False

    def read(self, n: int = CHUNK) -> bytes:
        while True:
            if self.d is not None:
                if self.buf:
                    data, self.buf = self.buf, b""
                elif self.d.needs_input:
                    data = self.raw.read(CHUNK)
                    if not data:
                        raise LayerError(f"gzip member {self.members} is truncated")
                else:
                    data = b""  # output is still pending from input given before
                try:
                    out = self.d.decompress(data, n)
                except GZIP_ERRORS as e:
                    raise LayerError(f"corrupt gzip data in member {self.members}: {e}") from None
                if self.d.eof:
                    self.buf = self.d.unused_data
                    self.d = None
                if out:
                    return out
                continue
            if not self.buf:
                self.buf = self.raw.read(CHUNK)
                if not self.buf:
                    return b""
            rest = self.buf.lstrip(b"\0")
            if len(rest) != len(self.buf):
                self.padded = True
            self.buf = rest
            if rest:
                self.d = _new_inflater()
                self.members += 1


class _FileReader:
    """bz2 and lzma file objects: every stream of the input, bounded reads."""

    def __init__(self, f):
        self.f = f

    def read(self, n: int = CHUNK) -> bytes:
        try:
            return self.f.read(n)
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise LayerError(f"corrupt compressed data: {e}") from None


class _ZstdReader:
    def __init__(self, raw: BinaryIO):
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_MAX)
        self.r = dctx.stream_reader(raw, read_across_frames=True, closefd=False)

    def read(self, n: int = CHUNK) -> bytes:
        try:
            return self.r.read(n)
        except zstandard.ZstdError as e:
            raise LayerError(f"corrupt zstd data: {e}") from None


def decoder(kind: str, raw: BinaryIO) -> Reader:
    if kind == "gzip":
        return MultiGzip(raw)
    if kind == "zstd":
        return _ZstdReader(raw)
    if kind == "bzip2":
        return _FileReader(bz2.BZ2File(raw))
    if kind == "xz":
        return _FileReader(lzma.LZMAFile(raw))
    return raw



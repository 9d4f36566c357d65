"""Deflate streams, by the fastest library this machine has: zlib-ng, else the standard library."""

from __future__ import annotations

import zlib
from typing import Protocol

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # no wheel for this machine: stdlib zlib (about half the speed)
    _zlib_ng = None


class Inflater(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class StdlibInflater:
    """zlib.decompressobj behind the interface of zlib-ng's _ZlibDecompressor (zlib in Python 3.12)."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        tail = self._d.unconsumed_tail
        out = self._d.decompress(tail + data if tail else data, max_length)
        self.needs_input = not self._d.unconsumed_tail and len(out) < max_length
        return out

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def new_inflater(wbits: int) -> Inflater:
    """One deflate stream: raw (-15) or a gzip member (31). zlib-ng's keeps unused input inside, where
    decompressobj hands it back for the caller to pass in again (a copy per call; ~15 % slower)."""
    if _zlib_ng is not None:
        return _zlib_ng._ZlibDecompressor(wbits)
    return StdlibInflater(wbits)


ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error,) + ((_zlib_ng.error,) if _zlib_ng is not None else ())
crc32 = _zlib_ng.crc32 if _zlib_ng is not None else zlib.crc32

"""One volume written: a registry-storage tar, optionally compressed, hashed as it is written, under a
temporary name renamed over the final one only when complete."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import zstandard

from regcarve.blobs.codecs import CHUNK
from regcarve.blobs.source import BlobSource
from regcarve.safefiles import open_temp, remove_path, replace, write_all
from regcarve.sinks.pack.layout import BLOCK, END_OF_ARCHIVE, BlobFile, LinkFile, header, padded

try:
    from isal import isal_zlib as _fast_zlib
except ImportError:
    _fast_zlib = None

SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
_ZEROS = bytes(BLOCK)


class _Compressor:
    """Raw tar bytes in, file bytes out. Layers are compressed already: fast levels lose almost nothing."""

    def __init__(self, compression: str):
        if compression == "gzip":
            module = _fast_zlib or zlib
            self._obj = module.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member, mtime 0
        elif compression == "zstd":
            self._obj = zstandard.ZstdCompressor(level=3).compressobj()
        else:
            self._obj = None

    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return data if self._obj is None else self._obj.compress(data)

    def flush(self) -> bytes:
        return b"" if self._obj is None else self._obj.flush()


class VolumeWriter:
    """Write entries with `add_blob`/`add_link`, then `finish` (or `discard`)."""

    def __init__(self, final: Path, compression: str):
        self.final = final
        self.fd, self.tmp = open_temp(final, os.O_WRONLY, what=final)
        self._compressor = _Compressor(compression)
        self._sha256 = hashlib.sha256()
        self.size = 0  # bytes in the file
        self.tar_bytes = 0  # bytes of the tar before compression

    def _put(self, raw: bytes | memoryview) -> None:
        self.tar_bytes += len(raw)
        self._write(self._compressor.compress(raw))

    def _write(self, data: bytes | memoryview) -> None:
        if data:
            self._sha256.update(data)
            write_all(self.fd, data, self.final)
            self.size += len(data)

    def add_link(self, link: LinkFile) -> None:
        data = link.data
        self._put(header(link.path, len(data)) + data + _ZEROS[:padded(len(data))])

    def add_blob(self, blob: BlobFile, blobs: BlobSource) -> None:
        """The blob's verified bytes; OSError (or BlobUnavailable) when they cannot be read whole."""
        self._put(header(blob.path, blob.size))
        left = blob.size
        with blobs.open(blob.digest) as f:
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"blob {blob.digest} ended {left} bytes early")
                self._put(chunk)
                left -= len(chunk)
        self._put(_ZEROS[:padded(blob.size)])

    def finish(self) -> str:
        """Close the tar, rename it into place; its sha256."""
        self._put(bytes(END_OF_ARCHIVE))
        self._write(self._compressor.flush())
        os.close(self.fd)
        self.fd = -1
        replace(self.tmp, self.final)
        return self._sha256.hexdigest()

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        remove_path(self.tmp)

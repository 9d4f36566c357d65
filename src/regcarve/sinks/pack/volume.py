"""One volume written: a registry-storage tar, optionally compressed, under a temporary name renamed over
the final one only when complete, and hashed as it is written (read back on another core: readback.py).

Uncompressed, a blob's bytes go from its verified file into the volume in the kernel (copy_file_range): no
copy passes through Python, and the volume's own hash runs beside the copy instead of after it."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import BinaryIO

import zstandard

from regcarve.blobs.codecs import CHUNK
from regcarve.blobs.source import BlobSource
from regcarve.safefiles import open_temp, remove_path, replace
from regcarve.sinks.pack.cut import cut_into_parts
from regcarve.sinks.pack.index import Part
from regcarve.sinks.pack.layout import BLOCK, END_OF_ARCHIVE, BlobFile, LinkFile, header, padded
from regcarve.sinks.pack.readback import ReadBackHash
from regcarve.sinks.tarout import TarOut

try:
    from isal import isal_zlib as _fast_zlib
except ImportError:
    _fast_zlib = None

SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
_ZEROS = bytes(BLOCK)
_SLICE = 8 << 20  # bytes copied at once: the read-back hash follows this closely


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

    @property
    def passes_through(self) -> bool:
        return self._obj is None

    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return data if self._obj is None else self._obj.compress(data)

    def flush(self) -> bytes:
        return b"" if self._obj is None else self._obj.flush()


class VolumeWriter:
    """Write entries with `add_blob`/`add_link`, then `complete` and `settle` (or `discard`). Between the
    two the volume's hash is still being computed, while the next volume may already be written."""

    def __init__(self, final: Path, compression: str, part_size: int = 0):
        """`part_size`: the volume will be cut into byte parts of that size (settle_in_parts); each part's
        sha256 is then computed with the volume's, as it is read back."""
        self.final = final
        self.fd, self.tmp = open_temp(final, os.O_RDWR, what=final)
        self._tar = TarOut(self.fd, final)
        self._compressor = _Compressor(compression)
        self._hash = ReadBackHash(self.fd, final.name, part_size)
        self._part_size = part_size
        self.tar_bytes = 0  # bytes of the tar before compression

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._tar.pos

    def _put(self, raw: bytes | memoryview) -> None:
        self.tar_bytes += len(raw)
        self._write(self._compressor.compress(raw))

    def _write(self, data: bytes | memoryview) -> None:
        if data:
            self._tar.write(data)
            self._hash.advance(self.size)

    def add_link(self, link: LinkFile) -> None:
        data = link.data
        self._put(header(link.path, len(data)) + data + _ZEROS[:padded(len(data))])

    def add_blob(self, blob: BlobFile, blobs: BlobSource) -> None:
        """The blob's verified bytes; OSError (or BlobUnavailable) when they cannot be read whole."""
        self._put(header(blob.path, blob.size))
        with blobs.open(blob.digest) as f:
            source = _descriptor(f) if self._compressor.passes_through else None
            if source is not None:
                self._copy(source, blob.size)
            else:
                self._read(f, blob)
        self._put(_ZEROS[:padded(blob.size)])

    def _copy(self, source: int, size: int) -> None:
        """In the kernel where it can (tarout), a slice at a time, so that the hash follows closely."""
        for start in range(0, size, _SLICE):
            n = min(_SLICE, size - start)
            self._tar.copy(source, start, n)
            self.tar_bytes += n
            self._hash.advance(self.size)

    def _read(self, f: BinaryIO, blob: BlobFile) -> None:
        left = blob.size
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise OSError(f"blob {blob.digest} ended {left} bytes early")
            self._put(chunk)
            left -= len(chunk)

    def complete(self) -> None:
        """Close the tar: every byte is written; its hash may still be running."""
        self._put(bytes(END_OF_ARCHIVE))
        self._write(self._compressor.flush())
        self._hash.close(self.size)

    def settle(self) -> str:
        """Wait for the volume's sha256, rename it into place; its sha256. OSError when the volume could
        not be read back whole (it is then discarded)."""
        sha256 = self._hashed()
        os.close(self.fd)
        self.fd = -1
        replace(self.tmp, self.final)
        return sha256

    def settle_in_parts(self) -> tuple[str, tuple[Part, ...]]:
        """As `settle`, but the volume goes into place cut into byte parts of at most the `part_size` it was
        made with (no file holds it whole); its sha256 and its parts."""
        assert self._part_size > 0, "a volume to be cut is made with its part size"
        sha256 = self._hashed()
        try:
            parts = cut_into_parts(self.fd, self.tmp, self.final, self.size, self._part_size,
                                   self._hash.part_hexdigests())
        except BaseException:
            self.discard()
            raise
        os.close(self.fd)
        self.fd = -1
        return sha256, parts

    def _hashed(self) -> str:
        try:
            return self._hash.hexdigest()
        except OSError:
            self.discard()
            raise

    def discard(self) -> None:
        if self.fd >= 0:
            self._hash.abandon()
            os.close(self.fd)
            self.fd = -1
        remove_path(self.tmp)


def _descriptor(f: BinaryIO) -> int | None:
    """The file's descriptor, for a copy in the kernel; None when it is not a file on disk."""
    try:
        return f.fileno()
    except (OSError, ValueError):
        return None

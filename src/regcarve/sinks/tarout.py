"""A tar file written in place: placeholder headers patched once a streamed entry's size is known."""

from __future__ import annotations

import errno
import os
import tarfile
from pathlib import Path

from regcarve.blobs.codecs import CHUNK
from regcarve.safefiles import output_error, write_all

BLOCK = 512
USTAR_MAX_SIZE = 8**11 - 1  # larger sizes need GNU base-256 numeric fields


def tar_header(name: str, size: int = 0, *, symlink: str = "") -> bytes:
    """One 512-byte header: ustar, or GNU (base-256 size) from 8 GiB on."""
    info = tarfile.TarInfo(name)
    info.size = 0 if symlink else size
    info.mtime = 0
    info.mode = 0o777 if symlink else 0o644
    info.uname = info.gname = ""
    if symlink:
        info.type = tarfile.SYMTYPE
        info.linkname = symlink
    fmt = tarfile.USTAR_FORMAT if size <= USTAR_MAX_SIZE else tarfile.GNU_FORMAT
    buf = info.tobuf(fmt, "utf-8", "strict")
    assert len(buf) == BLOCK, name
    return buf


class TarOut:
    """A tar written sequentially through a file descriptor; an entry of unknown size is patched in place.

    Writes go straight to the descriptor, unbuffered: layer data comes in chunks of a MiB or more, and
    a buffer would only copy them once more."""

    def __init__(self, fd: int, path: Path):
        self.fd = fd
        self.path = path
        self.pos = os.lseek(fd, 0, os.SEEK_CUR)

    def write(self, data: bytes) -> None:
        write_all(self.fd, data, self.path)
        self.pos += len(data)

    def copy(self, src: int, offset: int, size: int) -> None:
        """Append `size` bytes of the file open as `src`, from `offset`: in the kernel (copy_file_range)
        where it can, else read and written here. OSError is the source's; output errors raise OutputError."""
        end = offset + size
        kernel = hasattr(os, "copy_file_range")
        while offset < end:
            if kernel:
                try:
                    n = os.copy_file_range(src, self.fd, end - offset, offset)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise output_error(e, self.path) from None
                    kernel = False  # not between these files (EXDEV, EINVAL, ENOSYS…): the plain loop says why
                    continue
                if n == 0:  # some filesystems say nothing rather than refuse: the plain loop tells
                    kernel = False
                    continue
                self.pos += n
            else:
                data = os.pread(src, min(CHUNK, end - offset), offset)
                n = len(data)
                self.write(data)
            if n == 0:
                raise OSError(errno.EIO, f"the file ended {end - offset} bytes early")
            offset += n

    def add(self, name: str, data: bytes) -> None:
        self.write(tar_header(name, len(data)))
        self.write(data)
        self._pad(len(data))

    def symlink(self, name: str, target: str) -> None:
        self.write(tar_header(name, symlink=target))

    def begin(self) -> int:
        """Start an entry whose size is not known yet; returns its offset."""
        start = self.pos
        self.write(bytes(BLOCK))
        return start

    def end(self, start: int, name: str) -> int:
        """Close the entry begun at `start`: pad it and write its real header. Returns its size."""
        size = self.pos - start - BLOCK
        self._pad(size)
        try:
            os.pwrite(self.fd, tar_header(name, size), start)
        except OSError as e:
            raise output_error(e, self.path) from None
        return size

    def rollback(self, offset: int) -> None:
        """Forget everything written from `offset` on."""
        try:
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        except OSError as e:
            raise output_error(e, self.path) from None
        self.pos = offset

    def close(self) -> None:
        self.write(bytes(2 * BLOCK))  # end-of-archive
        fd, self.fd = self.fd, -1
        try:
            os.close(fd)
        except OSError as e:
            raise output_error(e, self.path) from None

    def discard(self) -> None:
        """Close the descriptor, if still open, whatever happens (the file is about to be removed)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self.write(bytes(BLOCK - size % BLOCK))



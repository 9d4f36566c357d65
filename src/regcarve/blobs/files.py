"""Blob files read in place: their identity on disk, and sha256 of many of them at once, on every core.

hashlib releases the GIL while it hashes a buffer larger than 2 KiB, and a read into a buffer
releases it too, so a thread per core, each reading one file in large sequential chunks into its
own buffer, keeps every core hashing. The largest files go first, so that one big layer does not
start last and run alone.

Every file is opened read-only, without following a symlink and without blocking on a FIFO, and
is refused unless it is a regular file. Its identity (device, inode, size, mtime) is taken when
it is opened and again when it has been read: a file that changed meanwhile is not verified.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from regcarve.model.manifests import JSON_LIMIT

CHUNK = 4 << 20  # bytes per read: large sequential reads; hashing dominates well before this size
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BlobUnavailable(OSError):
    """A blob file that was verified is gone or is no longer the file that was verified."""

    def __init__(self, message: str):
        super().__init__(errno.ESTALE, message)

    def __str__(self) -> str:
        return self.strerror


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What says a file on disk is still the one that was read: a link or a rename changes none of it
    (ctime is left out on purpose: every hardlink made into OUT changes it)."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A blob's `data` file, as the walk found it."""

    digest: str  # what its path claims
    path: str
    shown: str  # its name for messages
    identity: FileIdentity


@dataclass(slots=True)
class FileHash:
    blob: BlobFile
    actual: str = ""  # sha256:<hex> of the bytes read; empty when they could not be read whole
    json: bytes | None = None  # the bytes, when small and JSON-looking
    error: str = ""  # why the file could not be read, or changed while it was


def not_regular(st: os.stat_result) -> str:
    """What a file that is not regular is, for a message; empty for a regular file."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return ""
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: str) -> int:
    """A read-only descriptor on a regular file; OSError for anything else (a symlink: ELOOP)."""
    fd = os.open(path, READ_FLAGS)
    try:
        what = not_regular(os.fstat(fd))
        if what:
            raise OSError(f"is a {what}, not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def looks_like_json(head: bytes | memoryview) -> bool:
    return bytes(head[:64]).lstrip()[:1] in (b"{", b"[")


def hash_file(blob: BlobFile, buffer: bytearray, counted: Callable[[int], None]) -> FileHash:
    """sha256 of the blob's file, read in chunks into `buffer`; `counted` hears each chunk's length."""
    result = FileHash(blob)
    try:
        fd = open_regular(blob.path)
    except OSError as e:
        result.error = f"cannot be read ({e.strerror or e})"
        return result
    try:
        before = FileIdentity.of(os.fstat(fd))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        h, view = hashlib.sha256(), memoryview(buffer)
        keep = before.size <= JSON_LIMIT
        parts: list[bytes] = []
        while n := os.readv(fd, [buffer]):
            if keep and not parts:
                keep = looks_like_json(view[:n])
            if keep:
                parts.append(bytes(view[:n]))
            h.update(view[:n])
            counted(n)
        after = FileIdentity.of(os.fstat(fd))
    except OSError as e:
        result.error = f"cannot be read ({e.strerror or e})"
        return result
    finally:
        os.close(fd)
    if before != blob.identity or after != before:
        result.error = "changed while it was read (a running registry?)"
        return result
    result.actual = "sha256:" + h.hexdigest()
    result.json = b"".join(parts) if keep else None
    return result


class ByteCounter:
    """Bytes read so far by every worker, for a progress bar."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n


def hash_files(blobs: list[BlobFile], workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[FileHash]:
    """Every blob's FileHash, in the order they finish; `progress` hears the bytes read so far."""
    workers = workers or os.cpu_count() or 1
    counter = ByteCounter()
    local = threading.local()

    def one(blob: BlobFile) -> FileHash:
        buffer = getattr(local, "buffer", None)
        if buffer is None:
            buffer = local.buffer = bytearray(CHUNK)
        return hash_file(blob, buffer, counter.add)

    ordered = sorted(blobs, key=lambda b: b.identity.size, reverse=True)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="regcarve-verify") as pool:
        pending = {pool.submit(one, blob) for blob in ordered}
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when="FIRST_COMPLETED")
            if progress:
                progress(counter.total)
            for future in done:
                yield future.result()


def open_unchanged(path: str, identity: FileIdentity) -> BinaryIO:
    """The file, unbuffered, when it is still the one that was verified; BlobUnavailable otherwise."""
    try:
        fd = open_regular(path)
    except OSError as e:
        raise BlobUnavailable(f"{path}: {e.strerror or e} (it was verified earlier in this run)") from None
    if FileIdentity.of(os.fstat(fd)) != identity:
        os.close(fd)
        raise changed(path)
    return os.fdopen(fd, "rb", buffering=0)


def check_unchanged(path: str, identity: FileIdentity) -> None:
    try:
        st = os.lstat(path)
    except OSError as e:
        raise BlobUnavailable(f"{path}: vanished after it was verified ({e.strerror})") from None
    if FileIdentity.of(st) != identity or not stat.S_ISREG(st.st_mode):
        raise changed(path)


def changed(path: str) -> BlobUnavailable:
    return BlobUnavailable(f"{path}: changed after it was verified (a running registry?)")

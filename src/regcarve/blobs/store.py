"""A content-addressed blob store on the output filesystem.

A blob is written under a temporary name while it is hashed and renamed to `sha256/<hex>`
only when its bytes match the digest. Files in the store were therefore verified when they
were made; a rerun reuses one whose size is right instead of writing it again (the archive's
bytes are still hashed on every run).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

JSON_LIMIT = 4 * 1024 * 1024  # manifests and configs are at most 4 MiB (registry and c/image limits)


class OutputError(Exception):
    """Writing the output failed (disk full, permissions): one line, fatal for the run."""


_OVERLAP_MIN = 256 * 1024
_executor: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regcarve-hash")
    return _executor


@dataclass(slots=True)
class Consumed:
    actual: str  # sha256:<hex> of the bytes
    size: int
    json: bytes | None  # the bytes, when small and JSON-looking


def _looks_like_json(first: memoryview) -> bool:
    head = bytes(first[:64]).lstrip()
    return head[:1] in (b"{", b"[")


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = os.lstat(self.path(digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def remove(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> set[str]:
        return {"sha256:" + p.name for p in self.blobs.iterdir()}

    def open_temp(self, digest: str) -> tuple[int, Path]:
        tmp = self.tmp / f"{digest.removeprefix('sha256:')}.{os.getpid()}.part"
        try:
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise _output_error(e, digest) from None
        return fd, tmp

    def commit(self, tmp: Path, digest: str) -> None:
        try:
            os.replace(tmp, self.path(digest))  # replaces a symlink itself, never follows it
        except OSError as e:
            raise _output_error(e, digest) from None

    def cleanup(self) -> None:
        """Remove temporary files left by this process and the tmp folder when empty."""
        for p in self.tmp.glob(f"*.{os.getpid()}.part"):
            p.unlink(missing_ok=True)
        try:
            self.tmp.rmdir()
        except OSError:
            pass


def consume_blob(
    claimed: str,
    size: int,
    chunks: Iterable[memoryview],
    store: BlobStore | None,
) -> Consumed:
    """Hash a streaming blob, keep it in memory when it is small JSON, and store it when asked.

    The temporary file is removed on any failure, including a truncated input
    (the exception from `chunks` propagates).
    """
    h = hashlib.sha256()
    keep = size <= JSON_LIMIT
    parts: list[bytes] = []
    fd, tmp = -1, None
    if store is not None and not store.has(claimed, size):
        fd, tmp = store.open_temp(claimed)
    try:
        first = True
        for view in chunks:
            if first:
                keep = keep and _looks_like_json(view)
                first = False
            if keep:
                parts.append(bytes(view))
            if fd >= 0 and len(view) >= _OVERLAP_MIN:
                # hash on the other core while this one writes; both release the GIL
                pending = _hasher().submit(h.update, view)
                try:
                    _write_all(fd, view, claimed)
                finally:
                    pending.result()
            else:
                h.update(view)
                if fd >= 0:
                    _write_all(fd, view, claimed)
        actual = "sha256:" + h.hexdigest()
        if fd >= 0:
            os.close(fd)
            fd = -1
            if actual == claimed:
                store.commit(tmp, claimed)
            else:
                os.unlink(tmp)
            tmp = None
        elif store is not None and actual == claimed:
            store.reused += 1
        return Consumed(actual, size, b"".join(parts) if keep else None)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _write_all(fd: int, view: memoryview, digest: str) -> None:
    try:
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError as e:
        raise _output_error(e, digest) from None


def _output_error(e: OSError, digest: str) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"output disk full while writing blob {digest}")
    return OutputError(f"cannot write blob {digest}: {e.strerror}")

"""Blobs a delta volume expects, taken from earlier OUTs of `convert --format dir` (`--blobs-from OUT`).

An earlier OUT keeps every blob it verified in `OUT/.regcarve/blobs/sha256/<hex>`. For each blob the
volume expects and the input lacks, that file is hardlinked into this run's store under a temporary name
(copied, while hashed, where a hardlink cannot be made), hashed there, and renamed to its digest only when
the bytes match: what is used is exactly what was hashed. A file that does not match, is not a regular
file, or is absent, is passed over for the next OUT; a blob no OUT gives stays expected (its images fail,
naming the delivery). Nothing in an earlier OUT is ever written.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from regcarve.blobs.files import CHUNK, looks_like_json, open_regular
from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore
from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.manifests import JSON_LIMIT
from regcarve.model.names import hex_of
from regcarve.safefiles import output_error, remove_path, temp_name, write_all
from regcarve.sources.convertout import STATE, is_convert_out


class EarlierOutError(ValueError):
    """A --blobs-from that is not an OUT of `convert --format dir`."""


def check_earlier(path: Path) -> Path:
    if not is_convert_out(str(path)):
        raise EarlierOutError(f"--blobs-from {path}: not an OUT that `regcarve convert --format dir` wrote "
                              f"(no {STATE})")
    return path


@dataclass
class Taken:
    """The expected blobs this run took from earlier OUTs: digest → the store file now holding them."""

    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # earlier files that did not hash to their name


def take_expected(inv: Inventory, expected: dict[str, str], earlier: tuple[Path, ...], store: BlobStore) -> Taken:
    """Take every expected blob the inventory lacks from the earlier OUTs into `store`, and record it in the
    inventory as verified (small JSON ones, configs, in memory too)."""
    taken = Taken()
    for digest in sorted(expected):
        if inv.has_blob(digest):
            continue
        for out in earlier:
            src = out / STATE / hex_of(digest)
            if not os.path.lexists(src):
                continue
            got = _take(src, digest, store)
            if got is None:
                taken.rejected.append(str(src))
                continue
            size, data = got
            inv.blobs[digest] = BlobRecord(digest, size, True, member=str(src))
            if data is not None:
                inv.json_blobs[digest] = data
            taken.files[digest], taken.sizes[digest] = str(store.path(digest)), size
            break
    return taken


def _take(src: Path, digest: str, store: BlobStore) -> tuple[int, bytes | None] | None:
    """Link (else copy) `src` into the store as `digest`, if its bytes hash to it: their size, and the bytes
    when small JSON; None when they do not."""
    final = store.path(digest)
    tmp = temp_name(final)
    remove_path(tmp)
    try:
        os.link(src, tmp, follow_symlinks=False)
        linked = True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            return None
        linked = False
    try:
        got = _hash(tmp, digest) if linked else _copy(src, tmp, digest)
        if got is None:
            return None
        try:
            os.replace(tmp, final)
        except OSError as e:
            raise output_error(e, f"blob {digest}") from None
        return got
    finally:
        tmp.unlink(missing_ok=True)


def _hash(path: Path, digest: str) -> tuple[int, bytes | None] | None:
    try:
        fd = open_regular(str(path))
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as f:
        return _digest_of(f, digest, None)


def _copy(src: Path, tmp: Path, digest: str) -> tuple[int, bytes | None] | None:
    try:
        fd = open_regular(str(src))
    except OSError:
        return None
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            return _digest_of(f, digest, out)
    finally:
        os.close(out)


def _digest_of(f: BinaryIO, digest: str, out: int | None) -> tuple[int, bytes | None] | None:
    h, size, parts = hashlib.sha256(), 0, []
    keep = True
    while chunk := f.read(CHUNK):
        if size == 0:
            keep = looks_like_json(chunk)
        h.update(chunk)
        size += len(chunk)
        keep = keep and size <= JSON_LIMIT
        if keep:
            parts.append(chunk)
        if out is not None:
            write_all(out, chunk, f"blob {digest}")
    if "sha256:" + h.hexdigest() != digest:
        return None
    return size, (b"".join(parts) if keep and size else None)


class WithTaken:
    """The source's blobs, and those taken from earlier OUTs, read alike."""

    def __init__(self, source: BlobSource, taken: Taken):
        self.source, self.taken = source, taken

    def has(self, digest: str) -> bool:
        return digest in self.taken.files or self.source.has(digest)

    def size(self, digest: str) -> int:
        size = self.taken.sizes.get(digest)
        return size if size is not None else self.source.size(digest)

    def read(self, digest: str) -> bytes:
        if digest not in self.taken.files:
            return self.source.read(digest)
        with self.open(digest) as f:
            return f.read()

    def open(self, digest: str) -> BinaryIO:
        path = self.taken.files.get(digest)
        return open(path, "rb", buffering=0) if path is not None else self.source.open(digest)

    def local_path(self, digest: str) -> str | None:
        path = self.taken.files.get(digest)
        return path if path is not None else self.source.local_path(digest)

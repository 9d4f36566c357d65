"""The archive files of a run: is a file in the way one regcarve wrote, where may --single-file go."""

from __future__ import annotations

import os
import re
import stat
import tarfile
from pathlib import Path

from regcarve.sinks.tarout import BLOCK

_HEX = r"[a-f0-9]{64}"
_OURS_MEMBER = re.compile(rf"{_HEX}\.(json|tar|tar\.gz)|{_HEX}/(VERSION|json|layer\.tar)?|manifest\.json|repositories")


def is_ours(path: Path, limit: int = 100_000) -> bool:
    """A regular file that is a tar of nothing but entries regcarve writes into a docker-archive."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(path, "rb") as f:
            seen = 0
            while seen < limit:
                buf = f.read(BLOCK)
                if len(buf) < BLOCK:
                    return False
                if buf == bytes(BLOCK):
                    return seen > 0
                info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
                if not _OURS_MEMBER.fullmatch(info.name):
                    return False
                f.seek((info.size + BLOCK - 1) // BLOCK * BLOCK, os.SEEK_CUR)
                seen += 1
    except (OSError, tarfile.TarError):
        return False
    return False


def missing_folders(out: Path, rel: str) -> list[Path]:
    """The folders of OUT/rel that do not exist yet, deepest first."""
    missing = []
    path = out / rel
    while path != out and not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def inside(path: Path, out: Path | None) -> str | None:
    """`path` relative to OUT, when it lies inside OUT."""
    if out is None:
        return None
    try:
        return str(path.relative_to(Path(os.path.abspath(out))))
    except ValueError:
        return None


def check_single_file(path: Path, force: bool, out: Path | None = None) -> str | None:
    """Why --single-file cannot be written at `path`, if it cannot. Folders are made only inside OUT."""
    path = Path(os.path.abspath(path))
    if not path.parent.is_dir() and inside(path.parent, out) is None:
        return f"{path.parent} is not a directory (--single-file makes folders only inside OUT)"
    if os.path.isdir(path) and not os.path.islink(path):
        return f"{path} is a directory"
    if os.path.lexists(path) and not force:
        return f"{path} exists; use --force to replace it"
    return None

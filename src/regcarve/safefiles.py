"""Files written safely: temporary names, atomic writes, and one-line errors for what cannot be written.

Every file regcarve makes is created afresh (`O_EXCL | O_NOFOLLOW`: never opened through a link
left in its place) and, unless its folder was made by this run, under a temporary name beside the
final one, `.<name>.<pid>.tmp`, renamed over the final name only once complete. That name, and the
test that recognises it, live here and nowhere else.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

TEMP_NAME = re.compile(r"\..+\.\d+\.tmp")


class OutputError(Exception):
    """Writing the output failed (disk full, permissions): one line, fatal for the run."""


def output_error(e: OSError, what: str | Path) -> OutputError:
    """The one-line error for an OSError met while writing `what` (a path, or e.g. "blob sha256:…")."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"output disk full while writing {what}")
    return OutputError(f"cannot write {what}: {e.strerror}")


def temp_name(final: Path) -> Path:
    """Where `final` is made before it is renamed into place."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def is_temp(name: str) -> bool:
    """Whether a file name is one of regcarve's temporary names (of this run or an interrupted one)."""
    return TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(final: Path) -> None:
    """Remove the temporary files that interrupted runs left for `final` (not this process's own)."""
    prefix, mine = f".{final.name}.", temp_name(final).name
    try:
        names = os.listdir(final.parent)
    except OSError:
        return
    for name in names:
        if name != mine and name.startswith(prefix) and is_temp(name) and name[len(prefix):-4].isdigit():
            remove_path(final.parent / name)


def create_new(path: Path, flags: int = os.O_WRONLY) -> int:
    """A descriptor on a file made afresh at `path`; FileExistsError when anything is in the way."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def open_temp(final: Path, flags: int = os.O_RDWR, what: str = "") -> tuple[int, Path]:
    """A fresh temporary file for `final` (what an earlier run of this pid left there is replaced);
    an error names `what`, else the temporary file."""
    tmp = temp_name(final)
    try:
        remove_path(tmp)
        return create_new(tmp, flags), tmp
    except OSError as e:
        raise output_error(e, what or tmp) from None


def write_all(fd: int, data: bytes | bytearray | memoryview, what: str | Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise output_error(e, what) from None


def atomic_write(path: Path, data: bytes, fresh: bool = False) -> None:
    """Write under a temporary name in the same folder, then rename over the final name.

    The temporary file is made afresh and removed on any failure, an interrupt included. `fresh`:
    the folder was made by this run and `path` is its last file, so the file is made under its final
    name (half the file-system operations; what matters at 5,000 tags) and removed again if the
    write does not complete."""
    atomic_write_parts(path, (data,), fresh)


def atomic_write_parts(path: Path, parts: Iterable[bytes], fresh: bool = False) -> None:
    """atomic_write of the bytes `parts` yields, written as they come (never joined in memory)."""
    tmp = path if fresh else temp_name(path)
    theirs = False  # a file was in the way: not ours to remove
    try:
        try:
            if not fresh:
                tmp.unlink(missing_ok=True)
            try:
                fd = create_new(tmp)
            except FileExistsError:
                theirs = True
                raise
            try:
                for data in parts:
                    write_all(fd, data, path)
            finally:
                os.close(fd)
            if not fresh:
                os.replace(tmp, path)
        except OSError as e:
            raise output_error(e, path) from None
    except BaseException:  # an interrupt included, even one that came before `fd` was set
        if not theirs:
            tmp.unlink(missing_ok=True)
        raise


def replace(tmp: Path, final: Path) -> None:
    """Rename a completed temporary file over `final` (a folder there goes first: only reached with --force)."""
    try:
        if os.path.isdir(final) and not os.path.islink(final):
            remove_path(final)
        os.replace(tmp, final)
    except OSError as e:
        raise output_error(e, final) from None


def remove_path(path: Path) -> None:
    """Remove a file, symlink or tree without following symlinks."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)

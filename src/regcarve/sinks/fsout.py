"""What every writer shares: results, safe paths inside OUT, atomic files, and blob placement."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from regcarve.blobs.store import BlobStore, OutputError
from regcarve.model.catalog import Catalog
from regcarve.plan.select import Job

WRITTEN, SKIPPED, FAILED = "written", "skipped", "failed"
FICLONE = 0x40049409  # linux/fs.h


class WriteError(Exception):
    """This image cannot be written: the message is the reason."""


@dataclass(slots=True)
class Result:
    ref: str
    status: str
    reason: str = ""
    path: str = ""  # relative to OUT
    digest: str = ""
    media_type: str = ""
    bytes: int = 0

    def to_json(self) -> dict:
        return {
            "ref": self.ref,
            "status": self.status,
            "reason": self.reason,
            "path": self.path,
            "digest": self.digest,
            "media_type": self.media_type,
        }


@dataclass
class Options:
    force: bool = False
    repo_prefix: str = ""
    keep_compressed: bool = False
    oci_layout: str = "per-tag"
    single_file: Path | None = None


@dataclass
class Context:
    out: Path
    store: BlobStore
    catalog: Catalog
    options: Options
    placer: "BlobPlacer" = field(init=False)
    notes: list[str] = field(default_factory=list)  # said once in the summary

    def __post_init__(self) -> None:
        self.placer = BlobPlacer(self.notes)
        self._dirs: set[str] = set()  # folders below OUT already made or checked in this run
        self._shared: dict[str, Path] = {}

    def make_dir(self, rel: str) -> tuple[Path, bool]:
        """OUT/rel, made like ensure_dir; also whether this call created it (so it is empty)."""
        path = self.out / rel
        if rel in self._dirs:
            return path, False
        parent = os.path.dirname(rel)
        if parent and parent not in self._dirs:
            ensure_dir(self.out, parent)
            self._dirs.add(parent)
        try:
            os.mkdir(path)
            fresh = True
        except FileExistsError:
            fresh = False
        except OSError as e:
            raise output_error(e, path) from None
        if not fresh:
            ensure_dir(self.out, rel)  # checks it is a real folder, not a link
        self._dirs.add(rel)
        return path, fresh

    def shared_file(self, name: str, data: bytes) -> Path:
        """A small constant file written once per run beside the store, to be hardlinked into images."""
        path = self._shared.get(name)
        if path is None:
            path = self._shared[name] = self.store.root.parent / name
            atomic_write(path, data)
        return path


class Writer(Protocol):
    format: str
    keeps_store_links: bool  # outputs hardlink store files: the store stays (it costs no blocks)

    def relpath(self, job: Job) -> str: ...

    def prepare(self, jobs: list[Job], ctx: Context) -> None:
        """Called once before the first write, with every job the run will write, in order."""

    def write(self, job: Job, ctx: Context) -> int:
        """Write one image; return bytes placed. Raise WriteError for a reason to fail it."""

    def finish(self, results: list[Result], ctx: Context) -> None: ...

    def push_hint(self, results: list[Result], ctx: Context) -> list[str]: ...


def tagged_path(repository: str, tag: str) -> str:
    """`<repo path>/_tags/<tag>`: repository components never start with '_', so no image path can
    equal, contain or sit inside another image's path, however repositories nest."""
    return f"{repository}/_tags/{tag}"


def ensure_dir(out: Path, rel: str) -> Path:
    """mkdir -p of OUT/rel that refuses to pass through a symlink (and so never leaves OUT)."""
    path = out
    for part in Path(rel).parts:
        if part in ("", ".", "..") or "/" in part:
            raise WriteError(f"unsafe output path {rel!r}")
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path)
            except OSError as e:
                raise output_error(e, path) from None
            continue
        if stat.S_ISLNK(st.st_mode):
            raise WriteError(f"{path} is a symlink; regcarve does not follow links inside OUT")
        if not stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{path} exists and is not a directory")
    return path


def output_error(e: OSError, path: Path) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"output disk full while writing {path}")
    return OutputError(f"cannot write {path}: {e.strerror}")


def atomic_write(path: Path, data: bytes, fresh: bool = False) -> None:
    """Write under a temporary name in the same folder, then rename over the final name.

    The temporary file is made afresh (never opened through a link left there) and removed on any
    failure, an interrupt included. `fresh`: the folder was made by this run and `path` is its last
    file, so the file is made under its final name (half the file-system operations; what matters
    at 5,000 tags) and removed again if the write does not complete."""
    tmp = path if fresh else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    theirs = False  # a file was in the way: not ours to remove
    try:
        try:
            if not fresh:
                tmp.unlink(missing_ok=True)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                theirs = True
                raise
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
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


class BlobPlacer:
    """Put a store file at a destination: hardlink, else reflink, else copy (said once)."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.mode = "hardlink"

    def place(self, src: Path | str, dest: Path | str, fresh: bool = False) -> None:
        """`fresh`: dest is in a folder this run just made, so nothing can be in the way."""
        if not fresh:
            remove_path(Path(dest))
        if self.mode == "hardlink":
            try:
                os.link(src, dest)
                return
            except FileExistsError:
                remove_path(Path(dest))
                return self.place(src, dest, fresh=True)
            except OSError as e:
                if e.errno == errno.EMLINK:  # this one file has the filesystem's most links: copy it alone
                    return self._clone_or_copy(Path(src), Path(dest), once=True)
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise output_error(e, Path(dest)) from None
                self.mode = "reflink"
        self._clone_or_copy(Path(src), Path(dest))

    def _clone_or_copy(self, src: Path, dest: Path, once: bool = False) -> None:
        if once:
            saved, self.mode = self.mode, "reflink"
            try:
                return self._clone_or_copy(src, dest)
            finally:
                self.mode = saved
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            with open(src, "rb") as fsrc, open(tmp, "xb") as fdst:  # new file: no link left there is followed
                if self.mode == "reflink":
                    try:
                        fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())
                    except OSError:
                        self.mode = "copy"
                        self.notes.append("the output filesystem refused hardlinks and reflinks: blobs were copied")
                if self.mode == "copy":
                    shutil.copyfileobj(fsrc, fdst, 1 << 20)
            os.replace(tmp, dest)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise output_error(e, dest) from None
            raise
        if self.mode == "reflink" and not any("reflink" in n for n in self.notes):
            self.notes.append("the output filesystem refused hardlinks: blobs were reflinked")

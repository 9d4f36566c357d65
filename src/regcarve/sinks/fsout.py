"""The output folder every file sink writes into: OUT itself, safe folders inside it, and blob placement.

OUT holds regcarve's state folder (`.regcarve/`: the verified store, and small files hardlinked into
images). Nothing here follows a symlink found inside OUT or makes anything outside it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
import stat
from pathlib import Path

from regcarve.blobs.source import BlobSource
from regcarve.blobs.store import BlobStore
from regcarve.plan.output import ImageFailed
from regcarve.sinks.base import ImageOut, Options, Result
from regcarve.safefiles import atomic_write, output_error, remove_path, temp_name

STATE_DIR = ".regcarve"
FICLONE = 0x40049409  # linux/fs.h


class OutputRefused(Exception):
    """OUT holds something regcarve did not make: refused without --force."""


def tagged_path(repository: str, tag: str) -> str:
    """`<repo path>/_tags/<tag>`: repository components never start with '_', so no image path can
    equal, contain or sit inside another image's path, however repositories nest."""
    return f"{repository}/_tags/{tag}"


def prepare_out(out: Path, force: bool) -> BlobStore:
    """Create OUT, or accept it when it is empty or was made by regcarve; the store lives in OUT/.regcarve."""
    if os.path.islink(out):
        raise OutputRefused(f"{out} is a symlink; give the real path")
    if out.exists():
        if not out.is_dir():
            raise OutputRefused(f"{out} exists and is not a directory")
        entries = os.listdir(out)
        if entries and STATE_DIR not in entries and not force:
            raise OutputRefused(f"{out} is not empty and was not written by regcarve; use --force to write into it")
    state = out / STATE_DIR
    for folder in (state, state / "blobs", state / "blobs" / "sha256", state / "blobs" / "tmp"):
        if os.path.islink(folder):
            raise OutputRefused(f"{folder} is a symlink; regcarve does not follow links inside OUT")
    try:
        out.mkdir(parents=True, exist_ok=True)
        state.mkdir(exist_ok=True)
        store = BlobStore(state / "blobs")
    except OSError as e:
        raise output_error(e, Path(e.filename or state)) from None
    readme = state / "README"
    if not (readme.is_file() and not readme.is_symlink() and readme.stat().st_size == len(STATE_README)
            and readme.read_bytes() == STATE_README):
        atomic_write(readme, STATE_README)  # a rename: replaces a symlink there, never writes through it
    return store


STATE_README = (b"regcarve's blob store: verified blobs by digest, hardlinked into the images beside it.\n"
                b"It costs no extra disk; it lets a rerun reuse what was already verified. Safe to delete.\n")


def undo_prepare_out(out: Path, had_out: bool, had_state: bool) -> None:
    """Remove what prepare_out made, when the input turned out unusable before any blob was stored:
    a run that cannot read its input leaves OUT as it found it. Only empty folders go."""
    state = out / STATE_DIR
    try:
        if not had_state:
            for folder in (state / "blobs" / "tmp", state / "blobs" / "sha256", state / "blobs"):
                _rmdir(folder)
            (state / "README").unlink(missing_ok=True)
            _rmdir(state)
        if not had_out:
            _rmdir(out)
    except OSError:  # not empty: something is there that this run did not make
        pass


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass


def ensure_dir(out: Path, rel: str) -> Path:
    """mkdir -p of OUT/rel that refuses to pass through a symlink (and so never leaves OUT)."""
    path = out
    for part in Path(rel).parts:
        if part in ("", ".", "..") or "/" in part:
            raise ImageFailed(f"unsafe output path {rel!r}")
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
            raise ImageFailed(f"{path} is a symlink; regcarve does not follow links inside OUT")
        if not stat.S_ISDIR(st.st_mode):
            raise ImageFailed(f"{path} exists and is not a directory")
    return path


class OutFolder:
    """OUT, as the file sinks of one run share it: folders made once, constant files, blob placement."""

    def __init__(self, root: Path, force: bool = False):
        self.root = root
        self._root = str(root)
        self.force = force
        self.notes: list[str] = []  # said once in the summary
        self.placer = BlobPlacer(self.notes)
        self._dirs: set[str] = set()  # folders below OUT already made or checked in this run
        self._shared: dict[str, Path] = {}

    def ensure_dir(self, rel: str) -> Path:
        return ensure_dir(self.root, rel)

    def make_dir(self, rel: str) -> tuple[Path, bool]:
        """OUT/rel, made like ensure_dir; also whether this call created it (so it is empty)."""
        path, fresh = self.make_folder(rel)
        return Path(path), fresh

    def make_folder(self, rel: str) -> tuple[str, bool]:
        """make_dir, the path as a string (no Path made: one folder per image, at 50,000 images)."""
        path = os.path.join(self._root, rel)
        if rel in self._dirs:
            return path, False
        parent = os.path.dirname(rel)
        if parent and parent not in self._dirs:
            ensure_dir(self.root, parent)
            self._dirs.add(parent)
        try:
            os.mkdir(path)
            fresh = True
        except FileExistsError:
            fresh = False
        except OSError as e:
            raise output_error(e, path) from None
        if not fresh:
            ensure_dir(self.root, rel)  # checks it is a real folder, not a link
        # `rel` itself is not remembered (one per image, most of a large run's memory): a second call
        # finds it with mkdir and checks it again
        return path, fresh

    def shared_file(self, name: str, data: bytes) -> Path:
        """A small constant file written once per run in the state folder, to be hardlinked into images."""
        path = self._shared.get(name)
        if path is None:
            path = self._shared[name] = self.root / STATE_DIR / name
            atomic_write(path, data)
        return path


class FolderSink:
    """What every sink that writes into OUT starts from: the folder, the blobs, the options."""

    def __init__(self, out: OutFolder, blobs: BlobSource, options: Options):
        self.out, self.blobs, self.options = out, blobs, options
        self.notes = out.notes
        self.skopeo_changes: set[str] = set()  # relpaths of the images skopeo would push under another digest

    def prepare(self, images: list[ImageOut]) -> None:
        self.skopeo_changes = {self.relpath(i.repository, i.tag) for i in images if i.skopeo_changes_digest()}

    def relpath(self, repository: str, tag: str) -> str:
        raise NotImplementedError  # each format's own

    def skopeo_digest_warning(self, written: list[Result], push_line: str, out_names: bool) -> list[str]:
        """The tags written that skopeo would push under another digest, and the regcarve push that keeps it:
        `push_line` with `{images}` standing for their --image options, each naming the tag as OUT has it
        (`out_names`, the dir format's path) or as the source has it."""
        refs = [r.path if out_names else r.ref for r in written if r.path in self.skopeo_changes]
        if not refs:
            return []
        return [f"warning: skopeo would push {len(refs)} tag(s) under another digest: skopeo 1.9 drops the "
                "artifactType of an index's descriptors (a referrers index lists its artifacts so) when it copies "
                "the index, and refuses them with --preserve-digests; push these with regcarve, which sends the "
                "exact bytes:",
                "  " + push_line.format(images=" ".join(f"--image {shlex.quote(ref)}" for ref in refs))]

    def finish(self, results: list[Result]) -> None:
        pass


class BlobPlacer:
    """Put a store file at a destination: hardlink, else reflink, else copy (said once)."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.mode = "hardlink"
        self.refused = ""  # why hardlinks could not be made

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
                self.refused = ("OUT is on another filesystem than the blobs" if e.errno == errno.EXDEV
                                else "the output filesystem refused hardlinks")
        self._clone_or_copy(Path(src), Path(dest))

    def _clone_or_copy(self, src: Path, dest: Path, once: bool = False) -> None:
        if once:
            saved, self.mode = self.mode, "reflink"
            try:
                return self._clone_or_copy(src, dest)
            finally:
                self.mode = saved
        tmp = temp_name(dest)
        try:
            tmp.unlink(missing_ok=True)
            with open(src, "rb") as fsrc, open(tmp, "xb") as fdst:  # new file: no link left there is followed
                if self.mode == "reflink":
                    try:
                        fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())
                    except OSError:
                        self.mode = "copy"
                        self.notes.append(f"blobs were copied: {self.refused or 'hardlinks were refused'}, "
                                          "and reflinks too")
                if self.mode == "copy":
                    shutil.copyfileobj(fsrc, fdst, 1 << 20)
            os.replace(tmp, dest)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise output_error(e, dest) from None
            raise
        if self.mode == "reflink" and not any("reflink" in n for n in self.notes):
            self.notes.append(f"blobs were reflinked: {self.refused or 'hardlinks were refused'}")

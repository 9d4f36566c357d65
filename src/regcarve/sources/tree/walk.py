"""The walk of a storage folder: names only, plus the link files, into a Collector; blob files listed.

Every entry below `blobs/` and `repositories/` is classified by the same layout grammar as a tar
member named like it, and goes through the same Collector steps, so a tree and a tarball of it give
the same facts. Nothing is followed: a symlink (to a file or a folder) is reported and left alone,
as is a FIFO, socket or device. Link files are read through a descriptor opened without following
a link and without blocking; blob files are only listed here (their bytes are read by the
verification, or not at all). Below `_uploads` names are counted, never read. A tag's `index/` folder
(the history of what it pointed at, which nothing uses) is not entered: in a storage with many tags it
holds most of the folders.
"""

from __future__ import annotations

import os

from regcarve.blobs.files import BlobFile, FileIdentity, not_regular, open_regular
from regcarve.model.problems import Severity
from regcarve.sources.collect import LINK_KINDS, LINK_LIMIT, Collector, shown
from regcarve.sources.layout import ANCHOR, EntryKind, StorageEntry, classify
from regcarve.sources.tree.root import StorageRoot


class TreeWalker:
    def __init__(self, root: StorageRoot):
        self.root = root
        self.facts = Collector()
        self.inv = self.facts.inv
        self.blob_files: list[BlobFile] = []

    def run(self) -> TreeWalker:
        facts = self.inv.input
        facts.compression = "directory"
        facts.root = self.root.path
        facts.prefixes.add("")
        for top in ("blobs", "repositories"):
            self._walk(top)
        return self

    def _walk(self, top: str) -> None:
        stack = [top]
        base = self.root.path + os.sep
        while stack:
            rel = stack.pop()
            try:
                with os.scandir(base + rel) as entries:
                    listed = list(entries)
            except OSError as e:
                self._ignored(rel, f"folder cannot be read ({e.strerror}); what it holds is missing")
                continue
            self.inv.input.members += len(listed)
            for entry in listed:
                path = f"{rel}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if not _tag_history(path):
                        stack.append(path)
                else:
                    self._file(entry, path)

    def _file(self, entry: os.DirEntry[str], rel: str) -> None:
        storage = classify(ANCHOR + rel)
        assert storage is not None
        where = self.root.shown(rel)
        if not self.facts.accept(storage, where) or self.facts.invalid_tag(storage, where):
            return
        if entry.is_symlink():
            self._ignored(rel, "symlink ignored (never followed)")
        elif not entry.is_file(follow_symlinks=False):
            self._ignored(rel, f"{not_regular(entry.stat(follow_symlinks=False))} ignored (never opened)")
        elif storage.kind is EntryKind.BLOB_DATA:
            st = entry.stat(follow_symlinks=False)
            self.blob_files.append(BlobFile(storage.digest, entry.path, where, FileIdentity.of(st)))
        elif storage.kind in LINK_KINDS:
            self._link(storage, entry.path, where)
        else:
            self.facts.upload(storage)

    def _link(self, storage: StorageEntry, path: str, where: str) -> None:
        try:
            fd = open_regular(path)
        except OSError as e:
            self.facts.unreadable_link(storage, where, "bad-link", f"link file cannot be read ({e.strerror or e})")
            return
        try:
            content = os.read(fd, LINK_LIMIT + 1)
            size = os.fstat(fd).st_size if len(content) > LINK_LIMIT else len(content)
        except OSError as e:
            self.facts.unreadable_link(storage, where, "bad-link", f"link file cannot be read ({e.strerror})")
            return
        finally:
            os.close(fd)
        self.inv.input.bytes += len(content)
        if size > LINK_LIMIT:
            self.facts.unreadable_link(storage, where, "bad-link", f"link file of {size} bytes is not a link")
        else:
            self.facts.link(storage, content, where)

    def _ignored(self, rel: str, why: str) -> None:
        where = self.root.shown(rel)
        self.inv.problem("member-ignored", f"{shown(where)}: {why}", subject=where, severity=Severity.WARNING)


def _tag_history(rel: str) -> bool:
    """`…/_manifests/tags/<tag>/index`."""
    parts = rel.rsplit("/", 4)
    return len(parts) == 5 and parts[4] == "index" and parts[2] == "tags" and parts[1] == "_manifests"

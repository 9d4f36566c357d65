"""Facts about a registry storage, collected in whatever order its paths come: an Inventory.

Every source (a tar stream, and later a tree on disk) classifies its paths with `layout.classify`
and hands what it reads here; nothing here knows where the bytes came from or resolves anything.

Duplicate paths: for link files the last one wins, as extraction would leave it (a problem about an
earlier copy is dropped). For blob data, a copy whose bytes match its digest is kept whichever came
first, since content-addressed bytes that verify are the right bytes.
"""

from __future__ import annotations

import sys

from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.names import repository_name_problem, tag_problem
from regcarve.model.problems import Problem, Severity
from regcarve.sources.layout import EntryKind, LinkError, StorageEntry, parse_link

LINK_LIMIT = 4096
LINK_KINDS = {EntryKind.LAYER_LINK, EntryKind.REVISION_LINK, EntryKind.SIGNATURE_LINK, EntryKind.TAG_CURRENT}
MANIFEST_KINDS = {EntryKind.REVISION_LINK, EntryKind.SIGNATURE_LINK, EntryKind.TAG_CURRENT, EntryKind.TAG_INDEX}


def shown(name: str) -> str:
    """A path fit for a one-line message: quoted when it holds control or undecodable characters."""
    return name if name.isprintable() else repr(name)


class Collector:
    def __init__(self) -> None:
        self.inv = Inventory()
        self._bad_repos: set[str] = set()
        self._good_repos: set[str] = set()
        self._link_problems: dict[str, Problem] = {}  # link path below the root → the problem its content had
        self._uploads: set[str] = set()

    def accept(self, entry: StorageEntry, where: str) -> bool:
        """Whether the entry counts (its repository's name is valid); notes a repository with manifests."""
        name = entry.repository
        if not name:
            return True
        if name not in self._good_repos:
            if name in self._bad_repos:
                return False
            why = repository_name_problem(name)
            if why is not None:
                self._bad_repos.add(name)
                self.inv.problem("invalid-repository-name", f"{shown(where)}: {why}; repository skipped", subject=name)
                return False
            self._good_repos.add(name)
        if entry.kind in MANIFEST_KINDS or entry.relpath.startswith(f"repositories/{name}/_manifests"):
            self.inv.repository(name).has_manifests = True
        return True

    def invalid_tag(self, entry: StorageEntry, where: str) -> bool:
        """A tag link whose tag name is invalid: reported, and whatever the file holds, no tag comes of it."""
        if entry.kind is not EntryKind.TAG_CURRENT or (why := tag_problem(entry.tag)) is None:
            return False
        self._forget_earlier(entry)
        self._link_problems[entry.relpath] = self.inv.problem(
            "invalid-tag", f"{shown(where)}: {why} in {entry.repository}; tag skipped", subject=where)
        return True

    def upload(self, entry: StorageEntry) -> None:
        """Counted, once a path, and otherwise ignored: an upload in progress is no image yet."""
        if entry.kind is EntryKind.UPLOAD and entry.relpath not in self._uploads:
            self._uploads.add(entry.relpath)
            self.inv.repository(entry.repository).uploads += 1

    def blob(self, record: BlobRecord, json: bytes | None) -> None:
        self.inv.blobs[record.digest] = record
        if record.verified and json is not None:
            self.inv.json_blobs[record.digest] = json

    def link(self, entry: StorageEntry, content: bytes, where: str) -> str:
        """The digest the link names ("" when it names none), noted where its kind goes."""
        inv = self.inv
        repo = inv.repository(entry.repository)
        try:
            # one string per digest, however many tags and links name it
            digest = sys.intern(parse_link(content))
        except LinkError as e:
            self.unreadable_link(entry, where, "bad-link", str(e))
            return ""
        self._forget_earlier(entry)
        if entry.kind is EntryKind.TAG_CURRENT:
            repo.tags[entry.tag] = digest
        elif entry.kind is EntryKind.REVISION_LINK:
            if digest != entry.digest:
                self._link_problems[entry.relpath] = inv.problem(
                    "link-mismatch", f"{shown(where)}: names {digest}, not the digest of its path",
                    subject=where, severity=Severity.WARNING)
            repo.revisions.add(sys.intern(entry.digest))
        elif entry.kind is EntryKind.LAYER_LINK:
            repo.layer_links.add(digest)
        elif entry.kind is EntryKind.SIGNATURE_LINK:
            repo.signatures.setdefault(entry.revision, set()).add(digest)
        return digest

    def unreadable_link(self, entry: StorageEntry, where: str, code: str, why: str) -> None:
        """A link file whose content cannot be had: a tag that has one exists but points nowhere."""
        self._forget_earlier(entry)
        p = self._link_problems[entry.relpath] = self.inv.problem(code, f"{shown(where)}: {why}", subject=where)
        if entry.kind is EntryKind.TAG_CURRENT:
            self.inv.repository(entry.repository).tags[entry.tag] = ""
            p.affects.append(f"{entry.repository}:{entry.tag}")

    def _forget_earlier(self, entry: StorageEntry) -> None:
        """A link path seen again: the last copy wins, so a problem about the earlier one goes."""
        old = self._link_problems.pop(entry.relpath, None)
        if old is not None and old in self.inv.problems:
            self.inv.problems.remove(old)

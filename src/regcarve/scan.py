"""One sequential pass: archive members → registry layout → an Inventory (and blobs in a store).

Member order is arbitrary, so nothing here resolves anything: links and small JSON blobs are
collected, every blob is hashed (and stored when a store is given), and resolution happens later.

Duplicate paths: for link files the last member wins, as extraction would leave it. For blob
data a copy whose bytes match its digest is kept whichever came first, since content-addressed
bytes that verify are the right bytes.
"""

from __future__ import annotations

from typing import Callable

from regcarve.archive import ArchiveError, CorruptInput, Input, Member, MemberKind, TruncatedInput
from regcarve.blobstore import BlobStore, consume_blob
from regcarve.inventory import BlobRecord, Inventory, Severity
from regcarve.storage import (
    ANCHOR,
    EntryKind,
    LinkError,
    StorageEntry,
    classify,
    find_anchor,
    parse_link,
    repository_name_problem,
    tag_problem,
)

LINK_LIMIT = 4096
_LINK_KINDS = {EntryKind.LAYER_LINK, EntryKind.REVISION_LINK, EntryKind.SIGNATURE_LINK, EntryKind.TAG_CURRENT}


class NotRegistryStorage(Exception):
    """The input is a readable tar, but holds no registry storage."""


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


class Scanner:
    def __init__(self, store: BlobStore | None, on_member: Callable[[Input], None] | None = None):
        self.inv = Inventory()
        self.store = store
        self.on_member = on_member
        self._bad_repos: set[str] = set()
        # member name → ("link", bytes) or ("blob", BlobRecord): what a later hardlink member repeats
        self._seen: dict[str, tuple[str, object]] = {}

    def run(self, inp: Input) -> Inventory:
        inv = self.inv
        inv.compression = inp.compression
        try:
            for member in inp.members():
                inv.members += 1
                self._member(inp, member)
                if self.on_member:
                    self.on_member(inp)
        except (TruncatedInput, CorruptInput) as e:
            inv.truncated = str(e)
            inv.problem("input-truncated", f"{e}; everything after this point is missing", subject="input")
        inv.source_bytes = inp.source_bytes
        if not inv.prefixes:
            if inv.truncated:
                raise ArchiveError(inv.truncated)
            raise NotRegistryStorage(f"no {ANCHOR.rstrip('/')} found in {inv.members} tar members: not registry storage")
        if not inv.truncated and not inp.end_marker_seen:
            inv.problem("input-no-end-marker", "input ends without the tar end-of-archive marker (truncated?)",
                        subject="input", severity=Severity.WARNING)
        if inp.trailing_bytes:
            inv.problem("input-trailing-data", f"{inp.trailing_bytes} bytes of data after the end of the tar (ignored)",
                        subject="input", severity=Severity.WARNING)
        return inv

    # --- members -------------------------------------------------------------------------
    def _member(self, inp: Input, m: Member) -> None:
        entry = classify(m.name)
        if entry is None:
            return
        inv = self.inv
        inv.storage_members += 1
        inv.prefixes.add(m.name[: find_anchor(m.name) - len(ANCHOR)])
        if entry.repository and not self._repository_ok(entry, m):
            return
        if entry.repository and entry.relpath.startswith(f"repositories/{entry.repository}/_manifests"):
            inv.repository(entry.repository).has_manifests = True
        if m.kind is MemberKind.DIRECTORY:
            return
        if m.kind is MemberKind.HARDLINK:
            self._hardlink(entry, m)
            return
        if m.kind is not MemberKind.FILE:
            if entry.kind is not EntryKind.OTHER:
                inv.problem("member-ignored", f"{m.name}: {m.kind.value} member ignored (never followed)",
                            subject=m.name, severity=Severity.WARNING)
            return
        if entry.kind is EntryKind.BLOB_DATA:
            self._blob(entry, m, inp)
        elif entry.kind in _LINK_KINDS:
            if m.size > LINK_LIMIT:
                inv.problem("bad-link", f"{m.name}: link file of {m.size} bytes is not a link", subject=m.name)
                return
            content = inp.read_content(LINK_LIMIT)
            self._seen[_normalize(m.name)] = ("link", content)
            self._link(entry, content, m.name)
        elif entry.kind is EntryKind.UPLOAD:
            inv.repository(entry.repository).uploads += 1

    def _repository_ok(self, entry: StorageEntry, m: Member) -> bool:
        name = entry.repository
        if name in self._bad_repos:
            return False
        why = repository_name_problem(name)
        if why is None:
            return True
        self._bad_repos.add(name)
        self.inv.problem("invalid-repository-name", f"{m.name}: {why}; repository skipped", subject=name)
        return False

    def _blob(self, entry: StorageEntry, m: Member, inp: Input) -> None:
        inv = self.inv
        previous = inv.blobs.get(entry.digest)
        if previous is not None and previous.verified:
            self._seen[_normalize(m.name)] = ("blob", previous)
            return  # already have verified bytes; the walker skips this copy
        consumed = consume_blob(entry.digest, m.size, inp.chunks(), self.store)
        rec = BlobRecord(entry.digest, consumed.size, consumed.actual == entry.digest, member=m.name)
        if not rec.verified:
            rec.actual = consumed.actual
        elif consumed.json is not None:
            inv.json_blobs[entry.digest] = consumed.json
        inv.blobs[entry.digest] = rec
        self._seen[_normalize(m.name)] = ("blob", rec)

    def _hardlink(self, entry: StorageEntry, m: Member) -> None:
        target = self._seen.get(_normalize(m.linkname))
        if target is None:
            if entry.kind is not EntryKind.OTHER:
                self.inv.problem("bad-hardlink", f"{m.name}: hard link to {m.linkname!r}, which is not an earlier "
                                 "storage member", subject=m.name)
            return
        what, value = target
        if what == "link" and entry.kind in _LINK_KINDS:
            self._seen[_normalize(m.name)] = target
            self._link(entry, value, m.name)  # type: ignore[arg-type]
        elif what == "blob" and entry.kind is EntryKind.BLOB_DATA:
            src: BlobRecord = value  # type: ignore[assignment]
            if self.inv.has_blob(entry.digest):
                return
            ok = src.verified and src.digest == entry.digest
            rec = BlobRecord(entry.digest, src.size, ok, "" if ok else (src.actual or src.digest), m.name)
            self.inv.blobs[entry.digest] = rec

    def _link(self, entry: StorageEntry, content: bytes, member: str) -> None:
        inv = self.inv
        repo = inv.repository(entry.repository)
        try:
            digest = parse_link(content)
        except LinkError as e:
            ref = f"{entry.repository}:{entry.tag}" if entry.tag else entry.repository
            p = inv.problem("bad-link", f"{member}: {e}", subject=member)
            if entry.kind is EntryKind.TAG_CURRENT and not tag_problem(entry.tag):
                repo.tags[entry.tag] = ""  # the tag exists but points nowhere
                p.affects.append(ref)
            return
        if entry.kind is EntryKind.TAG_CURRENT:
            if (why := tag_problem(entry.tag)) is not None:
                inv.problem("invalid-tag", f"{member}: {why} in {entry.repository}; tag skipped", subject=member)
                return
            repo.tags[entry.tag] = digest
        elif entry.kind is EntryKind.REVISION_LINK:
            if digest != entry.digest:
                inv.problem("link-mismatch", f"{member}: names {digest}, not the digest of its path",
                            subject=member, severity=Severity.WARNING)
            repo.revisions.add(entry.digest)
        elif entry.kind is EntryKind.LAYER_LINK:
            repo.layer_links.add(digest)
        elif entry.kind is EntryKind.SIGNATURE_LINK:
            repo.signatures.setdefault(entry.revision, set()).add(digest)


def scan(inp: Input, store: BlobStore | None = None, on_member: Callable[[Input], None] | None = None) -> Inventory:
    """Read the whole input once and return what it holds."""
    return Scanner(store, on_member).run(inp)

"""One sequential pass: archive members → registry layout → an Inventory (and blobs in a store).

Member order is arbitrary, so nothing here resolves anything: links and small JSON blobs are
collected, every blob is hashed (and stored when a store is given), and resolution happens later.

Duplicate paths: for link files the last member wins, as extraction would leave it (a problem
about an earlier copy is dropped). For blob data a copy whose bytes match its digest is kept
whichever came first, since content-addressed bytes that verify are the right bytes.

Hostile members: a name with a `..` component is ignored (GNU tar refuses to extract it too); a
leading `/` is no different from none (tar strips it). Symlinks, devices and FIFOs below the
storage root are reported and never followed. A hard link replays the content of the earlier
storage member it names; one naming anything else is reported. Nothing here writes a path taken
from a member name: blobs are stored by digest.

A tar that ends without its end-of-archive marker is treated as truncated: a cut that falls on
a member boundary leaves no other trace, and everything after it is missing.
"""

from __future__ import annotations

from typing import Callable

from regcarve.sources.tarball import ArchiveError, CorruptInput, Input, Member, MemberKind, TruncatedInput
from regcarve.blobs.store import BlobStore, consume_blob
from regcarve.model.inventory import BlobRecord, Inventory, Problem, Severity
from regcarve.sources.layout import (
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


def shown(name: str) -> str:
    """A member name fit for a one-line message: quoted when it holds control or undecodable characters."""
    return name if name.isprintable() else repr(name)


def _has_dotdot(name: str) -> bool:
    return ".." in name.split("/")


class Scanner:
    def __init__(self, store: BlobStore | None, on_member: Callable[[Input], None] | None = None):
        self.inv = Inventory()
        self.store = store
        self.on_member = on_member
        self._bad_repos: set[str] = set()
        self._good_repos: set[str] = set()
        # member name → ("bytes", content) or ("blob", BlobRecord): what a later hardlink member repeats
        self._seen: dict[str, tuple[str, object]] = {}
        self._link_problems: dict[str, Problem] = {}  # link path below the root → the problem its content had
        self._dotdot = 0  # members ignored for a '..' in their names
        self._uploads: set[str] = set()

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
        if not inv.truncated and not inp.end_marker_seen:
            inv.truncated = (f"input truncated: the tar ends without its end-of-archive marker, after {inv.members} "
                             f"members ({inv.source_bytes} bytes read)")
            inv.problem("input-no-end-marker", f"{inv.truncated}; members after the cut are missing", subject="input")
        if not inv.prefixes:
            if inv.truncated:
                raise ArchiveError(inv.truncated)
            dotdot = f" ({self._dotdot} members with '..' in their names ignored)" if self._dotdot else ""
            raise NotRegistryStorage(
                f"no {ANCHOR.rstrip('/')} found in {inv.members} tar members{dotdot}: not registry storage")
        if inp.trailing_bytes:
            inv.problem("input-trailing-data", f"{inp.trailing_bytes} bytes of data after the end of the tar (ignored)",
                        subject="input", severity=Severity.WARNING)
        return inv

    # --- members -------------------------------------------------------------------------
    def _member(self, inp: Input, m: Member) -> None:
        if m.kind is MemberKind.DIRECTORY and ".." not in m.name:
            # Most members of a registry tar are directories; only files carry meaning (a
            # repository with tags or revisions has files under `_manifests`).
            if not self.inv.prefixes and (at := find_anchor(m.name)) >= 0:
                self.inv.prefixes.add(m.name[: at - len(ANCHOR)])
            return
        entry = classify(m.name)
        if entry is None:
            return
        inv = self.inv
        if _has_dotdot(m.name):
            self._dotdot += 1
            inv.problem("member-ignored", f"{shown(m.name)}: name has a '..' component; ignored, as tar extraction "
                        "would", subject=m.name, severity=Severity.WARNING)
            return
        inv.prefixes.add(m.name[: find_anchor(m.name) - len(ANCHOR)])
        if entry.repository and not self._repository_ok(entry, m):
            return
        if entry.repository and entry.relpath.startswith(f"repositories/{entry.repository}/_manifests"):
            inv.repository(entry.repository).has_manifests = True
        if m.kind is MemberKind.DIRECTORY:
            return
        if entry.kind is EntryKind.TAG_CURRENT and (why := tag_problem(entry.tag)) is not None:
            self._forget_earlier(entry)  # whatever the member holds, a tag by that name cannot be written
            self._link_problems[entry.relpath] = inv.problem(
                "invalid-tag", f"{shown(m.name)}: {why} in {entry.repository}; tag skipped", subject=m.name)
            return
        if m.kind is MemberKind.HARDLINK:
            self._hardlink(entry, m, inp)
            return
        if m.kind is not MemberKind.FILE:
            what = "device, FIFO or sparse" if m.kind is MemberKind.OTHER else m.kind.value
            inv.problem("member-ignored", f"{shown(m.name)}: {what} member ignored (never followed)",
                        subject=m.name, severity=Severity.WARNING)
            return
        if entry.kind is EntryKind.BLOB_DATA:
            self._blob(entry, m, inp)
        elif entry.kind in _LINK_KINDS:
            if m.size > LINK_LIMIT:
                self._seen.pop(_normalize(m.name), None)
                self._unreadable_link(entry, m.name, "bad-link", f"link file of {m.size} bytes is not a link")
                return
            content = inp.read_content(LINK_LIMIT)
            self._seen[_normalize(m.name)] = ("bytes", content)
            self._link(entry, content, m.name)
        else:
            self._upload(entry)
            # kept only for a later hard link to it (a tree deduplicated by hardlinks may name any file)
            if m.size <= LINK_LIMIT:
                self._seen[_normalize(m.name)] = ("bytes", inp.read_content(LINK_LIMIT))
            else:
                self._seen.pop(_normalize(m.name), None)

    def _upload(self, entry: StorageEntry) -> None:
        """Counted, once a path, and otherwise ignored: an upload in progress is no image yet."""
        if entry.kind is EntryKind.UPLOAD and entry.relpath not in self._uploads:
            self._uploads.add(entry.relpath)
            self.inv.repository(entry.repository).uploads += 1

    def _repository_ok(self, entry: StorageEntry, m: Member) -> bool:
        name = entry.repository
        if name in self._good_repos:
            return True
        if name in self._bad_repos:
            return False
        why = repository_name_problem(name)
        if why is None:
            self._good_repos.add(name)
            return True
        self._bad_repos.add(name)
        self.inv.problem("invalid-repository-name", f"{shown(m.name)}: {why}; repository skipped", subject=name)
        return False

    def _blob(self, entry: StorageEntry, m: Member, inp: Input, replay: bytes | None = None) -> None:
        inv = self.inv
        previous = inv.blobs.get(entry.digest)
        if previous is not None and previous.verified:
            self._seen[_normalize(m.name)] = ("blob", previous)
            return  # already have verified bytes; the walker skips this copy
        chunks = [memoryview(replay)] if replay is not None else inp.chunks()
        consumed = consume_blob(entry.digest, m.size if replay is None else len(replay), chunks, self.store)
        rec = BlobRecord(entry.digest, consumed.size, consumed.actual == entry.digest, member=m.name)
        if not rec.verified:
            rec.actual = consumed.actual
        elif consumed.json is not None:
            inv.json_blobs[entry.digest] = consumed.json
        inv.blobs[entry.digest] = rec
        self._seen[_normalize(m.name)] = ("blob", rec)

    def _hardlink(self, entry: StorageEntry, m: Member, inp: Input) -> None:
        target = self._seen.get(_normalize(m.linkname))
        if entry.kind not in _LINK_KINDS and entry.kind is not EntryKind.BLOB_DATA:
            self._upload(entry)
            if target is not None:
                self._seen[_normalize(m.name)] = target
            else:
                self._seen.pop(_normalize(m.name), None)
            return
        why = f"hard link to {m.linkname!r}, which is not an earlier storage member"
        if target is not None and target[0] == "blob" and entry.kind in _LINK_KINDS:
            why = f"hard link to {m.linkname!r}, a blob"  # whose bytes are not kept
            target = None
        if target is None:
            self._seen.pop(_normalize(m.name), None)
            if entry.kind in _LINK_KINDS:
                self._unreadable_link(entry, m.name, "bad-hardlink", why)
            else:
                self.inv.problem("bad-hardlink", f"{shown(m.name)}: {why}", subject=m.name)
            return
        what, value = target
        if what == "bytes":
            self._seen[_normalize(m.name)] = target
            if entry.kind is EntryKind.BLOB_DATA:
                self._blob(entry, m, inp, replay=value)  # type: ignore[arg-type]
            else:
                self._link(entry, value, m.name)  # type: ignore[arg-type]
            return
        self._seen[_normalize(m.name)] = target
        if entry.kind is EntryKind.BLOB_DATA:
            src: BlobRecord = value  # type: ignore[assignment]
            if self.inv.has_blob(entry.digest):
                return
            ok = src.verified and src.digest == entry.digest
            rec = BlobRecord(entry.digest, src.size, ok, "" if ok else (src.actual or src.digest), m.name)
            self.inv.blobs[entry.digest] = rec

    def _forget_earlier(self, entry: StorageEntry) -> None:
        """A link path seen again: the last copy wins, so a problem about the earlier one goes."""
        old = self._link_problems.pop(entry.relpath, None)
        if old is not None and old in self.inv.problems:
            self.inv.problems.remove(old)

    def _unreadable_link(self, entry: StorageEntry, member: str, code: str, why: str) -> None:
        """A link file whose content cannot be had: a tag that has one exists but points nowhere."""
        inv = self.inv
        self._forget_earlier(entry)
        p = self._link_problems[entry.relpath] = inv.problem(code, f"{shown(member)}: {why}", subject=member)
        if entry.kind is EntryKind.TAG_CURRENT:
            inv.repository(entry.repository).tags[entry.tag] = ""
            p.affects.append(f"{entry.repository}:{entry.tag}")

    def _link(self, entry: StorageEntry, content: bytes, member: str) -> None:
        inv = self.inv
        repo = inv.repository(entry.repository)
        try:
            digest = parse_link(content)
        except LinkError as e:
            self._unreadable_link(entry, member, "bad-link", str(e))
            return
        self._forget_earlier(entry)
        if entry.kind is EntryKind.TAG_CURRENT:
            repo.tags[entry.tag] = digest
        elif entry.kind is EntryKind.REVISION_LINK:
            if digest != entry.digest:
                self._link_problems[entry.relpath] = inv.problem(
                    "link-mismatch", f"{shown(member)}: names {digest}, not the digest of its path",
                    subject=member, severity=Severity.WARNING)
            repo.revisions.add(entry.digest)
        elif entry.kind is EntryKind.LAYER_LINK:
            repo.layer_links.add(digest)
        elif entry.kind is EntryKind.SIGNATURE_LINK:
            repo.signatures.setdefault(entry.revision, set()).add(digest)


def scan(inp: Input, store: BlobStore | None = None, on_member: Callable[[Input], None] | None = None) -> Inventory:
    """Read the whole input once and return what it holds."""
    return Scanner(store, on_member).run(inp)

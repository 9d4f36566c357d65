"""One sequential pass over a tar stream: members → registry layout → an Inventory (and blobs in a store).

Member order is arbitrary, so nothing here resolves anything: what the members hold goes to a
Collector, every blob is hashed (and stored when a store is given), and resolution happens later.

Hostile members: a name with a `..` component is ignored (GNU tar refuses to extract it too); a
leading `/` is no different from none (tar strips it). Symlinks, devices and FIFOs below the
storage root are reported and never followed. A hard link replays the content of the earlier
storage member it names; one naming anything else is reported. Nothing here writes a path taken
from a member name: blobs are stored by digest.

A tar that ends without its end-of-archive marker is treated as truncated: a cut that falls on
a member boundary leaves no other trace, and everything after it is missing.
"""

from __future__ import annotations

import sys
from typing import Callable

from regcarve.blobs.store import BlobStore, consume_blob
from regcarve.model.inventory import BlobRecord, Inventory
from regcarve.model.names import DIGEST
from regcarve.model.problems import Severity
from regcarve.sources.collect import LINK_KINDS, LINK_LIMIT, Collector, shown
from regcarve.sources.layout import ANCHOR, EntryKind, StorageEntry, anchor_prefix, classify, find_anchor
from regcarve.sources.tarball.errors import ArchiveError, CorruptInput, NotRegistryStorage, TruncatedInput
from regcarve.sources.tarball.tarheader import Member, MemberKind
from regcarve.sources.tarball.walker import Input

Progress = Callable[[int], None]  # bytes drawn from the input so far


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


# What a later hard link may name: a file's content (a link file's digest as the inventory's own
# string), or the record of a blob. Keyed by the hash of the normalized member name, not the name: a
# registry tar has a few files per tag, and their names would be most of what this holds. Python's
# string hash is 64-bit SipHash with a key drawn per process, so a tar cannot be made to collide;
# by chance two of n names share a key with odds of about n²/2⁶⁵ (10⁻⁹ at a million members).
Kept = bytes | str | BlobRecord


def _key(name: str) -> int:
    return hash(_normalize(name) if name[:1] in "./" else name)


def _kept_content(content: bytes) -> bytes | str:
    text = content.decode("ascii", "replace")
    return sys.intern(text) if len(content) == 71 and DIGEST.fullmatch(text) else content


def _has_dotdot(name: str) -> bool:
    return ".." in name.split("/")


class TarScanner:
    def __init__(self, store: BlobStore | None, progress: Progress | None = None):
        self.facts = Collector()
        self.inv = self.facts.inv
        self.store = store
        self.progress = progress
        self._seen: dict[int, Kept] = {}  # member name's _key → what a later hardlink member repeats
        self._dotdot = 0  # members ignored for a '..' in their names
        self.name = ""  # the file being read, when it is one of several
        self._anchored = False  # the stream being read holds a docker/registry/v2/

    def run(self, inp: Input) -> Inventory:
        self.read(inp)
        return self.finish()

    def read(self, inp: Input, name: str = "") -> None:
        """One tar stream into the inventory; several, one after the other, make one storage (later link
        files override earlier ones, as untarring them in order would). `name` (its file) is then said in
        what concerns that stream alone: a cut, data after its end, a blob that does not verify."""
        facts = self.inv.input
        self.name = name
        label = f"{name}: " if name else ""
        facts.compression = _joined(facts.compression, inp.compression)
        members, truncated, self._anchored = 0, "", False
        try:
            for member in inp.members():
                members += 1
                self._member(inp, member)
                if self.progress:
                    self.progress(inp.source_bytes)
        except (TruncatedInput, CorruptInput) as e:
            truncated = f"{label}{e}"
            self.inv.problem("input-truncated", f"{truncated}; everything after this point is missing", subject="input")
        members += inp.directories_skipped
        facts.members += members
        facts.bytes += inp.source_bytes
        if not truncated and not inp.end_marker_seen:
            truncated = (f"{label}input truncated: the tar ends without its end-of-archive marker, after "
                         f"{members} members ({inp.source_bytes} bytes read)")
            self.inv.problem("input-no-end-marker", f"{truncated}; members after the cut are missing", subject="input")
        facts.truncated = "; ".join(t for t in (facts.truncated, truncated) if t)
        if not self._anchored and not (name and truncated):
            if truncated:
                raise ArchiveError(truncated)
            dotdot = f" ({self._dotdot} members with '..' in their names ignored)" if self._dotdot else ""
            raise NotRegistryStorage(
                f"{label}no {ANCHOR.rstrip('/')} found in {members} tar members{dotdot}: not registry storage")
        if inp.trailing_bytes:
            self.inv.problem("input-trailing-data", f"{label}{inp.trailing_bytes} bytes of data after the end of "
                             "the tar (ignored)", subject="input", severity=Severity.WARNING)
        self._seen.clear()  # a hard link names an earlier member of its own tar

    def finish(self) -> Inventory:
        """The inventory, once every stream is read."""
        if not self.inv.input.prefixes:
            raise ArchiveError(self.inv.input.truncated)
        return self.inv

    def _anchor(self, prefix: str) -> None:
        self.inv.input.prefixes.add(prefix)
        self._anchored = True

    def _member(self, inp: Input, m: Member) -> None:
        if m.kind is MemberKind.DIRECTORY and ".." not in m.name:
            # Most members of a registry tar are directories; only files carry meaning (a
            # repository with tags or revisions has files under `_manifests`).
            if not self._anchored and (at := find_anchor(m.name)) >= 0:
                self._anchor(anchor_prefix(m.name, at))
                inp.skip_directories = True  # from now on, plain directories tell nothing
            return
        at = find_anchor(m.name)
        entry = classify(m.name, at)
        if entry is None:
            return
        if ".." in m.name and _has_dotdot(m.name):
            self._dotdot += 1
            self.inv.problem("member-ignored", f"{shown(m.name)}: name has a '..' component; ignored, as tar "
                             "extraction would", subject=m.name, severity=Severity.WARNING)
            return
        self._anchor(anchor_prefix(m.name, at))
        if not self.facts.accept(entry, m.name) or m.kind is MemberKind.DIRECTORY:
            return
        if self.facts.invalid_tag(entry, m.name):
            return
        if m.kind is MemberKind.HARDLINK:
            self._hardlink(entry, m, inp)
        elif m.kind is not MemberKind.FILE:
            what = "device, FIFO or sparse" if m.kind is MemberKind.OTHER else m.kind.value
            self.inv.problem("member-ignored", f"{shown(m.name)}: {what} member ignored (never followed)",
                             subject=m.name, severity=Severity.WARNING)
        elif entry.kind is EntryKind.BLOB_DATA:
            self._blob(entry, m, inp)
        elif entry.kind in LINK_KINDS:
            self._link_file(entry, m, inp)
        else:
            self.facts.upload(entry)
            # kept only for a later hard link to it (a tree deduplicated by hardlinks may name any file)
            self._keep(m, inp.read_content(LINK_LIMIT) if m.size <= LINK_LIMIT else None)

    def _keep(self, m: Member, content: bytes | None) -> None:
        if content is None:
            self._seen.pop(_key(m.name), None)
        else:
            self._seen[_key(m.name)] = _kept_content(content)

    def _link_file(self, entry: StorageEntry, m: Member, inp: Input) -> None:
        if m.size > LINK_LIMIT:
            self._keep(m, None)
            self.facts.unreadable_link(entry, m.name, "bad-link", f"link file of {m.size} bytes is not a link")
            return
        content = inp.read_content(LINK_LIMIT)
        digest = self.facts.link(entry, content, m.name)
        # the inventory's own string when the file is exactly the digest, as _kept_content would make it
        self._seen[_key(m.name)] = digest if digest and len(content) == 71 else content

    def _blob(self, entry: StorageEntry, m: Member, inp: Input, replay: bytes | None = None) -> None:
        previous = self.inv.blobs.get(entry.digest)
        if previous is not None and previous.verified:
            self._seen[_key(m.name)] = previous
            return  # already have verified bytes; the walker skips this copy
        chunks = [memoryview(replay)] if replay is not None else inp.chunks()
        consumed = consume_blob(entry.digest, m.size if replay is None else len(replay), chunks, self.store)
        verified = consumed.actual == entry.digest
        rec = BlobRecord(entry.digest, consumed.size, verified, "" if verified else consumed.actual, m.name)
        if not verified and self.name:
            rec.unusable = f"is corrupt in {self.name} (its bytes hash to {consumed.actual})"
        self.facts.blob(rec, consumed.json)
        self._seen[_key(m.name)] = rec

    def _hardlink(self, entry: StorageEntry, m: Member, inp: Input) -> None:
        target = self._seen.get(_key(m.linkname))
        if entry.kind not in LINK_KINDS and entry.kind is not EntryKind.BLOB_DATA:
            self.facts.upload(entry)
            if target is not None:
                self._seen[_key(m.name)] = target
            else:
                self._seen.pop(_key(m.name), None)
            return
        why = f"hard link to {m.linkname!r}, which is not an earlier storage member"
        if isinstance(target, BlobRecord) and entry.kind in LINK_KINDS:
            why = f"hard link to {m.linkname!r}, a blob"  # whose bytes are not kept
            target = None
        if target is None:
            self._seen.pop(_key(m.name), None)
            if entry.kind in LINK_KINDS:
                self.facts.unreadable_link(entry, m.name, "bad-hardlink", why)
            else:
                self.inv.problem("bad-hardlink", f"{shown(m.name)}: {why}", subject=m.name)
            return
        self._seen[_key(m.name)] = target
        if not isinstance(target, BlobRecord):
            content = target.encode() if isinstance(target, str) else target
            if entry.kind is EntryKind.BLOB_DATA:
                self._blob(entry, m, inp, replay=content)
            else:
                self.facts.link(entry, content, m.name)
        elif entry.kind is EntryKind.BLOB_DATA and not self.inv.has_blob(entry.digest):
            ok = target.verified and target.digest == entry.digest
            self.facts.blob(BlobRecord(entry.digest, target.size, ok, "" if ok else (target.actual or target.digest),
                                       m.name), None)


def _joined(before: str, compression: str) -> str:
    """The compressions of the streams read, each said once in order of first use (`gzip`, `tar+gzip`)."""
    said = before.split("+") if before else []
    return "+".join(said + [compression] if compression not in said else said)


def scan(inp: Input, store: BlobStore | None = None, progress: Progress | None = None) -> Inventory:
    """Read the whole input once and return what it holds."""
    return TarScanner(store, progress).run(inp)

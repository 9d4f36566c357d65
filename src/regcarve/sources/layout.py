"""The Distribution storage layout: which path means what, and link files.

Paths are matched below the anchor `docker/registry/v2/`, wherever it sits in a member name
(`./`, `var/lib/registry/`, `data/registry/` or nothing in front of it). A name may also be rooted
one or two levels lower, at `registry/v2/` or `v2/` (a tar made inside `docker/` or `registry/`):
only at the start of the name, and only followed by `blobs/` or `repositories/`, so that some other
folder called `v2` is not taken for storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from regcarve.model.names import DIGEST, SHA256_HEX

ANCHOR = "docker/registry/v2/"
SHORT_ROOTS = ("registry/v2/", "v2/")  # the anchor's tails, accepted where a name starts
STORAGE_FOLDERS = ("blobs", "repositories")


class EntryKind(Enum):
    BLOB_DATA = "blob"  # blobs/sha256/xx/<hex>/data
    LAYER_LINK = "layer-link"  # <repo>/_layers/sha256/<hex>/link
    REVISION_LINK = "revision-link"  # <repo>/_manifests/revisions/sha256/<hex>/link
    SIGNATURE_LINK = "signature-link"  # .../revisions/sha256/<hex>/signatures/sha256/<sig>/link (v2.0–2.4)
    TAG_CURRENT = "tag-current"  # <repo>/_manifests/tags/<tag>/current/link
    TAG_INDEX = "tag-index"  # <repo>/_manifests/tags/<tag>/index/sha256/<hex>/link (history only)
    UPLOAD = "upload"  # <repo>/_uploads/... (ignored, counted)
    OTHER = "other"  # anything else under the anchor (directories, scheduler state, unknown files)


@dataclass(slots=True)  # not frozen: made once per member, and a frozen __init__ costs twice as much
class StorageEntry:
    """What one member path means in the registry layout."""

    kind: EntryKind
    relpath: str  # path below the anchor, for messages
    repository: str = ""  # raw repository path, NOT yet validated
    tag: str = ""  # raw tag name, NOT yet validated
    digest: str = ""  # the digest the path claims (sha256:<hex>)
    revision: str = ""  # for SIGNATURE_LINK: the manifest revision it belongs to


def find_anchor(name: str) -> int:
    """Index just past `docker/registry/v2/` at a path-component boundary (or past a short root
    that starts the name), or -1."""
    start = 0
    while True:
        i = name.find(ANCHOR, start)
        if i < 0:
            return _short_root(name)
        if i == 0 or name[i - 1] == "/":
            return i + len(ANCHOR)
        start = i + 1


def anchor_prefix(name: str, at: int) -> str:
    """What stands before the storage root in a name whose root ends at `at` (find_anchor): `./` and
    `/` in front of a short root count as nothing, as they do in front of the anchor for tar."""
    return name[: at - len(ANCHOR)] if name[:at].endswith(ANCHOR) else ""


def _short_root(name: str) -> int:
    rooted = name.lstrip("/")
    while rooted.startswith("./"):
        rooted = rooted[2:].lstrip("/")
    skipped = len(name) - len(rooted)
    for root in SHORT_ROOTS:
        if rooted.startswith(root) and rooted[len(root):].split("/", 1)[0] in STORAGE_FOLDERS:
            return skipped + len(root)
    return -1


def classify(name: str, at: int | None = None) -> StorageEntry | None:
    """Classify a member name; None when it is not below the storage anchor (`at`: find_anchor's
    answer, when the caller has it already)."""
    at = find_anchor(name) if at is None else at
    if at < 0:
        return None
    rel = name[at:].rstrip("/")
    if (common := _COMMON.fullmatch(rel)) is not None:
        return _common_entry(rel, common)
    parts = rel.split("/")
    if parts[0] == "blobs":
        return _classify_blob(rel, parts)
    if parts[0] == "repositories":
        return _classify_repository_path(rel, parts[1:])
    return StorageEntry(EntryKind.OTHER, rel)


# The paths nearly every member has, in one match; anything it does not match (or matches no more
# narrowly than the general rules below would) goes through them.
_HEX = "[a-f0-9]{64}"
_COMMON = re.compile(
    "repositories/(?P<repo>[^_/][^/]*(?:/[^_/][^/]*)*)/(?:"
    f"_manifests/tags/(?P<tag>[^/]+)/(?:current/link|index/sha256/(?P<index>{_HEX})/link)"
    f"|_manifests/revisions/sha256/(?P<revision>{_HEX})/link"
    f"|_layers/sha256/(?P<layer>{_HEX})/link)"
    "|blobs/sha256/(?P<fan>[a-f0-9]{2})/(?P<blob>(?P=fan)[a-f0-9]{62})/data")


def _common_entry(rel: str, m: re.Match[str]) -> StorageEntry:
    repo, tag, index, revision, layer, _, blob = m.groups()
    if blob is not None:
        return StorageEntry(EntryKind.BLOB_DATA, rel, digest="sha256:" + blob)
    if tag is not None:
        if index is not None:
            return StorageEntry(EntryKind.TAG_INDEX, rel, repository=repo, tag=tag, digest="sha256:" + index)
        return StorageEntry(EntryKind.TAG_CURRENT, rel, repository=repo, tag=tag)
    if revision is not None:
        return StorageEntry(EntryKind.REVISION_LINK, rel, repository=repo, digest="sha256:" + revision)
    return StorageEntry(EntryKind.LAYER_LINK, rel, repository=repo, digest="sha256:" + layer)


def _classify_blob(rel: str, parts: list[str]) -> StorageEntry:
    # blobs/sha256/ab/<hex>/data
    if (
        len(parts) == 5
        and parts[1] == "sha256"
        and parts[4] == "data"
        and SHA256_HEX.fullmatch(parts[3])
        and parts[2] == parts[3][:2]
    ):
        return StorageEntry(EntryKind.BLOB_DATA, rel, digest="sha256:" + parts[3])
    return StorageEntry(EntryKind.OTHER, rel)


def _classify_repository_path(rel: str, parts: list[str]) -> StorageEntry:
    # The repository name ends at the first component starting with "_": name components
    # never start with "_" in the grammar, so this split is unambiguous for valid names.
    for i, part in enumerate(parts):
        if part.startswith("_"):
            repo = "/".join(parts[:i])
            return _classify_in_repository(rel, repo, part, parts[i + 1 :])
    return StorageEntry(EntryKind.OTHER, rel)


def _digest_dir(alg: str, hexpart: str) -> str:
    if alg == "sha256" and SHA256_HEX.fullmatch(hexpart):
        return "sha256:" + hexpart
    return ""


def _classify_in_repository(rel: str, repo: str, section: str, rest: list[str]) -> StorageEntry:
    if section == "_uploads":
        return StorageEntry(EntryKind.UPLOAD, rel, repository=repo)
    if section == "_layers":
        # _layers/sha256/<hex>/link  (tarsum-era links have more components: ignored)
        if len(rest) == 3 and rest[2] == "link" and (d := _digest_dir(rest[0], rest[1])):
            return StorageEntry(EntryKind.LAYER_LINK, rel, repository=repo, digest=d)
        return StorageEntry(EntryKind.OTHER, rel, repository=repo)
    if section != "_manifests" or not rest:
        return StorageEntry(EntryKind.OTHER, rel, repository=repo)
    if rest[0] == "revisions":
        r = rest[1:]
        if len(r) == 3 and r[2] == "link" and (d := _digest_dir(r[0], r[1])):
            return StorageEntry(EntryKind.REVISION_LINK, rel, repository=repo, digest=d)
        if len(r) == 6 and r[2] == "signatures" and r[5] == "link":
            rev, sig = _digest_dir(r[0], r[1]), _digest_dir(r[3], r[4])
            if rev and sig:
                return StorageEntry(EntryKind.SIGNATURE_LINK, rel, repository=repo, digest=sig, revision=rev)
        return StorageEntry(EntryKind.OTHER, rel, repository=repo)
    if rest[0] == "tags" and len(rest) >= 2:
        tag, t = rest[1], rest[2:]
        if t == ["current", "link"]:
            return StorageEntry(EntryKind.TAG_CURRENT, rel, repository=repo, tag=tag)
        if len(t) == 4 and t[0] == "index" and t[3] == "link" and (d := _digest_dir(t[1], t[2])):
            return StorageEntry(EntryKind.TAG_INDEX, rel, repository=repo, tag=tag, digest=d)
    return StorageEntry(EntryKind.OTHER, rel, repository=repo)


class LinkError(ValueError):
    pass


def parse_link(content: bytes) -> str:
    """The digest a link file names. Lenient about whitespace, strict about the digest."""
    try:
        text = content.decode("ascii").strip()
    except UnicodeDecodeError:
        raise LinkError(f"link is not text ({len(content)} bytes)") from None
    if not DIGEST.fullmatch(text):
        shown = text[:40] + ("…" if len(text) > 40 else "")
        raise LinkError(f"link does not hold a sha256 digest: {shown!r}")
    return text

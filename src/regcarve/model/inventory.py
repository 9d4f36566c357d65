"""What one read of a registry storage found: repositories, links, blobs and problems, before resolution."""

from __future__ import annotations

from dataclasses import dataclass, field

from regcarve.model.problems import Problem, Severity


@dataclass(slots=True)
class BlobRecord:
    digest: str  # what the path claims
    size: int
    verified: bool  # sha256 of the bytes equals the claimed digest
    actual: str = ""  # the sha256 the bytes had, when not verified
    member: str = ""
    unusable: str = ""  # why, when not verified for another reason than its hash (unreadable, wrong size)
    hashed: bool = True  # False: only its presence and size were checked (a tree read with --verify size)


@dataclass(slots=True)
class RepositoryRecord:
    name: str
    has_manifests: bool = False  # the directory holds `_manifests` (what makes it a repository)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest from current/link
    revisions: set[str] = field(default_factory=set)
    layer_links: set[str] = field(default_factory=set)
    signatures: dict[str, set[str]] = field(default_factory=dict)  # revision -> signature blob digests
    uploads: int = 0  # members under _uploads, ignored


@dataclass
class InputFacts:
    """How the source was read: its compression, what was drawn from it, whether it was whole."""

    compression: str = ""
    bytes: int = 0
    members: int = 0
    prefixes: set[str] = field(default_factory=set)  # what stood before docker/registry/v2/
    truncated: str = ""  # the error text when the input ended early
    verification: str = "sha256"  # "size": blobs in a tree were checked for presence and size, not hashed
    root: str = ""  # a tree's storage folder, as found from the path given


@dataclass
class Inventory:
    input: InputFacts = field(default_factory=InputFacts)
    repositories: dict[str, RepositoryRecord] = field(default_factory=dict)
    blobs: dict[str, BlobRecord] = field(default_factory=dict)
    json_blobs: dict[str, bytes] = field(default_factory=dict)  # small verified JSON blobs, by digest
    problems: list[Problem] = field(default_factory=list)

    def repository(self, name: str) -> RepositoryRecord:
        repo = self.repositories.get(name)
        if repo is None:
            repo = self.repositories[name] = RepositoryRecord(name)
        return repo

    def has_blob(self, digest: str) -> bool:
        rec = self.blobs.get(digest)
        return rec is not None and rec.verified

    def problem(self, code: str, message: str, *, subject: str = "", severity: Severity = Severity.ERROR) -> Problem:
        p = Problem(code, message, severity, subject)
        self.problems.append(p)
        return p

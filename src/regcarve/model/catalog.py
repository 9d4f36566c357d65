"""Resolution: from an Inventory to images — every tag's manifest tree, its blobs, kind and problems."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator, Mapping

from regcarve.model.attachments import Attachment, AttachmentKind, Via, kind_of, tag_link
from regcarve.model.expected import EXPECTED_BLOB
from regcarve.model.inventory import Inventory
from regcarve.model.manifests import (
    IMAGE_CONFIGS,
    JSON_LIMIT,
    Descriptor,
    ManifestError,
    ParsedManifest,
    Platform,
    is_image_layer,
    parse_manifest,
)
from regcarve.model.problems import Problem, Severity, unique

MAX_INDEX_DEPTH = 8


class ImageKind(Enum):
    IMAGE = "image"
    INDEX = "index"  # multi-arch: Docker manifest list or OCI index
    SCHEMA1 = "schema1"
    ARTIFACT = "artifact"  # non-image config or layers: Helm chart, cosign signature, attestation …
    BROKEN = "broken"  # the manifest itself is unreadable or absent


@dataclass(eq=False, slots=True)
class ManifestNode:
    """One manifest of an image: the tag's own, or a child of an index."""

    digest: str
    media_type: str
    raw: bytes
    parsed: ParsedManifest
    descriptor: Descriptor | None = None  # how the parent index refers to it
    kind: ImageKind = ImageKind.IMAGE
    platform: Platform | None = None
    children: list["ManifestNode"] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # of this manifest and its own blobs
    signatures: list[bytes] = field(default_factory=list)  # schema1 signatures stored separately (2.0–2.4)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_attestation(self) -> bool:
        d = self.descriptor
        return bool(d and (d.is_attestation or (d.platform and d.platform.is_unknown)))

    def walk(self) -> Iterator["ManifestNode"]:
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def holds_images(self) -> bool:
        """Some manifest of it is a container image (an index of artifacts only, or a referrers index, is not)."""
        return any(n.kind in (ImageKind.IMAGE, ImageKind.SCHEMA1) and not n.is_attestation for n in self.walk())

    def blobs(self) -> list[Descriptor]:
        """Config and layers of this manifest (not of its children)."""
        out = [self.parsed.config] if self.parsed.config else []
        return out + self.parsed.layers


@dataclass(eq=False, slots=True)
class Image:
    """A tag (or, with --untagged, a revision nothing points at) and what it resolves to. One per
    tag: what tags share (the repository name, the digest, the manifest tree) is shared, not copied."""

    repository: str
    tag: str | None
    digest: str
    root: ManifestNode | None
    # tag-level (dangling link, missing manifest); most tags have none, and share this empty tuple
    problems: list[Problem] | tuple[()] = ()
    carries: list[Attachment] | tuple[()] = ()  # the attachments its output holds, each with its subject

    @property
    def attached_as(self) -> Attachment | None:
        """How the tag's own manifest is attached to another (by subject, cosign tag, referrers tag); an index
        of attached artifacts only is attached as a referrers index. None: it is no attachment."""
        root = self.root
        if root is None or not self.carries:
            return None
        own = next((a for a in self.carries if a.digest == root.digest), None)
        if own is None and root.kind is ImageKind.INDEX and not root.holds_images:
            own = Attachment(self.repository, root.digest, self.carries[0].subject, AttachmentKind.REFERRERS,
                             self.carries[0].via, self.ref, root.parsed.artifact_type)
        return own

    @property
    def is_attachment(self) -> bool:
        return self.attached_as is not None

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag is not None else f"{self.repository}@{self.digest}"

    @property
    def kind(self) -> ImageKind:
        return self.root.kind if self.root else ImageKind.BROKEN

    @property
    def media_type(self) -> str:
        return self.root.media_type if self.root else ""

    def nodes(self) -> list[ManifestNode]:
        return list(self.root.walk()) if self.root else []

    def all_problems(self, nodes: list[ManifestNode] | None = None) -> list[Problem]:
        nodes = self.nodes() if nodes is None else nodes
        out = list(self.problems)
        for n in nodes:
            out.extend(n.problems)
        return unique(out)

    def errors(self, nodes: list[ManifestNode] | None = None) -> list[Problem]:
        return [p for p in self.all_problems(nodes) if p.severity is Severity.ERROR]

    def platforms(self) -> list[str]:
        if not self.root:
            return []
        if self.root.kind is ImageKind.INDEX:
            return [str(n.platform) for n in self.root.walk() if n.platform and not n.children and not n.is_attestation]
        return [str(self.root.platform)] if self.root.platform else []

    def blob_descriptors(self, nodes: list[ManifestNode] | None = None) -> list[Descriptor]:
        """Unique configs and layers of the given manifests (all of the image by default)."""
        seen: dict[str, Descriptor] = {}
        for n in self.nodes() if nodes is None else nodes:
            for d in n.blobs():
                seen.setdefault(d.digest, d)
        return list(seen.values())

    def size(self, nodes: list[ManifestNode] | None = None) -> int:
        nodes = self.nodes() if nodes is None else nodes
        sizes = {n.digest: n.size for n in nodes}
        sizes.update({d.digest: max(d.size, 0) for d in self.blob_descriptors(nodes)})
        return sum(sizes.values())

    @property
    def has_foreign_layers(self) -> bool:
        return any(d.is_foreign for d in self.blob_descriptors())


@dataclass
class Catalog:
    inventory: Inventory
    images: list[Image]  # every tag, sorted by repository and tag
    untagged: list[Image]  # revisions that no tag and no index reaches, sorted
    problems: list[Problem]
    attachments: dict[tuple[str, str], list[Attachment]] = field(default_factory=dict)  # (repo, subject) → attached

    expected: dict[str, str] = field(default_factory=dict)  # absent blobs a delta expects → the earlier delivery

    _holding: dict[tuple[str, str], list[Image]] | None = field(default=None, init=False, repr=False)

    def images_holding(self, repository: str, digest: str) -> list[Image]:
        """The tags of the repository whose manifests include `digest` (as their own, or as an index child).
        Asked once per attachment: an index made on the first call, not a scan of every tag each time."""
        if self._holding is None:
            self._holding = {}
            for image in self.images:
                for node in image.nodes():
                    held = self._holding.setdefault((image.repository, node.digest), [])
                    if not held or held[-1] is not image:
                        held.append(image)
        return self._holding.get((repository, digest), [])

    def tags_holding(self, repository: str, digest: str) -> list[str]:
        return [i.ref for i in self.images_holding(repository, digest)]

    def attached(self, image: Image) -> list[Attachment]:
        """Everything attached to the image's manifests, and to those attachments in turn."""
        if not self.attachments:
            return []
        found: dict[str, Attachment] = {}
        todo = [n.digest for n in image.nodes()]
        while todo:
            for a in self.attachments.get((image.repository, todo.pop(0)), ()):
                if a.digest not in found:
                    found[a.digest] = a
                    todo.append(a.digest)
        return list(found.values())


class Resolver:
    def __init__(self, inv: Inventory, expected: Mapping[str, str] | None = None):
        self.inv = inv
        self.expected = expected or {}  # absent blobs an earlier delivery holds → that delivery
        self.problems: dict[tuple[str, str], Problem] = {}
        self.nodes: dict[tuple, ManifestNode | Problem] = {}  # digest, repository[, platform] → node, or why not

    def problem(self, code: str, subject: str, message: str, severity: Severity = Severity.ERROR) -> Problem:
        key = (code, subject)
        p = self.problems.get(key)
        if p is None:
            p = self.problems[key] = Problem(code, message, severity, subject)
        return p

    # --- manifests ---------------------------------------------------------------------
    def blob_problem(self, digest: str, what: str, missing: str = "missing-blob", note: str = "") -> Problem | None:
        """Why a blob cannot be used, or None when its verified bytes are here.

        `missing` is the problem code when the blob is absent (a missing manifest is a dangling tag or
        a missing index child); `note` is said after "is not in the archive"."""
        rec = self.inv.blobs.get(digest)
        if rec is None and missing == "missing-blob" and digest in self.expected:
            return self.problem(EXPECTED_BLOB, digest, f"{what} {digest} is not in this input: expected from "
                                f"delivery {self.expected[digest]}")
        if rec is None:
            note = " (the input is truncated)" if self.inv.input.truncated else note
            return self.problem(missing, digest, f"{what} {digest} is not in the archive{note}")
        if not rec.verified:
            why = rec.unusable or f"is corrupt (its bytes hash to {rec.actual})"
            return self.problem("corrupt-blob", digest, f"{what} {digest} {why}")
        return None

    def node(self, digest: str, repo: str, descriptor: Descriptor | None, depth: int = 0) -> ManifestNode | Problem:
        # A node is shared between the tags of a repository with the same digest; only the
        # descriptor-derived platform differs, so nodes are cached per (digest, repository, platform).
        key = (digest, repo) if descriptor is None else (digest, repo, descriptor.platform)
        cached = self.nodes.get(key)
        if cached is not None:
            return cached
        result = self._resolve(digest, repo, descriptor, depth)
        self.nodes[key] = result
        return result

    def _resolve(self, digest: str, repo: str, descriptor: Descriptor | None, depth: int) -> ManifestNode | Problem:
        if descriptor is None:
            p = self.blob_problem(digest, "manifest", "dangling-tag")
        else:
            where = f" ({descriptor.platform})" if descriptor.platform else ""
            p = self.blob_problem(digest, "index child", "missing-child", where)
        if p is not None:
            return p
        raw = self.inv.json_blobs.get(digest)
        if raw is None:
            size = self.inv.blobs[digest].size
            why = f"is {size} bytes, over the 4 MiB limit for manifests" if size > JSON_LIMIT else "is not JSON"
            return self.problem("bad-manifest", digest, f"manifest {digest} {why}")
        try:
            parsed = parse_manifest(raw)
        except (ValueError, RecursionError) as e:  # ManifestError; also json's digit limit and nesting depth
            reason = e if isinstance(e, ManifestError) else f"not usable JSON ({str(e)[:80] or 'nested too deep'})"
            return self.problem("bad-manifest", digest, f"manifest {digest}: {reason}")
        node = ManifestNode(digest, parsed.media_type, raw, parsed, descriptor)
        if descriptor and descriptor.platform:
            node.platform = descriptor.platform
        if parsed.is_index:
            node.kind = ImageKind.INDEX
            self._children(node, repo, depth)
        elif parsed.is_schema1:
            node.kind = ImageKind.SCHEMA1
            node.platform = node.platform or parsed.schema1_platform
            self._schema1(node, repo)
        else:
            self._image(node)
        return node

    def _children(self, node: ManifestNode, repo: str, depth: int) -> None:
        if depth >= MAX_INDEX_DEPTH:
            node.problems.append(self.problem("bad-manifest", node.digest, f"index {node.digest} nests too deep"))
            return
        for d in node.parsed.manifests:
            child = self.node(d.digest, repo, d, depth + 1)
            if isinstance(child, Problem):
                node.problems.append(child)
            else:
                node.children.append(child)

    def _image(self, node: ManifestNode) -> None:
        parsed = node.parsed
        config = parsed.config
        is_image = config is not None and config.media_type in IMAGE_CONFIGS and all(
            is_image_layer(d.media_type) for d in parsed.layers
        ) and not parsed.artifact_type
        node.kind = ImageKind.IMAGE if is_image else ImageKind.ARTIFACT
        if config is not None:
            if (p := self.blob_problem(config.digest, "config")) is not None:
                node.problems.append(p)
            elif node.platform is None and is_image:
                node.platform = _config_platform(self.inv.json_blobs.get(config.digest))
        for layer in parsed.layers:
            if layer.is_foreign and layer.digest not in self.inv.blobs:
                continue  # foreign layers live at their URLs; the registry never needed them
            if (p := self.blob_problem(layer.digest, "layer")) is not None:
                node.problems.append(p)

    def _schema1(self, node: ManifestNode, repo: str) -> None:
        sizes = []
        for layer in node.parsed.layers:
            p = self.blob_problem(layer.digest, "layer")
            if p is not None:
                node.problems.append(p)
            rec = self.inv.blobs.get(layer.digest)
            sizes.append(Descriptor(layer.media_type, layer.digest, rec.size if rec else -1))
        node.parsed.layers = sizes
        for sig in sorted(self.inv.repositories[repo].signatures.get(node.digest, ())):
            raw = self.inv.json_blobs.get(sig)
            if raw is not None and self.inv.has_blob(sig):
                node.signatures.append(raw)

    # --- tags ----------------------------------------------------------------------------
    def tag(self, repo: str, tag: str | None, digest: str) -> Image:
        image = Image(repo, tag, digest, None)
        if not digest:
            image.problems = [p for p in self.inv.problems if image.ref in p.affects]
            return image
        if digest not in self.inv.repositories[repo].revisions:
            ref = image.ref
            image.problems = [self.problem(
                "dangling-tag", ref, f"{ref}: tag names {digest}, which has no revision link in {repo}")]
            return image
        resolved = self.node(digest, repo, None)
        if isinstance(resolved, Problem):
            image.problems = [resolved]
        else:
            image.root = resolved
        return image


def _config_platform(raw: bytes | None) -> Platform | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("os"), str):
        return None
    return Platform(doc["os"], str(doc.get("architecture", "")), str(doc.get("variant", "") or ""))


def resolve(inv: Inventory, expected: Mapping[str, str] | None = None) -> Catalog:
    """`expected`: blobs a delta volume leaves out, by the earlier delivery that shipped them."""
    r = Resolver(inv, expected)
    images: list[Image] = []
    reached: set[tuple[str, str]] = set()
    walked: set[ManifestNode] = set()  # thousands of tags may name one root (a root node is per repository)
    for name in sorted(inv.repositories):
        record = inv.repositories[name]
        if not record.has_manifests:
            continue
        tags = record.tags
        for tag in sorted(tags):
            image = r.tag(name, tag, tags[tag])
            images.append(image)
            if image.root is not None and image.root not in walked:
                walked.add(image.root)
                reached.update((name, n.digest) for n in image.root.walk())
    untagged = []
    for name in sorted(inv.repositories):
        record = inv.repositories[name]
        for digest in sorted(record.revisions):
            if (name, digest) in reached:
                continue
            image = r.tag(name, None, digest)
            reached.update((name, n.digest) for n in image.nodes())
            untagged.append(image)
    # children reached only through a later untagged index are not separately untagged
    children = {(u.repository, n.digest) for u in untagged for n in u.nodes()[1:]}
    untagged = [u for u in untagged if (u.repository, u.digest) not in children]
    shared: dict[ManifestNode, list[Problem]] = {}
    named: dict[int, set[str]] = {}  # a problem shared by thousands of tags: no list search per tag
    for image in images:
        for p in _problems(image, shared):
            known = named.get(id(p))
            if known is None:
                known = named[id(p)] = set(p.affects)
            if image.ref not in known:
                known.add(image.ref)
                p.affects.append(image.ref)
    _audit_links(inv, r)
    problems = unique(inv.problems + list(r.problems.values()))
    return Catalog(inv, images, untagged, problems, _link_attachments(images + untagged), dict(r.expected))


def _problems(image: Image, shared: dict[ManifestNode, list[Problem]]) -> list[Problem]:
    """image.all_problems(); those of a tag without its own are its root's, found once for all tags naming it."""
    root = image.root
    if image.problems or root is None:
        return image.all_problems()
    found = shared.get(root)
    if found is None:
        found = shared[root] = image.all_problems()
    return found


def _carried(image: Image, with_subject: dict[ManifestNode, list[ManifestNode]]) -> list[Attachment]:
    """The attachments the image's output holds: its own manifest when a link ties it to another, and every
    manifest in it with a subject (`with_subject`: those of each root, found once for all tags naming it)."""
    root = image.root
    if root is None:
        return []
    out = []
    link = tag_link(image.tag)
    if link is not None and (link.kind is not None or root.kind is ImageKind.INDEX):
        kind, via = (link.kind, Via.COSIGN_TAG) if link.kind else (AttachmentKind.REFERRERS, Via.REFERRERS_TAG)
        out.append(Attachment(image.repository, root.digest, link.subject, kind, via, image.ref,
                              root.parsed.artifact_type))
    nodes = with_subject.get(root)
    if nodes is None:
        nodes = with_subject[root] = [n for n in root.walk() if n.parsed.subject is not None]
    for node in nodes:
        out.append(Attachment(image.repository, node.digest, node.parsed.subject.digest, kind_of(node.parsed),
                              Via.SUBJECT, image.ref, node.parsed.artifact_type))
    return out


def _link_attachments(images: list[Image]) -> dict[tuple[str, str], list[Attachment]]:
    """(repository, subject digest) → what is attached to it, each attached manifest once (a tag's link first)."""
    linked: dict[tuple[str, str], dict[str, Attachment]] = {}
    with_subject: dict[ManifestNode, list[ManifestNode]] = {}
    for image in images:
        image.carries = _carried(image, with_subject) or ()  # most tags carry none: one shared empty tuple
        for a in image.carries:
            linked.setdefault((a.repository, a.subject), {}).setdefault(a.digest, a)
    return {key: list(found.values()) for key, found in sorted(linked.items())}


def _audit_links(inv: Inventory, r: Resolver) -> None:
    """Orphan blobs, and `_layers` links to blobs that are absent (normal after a 2.x GC)."""
    linked: set[str] = set()
    for repo in inv.repositories.values():
        linked |= repo.layer_links | repo.revisions
        for sigs in repo.signatures.values():
            linked |= sigs
        missing = sorted(d for d in repo.layer_links if d not in inv.blobs and d not in r.expected)
        if missing:
            r.problem("dangling-layer-link", repo.name,
                      f"{repo.name}: {len(missing)} _layers link(s) name blobs that are not in the archive "
                      f"(first: {missing[0]})", Severity.WARNING)
    for digest, rec in inv.blobs.items():
        if digest not in linked:
            r.problem("orphan-blob", digest, f"blob {digest} ({rec.size} bytes) is not linked from any repository",
                      Severity.WARNING)
        elif not rec.verified:
            r.blob_problem(digest, "blob")

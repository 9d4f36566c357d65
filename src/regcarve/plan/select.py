"""Which images go out: --image/--exclude globs on repo:tag, and the --platform choice in indexes."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from regcarve.model.catalog import Image, ImageKind, ManifestNode
from regcarve.model.manifests import Platform
from regcarve.plan.output import ImageFailed, ImageSkipped


@dataclass(eq=False)
class Job:
    """One tag to write: the manifest the tag will carry, and every manifest whose blobs go with it."""

    image: Image
    root: ManifestNode  # the image's own manifest, or the chosen child with --platform
    nodes: list[ManifestNode]  # root first; for a whole index, every child too
    platform_choice: str = ""  # set when --platform replaced an index by one of its children

    @property
    def ref(self) -> str:
        return self.image.ref

    @property
    def digest(self) -> str:
        return self.root.digest

    @property
    def media_type(self) -> str:
        return self.root.media_type


def matches(ref: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Globs match the whole `repo:tag`; a glob without ':' matches the repository with any tag."""

    def hit(pattern: str) -> bool:
        if ":" not in pattern:
            pattern += ":*"
        return fnmatchcase(ref, pattern)

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def select_images(images: list[Image], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[Image]:
    return [i for i in images if matches(i.ref, include, exclude)]


@dataclass
class Chosen:
    """The tags a run writes, in catalog order, and the attachments among them."""

    images: list[Image]
    attachments: list[Image]  # those of `images` that are attached to another (signatures, SBOMs, …)
    left_out: list[Image]  # attachments the globs matched, or that came along, but that are not written


def select_with_attachments(images: list[Image], include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                            attachments: bool = True) -> Chosen:
    """The tags the globs match, and with `attachments` every tag attached to one of them (recursively: a
    signature of an SBOM too); `--exclude` still leaves any of them out. Without `attachments`, no
    attachment is written, even one the globs name."""
    matched = select_images(images, include, exclude)
    about: dict[tuple[str, str], list[Image]] = {}  # (repository, subject) → the attachment tags naming it
    for i in images:
        if i.is_attachment and matches(i.ref, (), exclude):
            for subject in {a.subject for a in i.carries}:
                about.setdefault((i.repository, subject), []).append(i)
    chosen = {id(i) for i in matched}
    todo = list(matched)
    while todo:
        image = todo.pop()
        for digest in {n.digest for n in image.nodes()}:
            for other in about.get((image.repository, digest), ()):
                if id(other) not in chosen:
                    chosen.add(id(other))
                    todo.append(other)
    selected = [i for i in images if id(i) in chosen]
    if not attachments:
        return Chosen([i for i in selected if not i.is_attachment], [], [i for i in selected if i.is_attachment])
    return Chosen(selected, [i for i in selected if i.is_attachment], [])


def _leaves(node: ManifestNode) -> list[ManifestNode]:
    if node.kind is ImageKind.INDEX:
        return [leaf for c in node.children for leaf in _leaves(c)]
    return [node]


def choose_platform(root: ManifestNode, wanted: list[Platform]) -> ManifestNode | None:
    """The first child (in --platform order) whose platform matches; attestations are never chosen."""
    leaves = [n for n in _leaves(root) if n.platform and not n.is_attestation and n.kind is not ImageKind.ARTIFACT]
    for w in wanted:
        for leaf in leaves:
            if leaf.platform.matches(w):
                return leaf
    return None


def plan_job(image: Image, platforms: list[Platform], index_default: list[Platform] | None = None) -> Job:
    """The job for an image; raises ImageSkipped when --platform leaves nothing of it.

    `index_default` is the platform choice for indexes when no --platform was given (formats
    that hold one platform per tag); single-platform images are then written whatever theirs.
    """
    root = image.root
    assert root is not None
    if not platforms and index_default and root.kind is ImageKind.INDEX:
        try:
            return plan_job(image, index_default)
        except ImageSkipped as e:
            raise ImageSkipped(f"{e}; this format holds one platform per tag, choose one with --platform") from None
    if not platforms:
        return Job(image, root, list(root.walk()))
    wanted = ", ".join(str(p) for p in platforms)
    if root.kind is ImageKind.INDEX and not root.holds_images:
        return Job(image, root, list(root.walk()))  # artifacts only (a referrers index): no platform to choose
    if root.kind is ImageKind.INDEX:
        leaf = choose_platform(root, platforms)
        if leaf is None:
            present = {n.digest for n in root.walk()}
            for d in root.parsed.manifests:
                if d.platform and d.digest not in present and any(d.platform.matches(p) for p in platforms):
                    raise ImageFailed(f"index child {d.digest} for platform {d.platform} is not in the archive")
            have = ", ".join(image.platforms()) or "none"
            raise ImageSkipped(f"no instance for platform {wanted} (index has: {have})")
        return Job(image, leaf, [leaf], platform_choice=str(leaf.platform))
    if root.platform and not any(root.platform.matches(p) for p in platforms):
        raise ImageSkipped(f"platform {root.platform} is not among {wanted}")
    return Job(image, root, [root])

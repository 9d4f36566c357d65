"""What a sink is given: an image as it goes out — final manifest bytes, its child manifests, its blobs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regcarve.model.catalog import ImageKind
from regcarve.model.manifests import Descriptor, ParsedManifest, Platform


class ImageSkipped(Exception):
    """The image is left out by choice (a platform not asked for, a shape the sink cannot hold): the reason."""


class ImageFailed(Exception):
    """The image cannot be emitted as it should be: the reason."""


@dataclass(frozen=True, slots=True)
class ManifestOut:
    digest: str  # its digest in the source registry (schema1: the payload's, which a push keeps)
    media_type: str  # of `raw`
    raw: bytes  # the exact bytes to write or send
    parsed: ParsedManifest
    kind: ImageKind
    platform: Platform | None
    stored: bool = True  # `raw` are the stored bytes, which the BlobSource holds under `digest`
    converted_from: str = ""  # a schema1 manifest converted to schema2: the schema1 digest (`digest` is new)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def content_digest(self) -> str:
        """The sha256 of `raw`: `digest`, except for a schema1 manifest signed for output."""
        return self.digest if self.stored or self.converted_from else "sha256:" + hashlib.sha256(self.raw).hexdigest()


NOTHING_EXPECTED: Mapping[str, str] = MappingProxyType({})  # shared by the images that expect nothing


@dataclass(frozen=True, slots=True)
class ImageOut:
    repository: str
    tag: str
    manifest: ManifestOut  # what the tag carries
    children: tuple[ManifestOut, ...]  # every manifest below it (an index's), each once
    blobs: tuple[Descriptor, ...]  # configs and layers whose bytes go with it, each once
    absent_foreign: tuple[Descriptor, ...]  # foreign layers the source lacks: they live at their URLs
    source_digest: str  # what the tag names in the source (the index, when --platform chose a child)
    platform_choice: str = ""  # set when --platform replaced an index by one of its children
    # blobs among `blobs` that the source lacks and an earlier delivery shipped (digest → that delivery):
    # the destination must hold them already; given only to a sink that finds them (a registry)
    expected: Mapping[str, str] = field(default_factory=lambda: NOTHING_EXPECTED, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    def registry_needs(self) -> set[str]:
        """What a registry must allow to take it, beyond the OCI/Docker v2 basics: "schema1" (its
        manifest or a child is schema1), "foreign-urls" (a layer has URLs: Distribution checks them)."""
        needs = set()
        for m in (self.manifest, *self.children):
            if m.kind is ImageKind.SCHEMA1:
                needs.add("schema1")
            if any(d.urls for d in m.parsed.layers):
                needs.add("foreign-urls")
        return needs

    def skopeo_changes_digest(self) -> bool:
        """skopeo 1.9 re-serialises an index it copies and drops its descriptors' `artifactType` (what a
        referrers index lists its artifacts with): such an index arrives under another digest."""
        return any(d.artifact_type for m in (self.manifest, *self.children) for d in m.parsed.manifests)

    def digests(self) -> set[str]:
        """Every stored blob it uses: manifests (as stored), configs and layers (not those it expects)."""
        out = {self.manifest.digest}
        out.update(m.digest for m in self.children)
        out.update(d.digest for d in self.blobs if d.digest not in self.expected)
        return out

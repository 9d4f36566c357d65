"""Manifest documents: media types, descriptors, platforms, and a parser for every stored shape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

JSON_LIMIT = 4 * 1024 * 1024  # manifests and configs are at most 4 MiB (registry and c/image limits)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_CONFIGS = {DOCKER_CONFIG, OCI_CONFIG}

DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
INDEX_TYPES = {DOCKER_LIST, OCI_INDEX}
IMAGE_MANIFEST_TYPES = {DOCKER_MANIFEST, OCI_MANIFEST}

_IMAGE_LAYER_PREFIXES = (
    "application/vnd.docker.image.rootfs.",
    "application/vnd.oci.image.layer.",
)


def is_image_layer(media_type: str) -> bool:
    return media_type.startswith(_IMAGE_LAYER_PREFIXES)


def is_foreign_layer(media_type: str) -> bool:
    return media_type == DOCKER_FOREIGN_LAYER or ".nondistributable." in media_type


class ManifestError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"platform must be os/arch[/variant], not {text!r}")
        return cls(*parts)

    def matches(self, wanted: "Platform") -> bool:
        """`wanted` without a variant matches every variant."""
        return (
            self.os == wanted.os
            and self.architecture == wanted.architecture
            and (not wanted.variant or self.variant == wanted.variant)
        )

    @property
    def is_unknown(self) -> bool:
        return self.os == "unknown" and self.architecture == "unknown"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    artifact_type: str = ""  # OCI 1.1: what an index lists a referrer as

    @property
    def is_foreign(self) -> bool:
        return is_foreign_layer(self.media_type) or bool(self.urls)

    @property
    def is_attestation(self) -> bool:
        return self.annotations.get("vnd.docker.reference.type") == "attestation-manifest"

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = str(self.platform)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass(slots=True)
class ParsedManifest:
    media_type: str  # declared, or guessed as the registry does
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    manifests: list[Descriptor] = field(default_factory=list)  # children of an index
    artifact_type: str = ""
    subject: Descriptor | None = None  # OCI 1.1: the manifest this one is about (a signature's, an SBOM's)
    schema1_platform: Platform | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)


def written_media_type(media_type: str) -> str:
    """The media type of what is written and served for a manifest stored as `media_type`: schema1 goes
    out signed (a registry serves it so, and needs it so on a push), whatever form was stored."""
    return DOCKER_SCHEMA1_SIGNED if media_type == DOCKER_SCHEMA1 else media_type


def _str(obj: dict, key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {key} is not a string")
    return value


def _descriptor(obj: object, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: descriptor is not an object")
    digest = _str(obj, "digest", where)
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise ManifestError(f"{where}: unsupported digest {digest[:80]!r}")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}: size is not a non-negative integer")
    platform = None
    p = obj.get("platform")
    if isinstance(p, dict):
        platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "") or ""))
    urls = obj.get("urls") or ()
    annotations = obj.get("annotations") or {}
    return Descriptor(
        _str(obj, "mediaType", where),
        digest,
        size,
        platform,
        tuple(str(u) for u in urls) if isinstance(urls, list) else (),
        {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
        artifact_type if isinstance(artifact_type := obj.get("artifactType"), str) else "",
    )


def _subject(doc: dict) -> Descriptor | None:
    subject = doc.get("subject")
    return None if subject is None else _descriptor(subject, "subject")


def parse_manifest(raw: bytes) -> ParsedManifest:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    version = doc.get("schemaVersion")
    if version == 1:
        return _parse_schema1(doc)
    if version != 2:
        raise ManifestError(f"unknown schemaVersion {version!r}")
    media_type = doc.get("mediaType") or ""
    if not isinstance(media_type, str):
        raise ManifestError("mediaType is not a string")
    if not media_type:
        # what the registry does with an untyped schemaVersion 2 document
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise ManifestError("index has no manifests list")
        return ParsedManifest(
            media_type,
            manifests=[_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children)],
            artifact_type=str(doc.get("artifactType") or ""),
            subject=_subject(doc),
        )
    if media_type in IMAGE_MANIFEST_TYPES:
        layers = doc.get("layers")
        if layers is None:
            layers = []
        if not isinstance(layers, list):
            raise ManifestError("layers is not a list")
        return ParsedManifest(
            media_type,
            config=_descriptor(doc.get("config"), "config"),
            layers=[_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers)],
            artifact_type=str(doc.get("artifactType") or ""),
            subject=_subject(doc),
        )
    raise ManifestError(f"unknown manifest media type {media_type!r}")


def _parse_schema1(doc: dict) -> ParsedManifest:
    fs_layers = doc.get("fsLayers")
    if not isinstance(fs_layers, list):
        raise ManifestError("schema1 manifest has no fsLayers")
    layers = []
    seen = set()
    for i, layer in enumerate(fs_layers):
        digest = layer.get("blobSum", "") if isinstance(layer, dict) else ""
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            raise ManifestError(f"fsLayers[{i}]: bad blobSum")
        if digest not in seen:  # schema1 repeats the empty layer; sizes are not recorded
            seen.add(digest)
            layers.append(Descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", digest, -1))
    media_type = DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    arch = doc.get("architecture")
    return ParsedManifest(media_type, layers=layers,
                          schema1_platform=Platform("linux", arch) if isinstance(arch, str) and arch else None)


def artifact_what(parsed: ParsedManifest) -> str:
    """What makes a manifest an artifact rather than a container image, in a few words."""
    config = parsed.config
    if config is None:
        return "no config"
    if config.media_type not in IMAGE_CONFIGS:
        return f"config {config.media_type}"
    if parsed.artifact_type:
        return f"artifactType {parsed.artifact_type}"
    other = next((d.media_type for d in parsed.layers if not is_image_layer(d.media_type)), "")
    return f"layer {other}" if other else "not an image"

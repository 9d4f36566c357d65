"""What a docker-archive needs of an image, all checked before anything is written: names, config, layers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import Descriptor
from regcarve.model.names import (REPOSITORY_NAME_MAX, looks_like_registry_host, normalized_name,
                                  split_registry_prefix)
from regcarve.sinks.base import ImageFailed, ImageOut

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")

SCHEMA1_REASON = ("schema1 manifests have no image config, so docker-archive cannot hold them; "
                  "--schema1 convert makes them Docker v2 schema2 images (or use --format dir to keep them)")
INDEX_REASON = "a docker-archive holds one platform per tag: choose one with --platform"
ARTIFACT_REASON = "not a container image ({what}); docker-archive holds images only, use --format dir or oci"


def check_repo_prefix(prefix: str) -> str:
    """The prefix without a trailing '/'; ValueError when Docker would not read it as HOST[/PATH]."""
    prefix = prefix.strip().rstrip("/")
    host, _ = split_registry_prefix(prefix)
    if not looks_like_registry_host(host):
        raise ValueError(f"{prefix!r} does not start with a registry host (one with a '.' or a ':port', or "
                         f"localhost); Docker would read it as docker.io/{prefix}")
    return prefix


def archive_name(repository: str, prefix: str) -> str:
    """The repository as RepoTags carry it: under the prefix, else as the registry names it. Without a prefix,
    a name whose first component loaders would take for a registry host (`team.example/app`) is given
    docker.io/ explicitly, so that they keep its whole path, as they do for every other such name."""
    if prefix:
        return f"{prefix.rstrip('/')}/{repository}"
    first, sep, _ = repository.partition("/")
    return f"docker.io/{repository}" if sep and looks_like_registry_host(first) else repository


def repo_tag(image: ImageOut, prefix: str) -> tuple[str, str]:
    """(repository name, tag) as RepoTags and `repositories` carry them."""
    name = archive_name(image.repository, prefix)
    full = normalized_name(name)
    if len(full) > REPOSITORY_NAME_MAX:
        raise ImageFailed(f"{name}: loaders read it as {full} ({len(full)} characters); skopeo and podman "
                          f"refuse a name longer than {REPOSITORY_NAME_MAX}")
    return name, image.tag


@dataclass
class ImagePlan:
    """What an image needs, all checked before anything is written."""

    name: str  # repository as RepoTags carry it
    tag: str
    config: Descriptor
    config_raw: bytes
    diff_ids: list[str]
    layers: list[Descriptor]


def read_config(image: ImageOut, blobs: BlobSource) -> tuple[bytes, list[str]]:
    """The config's stored bytes and its rootfs.diff_ids, checked against the manifest's layers."""
    parsed = image.manifest.parsed
    config = parsed.config
    assert config is not None
    try:
        raw = blobs.read(config.digest)
    except OSError:
        raise ImageFailed(f"config {config.digest} is not in the store") from None
    try:
        doc = json.loads(raw)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise ImageFailed(f"config {config.digest} has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise ImageFailed(f"config {config.digest}: rootfs.diff_ids are not all sha256 digests")
    if len(diff_ids) != len(parsed.layers):
        raise ImageFailed(f"config {config.digest} has {len(diff_ids)} diff_ids but the manifest has "
                          f"{len(parsed.layers)} layers")
    return raw, diff_ids


def plan_image(image: ImageOut, blobs: BlobSource, repo_prefix: str) -> ImagePlan:
    name, tag = repo_tag(image, repo_prefix)
    config_raw, diff_ids = read_config(image, blobs)
    parsed = image.manifest.parsed
    for i, layer in enumerate(parsed.layers):
        if layer.media_type.endswith("+encrypted"):
            raise ImageFailed(f"layer {i} {layer.digest} is encrypted ({layer.media_type}); regcarve cannot "
                              "decrypt it, use --format dir or oci to carry it as it is")
        if not blobs.has(layer.digest):
            where = f" (it lives at {layer.urls[0]})" if layer.urls else ""
            raise ImageFailed(f"{'foreign ' if layer.is_foreign else ''}layer {i} {layer.digest} is not in the "
                              f"archive{where}; a docker-archive needs every layer's bytes")
    assert parsed.config is not None
    return ImagePlan(name, tag, parsed.config, config_raw, diff_ids, parsed.layers)

"""Tiny images as skopeo `dir:` directories, built in Python.

Why not umoci (as fixtures/generate.py does): harness tests need an image in milliseconds, and
its content does not matter, only that real clients (skopeo) accept it and can convert it (to
schema1 with `--format v2s1`, which needs one history entry per layer).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from regcarve.model.manifests import DOCKER_CONFIG, DOCKER_MANIFEST
from storagetar import DOCKER_LAYER, layer_tar, sha256

CREATED = "2023-11-14T22:13:20Z"


def layer_tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip'd tar, diff_id) of in-memory files; fixed metadata, so the same files give the same digest."""
    raw = layer_tar(files)
    return gzip.compress(raw, mtime=0), sha256(raw)


@dataclass(frozen=True)
class DirImage:
    path: Path
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"dir:{self.path}"


def write_dir_image(dest: Path, layers: list[dict[str, bytes]], *, arch: str = "amd64") -> DirImage:
    """A schema2 image with one layer per dict of files, as skopeo's `dir:` transport stores it:
    `version`, `manifest.json`, and each blob under its hex digest."""
    dest.mkdir(parents=True, exist_ok=True)
    blobs = [layer_tar_gz(files) for files in layers]
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": CREATED, "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in blobs]},
        "history": [{"created": CREATED, "created_by": f"regcarve harness layer {i}"} for i in range(len(blobs))],
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "size": len(b), "digest": sha256(b)} for b, _ in blobs],
    }, indent=3).encode()
    for data in [config, *(b for b, _ in blobs)]:
        (dest / sha256(data).split(":", 1)[1]).write_bytes(data)
    (dest / "manifest.json").write_bytes(manifest)
    (dest / "version").write_text("Directory Transport Version: 1.1\n")
    return DirImage(dest, sha256(manifest), sha256(config), tuple(sha256(b) for b, _ in blobs))

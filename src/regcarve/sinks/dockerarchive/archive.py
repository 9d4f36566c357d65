"""One output tar as it is filled: layers by diff_id, configs, the legacy entries, and manifest.json last."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from regcarve.blobs.source import BlobSource
from regcarve.model.manifests import Descriptor
from regcarve.sinks.dockerarchive.image import ImagePlan
from regcarve.sinks.dockerarchive.layers import Ahead, Finished, LayerKey, LayerWriter
from regcarve.sinks.tarout import TarOut

EPOCH = "1970-01-01T00:00:00Z"
_LEGACY_TOP_KEYS = ("architecture", "config", "container", "container_config", "created", "docker_version", "os")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Archive:
    """What one output tar holds so far: layers by diff_id, configs, legacy ids, manifest items."""

    tar: TarOut
    layers: dict[str, str] = field(default_factory=dict)  # diff_id → entry name
    configs: set[str] = field(default_factory=set)
    legacy: set[str] = field(default_factory=set)
    items: list[dict] = field(default_factory=list)
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)
    decoded: dict[LayerKey, tuple[int, int, str]] = field(default_factory=dict)  # → (data offset, size, name)

    def snapshot(self) -> tuple:
        return (self.tar.pos, dict(self.layers), set(self.configs), set(self.legacy),
                [dict(i, RepoTags=list(i["RepoTags"])) for i in self.items],
                {k: dict(v) for k, v in self.repositories.items()}, dict(self.decoded))

    def restore(self, snap: tuple) -> None:
        pos, self.layers, self.configs, self.legacy, self.items, self.repositories, self.decoded = snap
        self.tar.rollback(pos)

    def finish(self) -> None:
        """manifest.json and repositories, last, then the end-of-archive blocks."""
        self.tar.add("manifest.json", self.manifest_json())
        self.tar.add("repositories", json.dumps(self.repositories, separators=(",", ":")).encode())
        self.tar.close()

    def manifest_json(self) -> bytes:
        return json.dumps(self.items, separators=(",", ":")).encode()


def add_image(archive: Archive, plan: ImagePlan, blobs: BlobSource, keep_compressed: bool,
              finished: Finished | None = None, ahead: Ahead | None = None) -> int:
    """Everything of one image into the archive (what it already holds is shared). Bytes written.

    `finished`: layers of archives finished earlier in the run, copied from there instead of decoded;
    `ahead`: the run's decoding of the layers, in order."""
    name, tag, config, config_raw = plan.name, plan.tag, plan.config, plan.config_raw
    diff_ids, layers = plan.diff_ids, plan.layers
    start = archive.tar.pos
    LayerWriter(blobs, keep_compressed, finished).add_all(archive, layers, diff_ids, ahead)
    config_name = config.digest.removeprefix("sha256:") + ".json"
    if config_name not in archive.configs:
        archive.tar.add(config_name, config_raw)
        archive.configs.add(config_name)
    top = _legacy(archive, config_raw, config.digest, diff_ids)
    layer_names = [archive.layers[d] for d in diff_ids]
    ref = f"{name}:{tag}"
    for item in archive.items:
        if item["Config"] == config_name and item["Layers"] == layer_names:
            if ref not in item["RepoTags"]:
                item["RepoTags"].append(ref)
            break
    else:
        item = {"Config": config_name, "RepoTags": [ref], "Layers": layer_names}
        sources = {d: _source(layer) for layer, d in zip(layers, diff_ids) if layer.is_foreign}
        if sources:
            item["LayerSources"] = sources
        archive.items.append(item)
    if top:
        archive.repositories.setdefault(name, {})[tag] = top
    return archive.tar.pos - start


def _source(layer: Descriptor) -> dict:
    out: dict = {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
    if layer.urls:
        out["urls"] = list(layer.urls)
    return out


def _legacy(archive: Archive, config_raw: bytes, config_digest: str, diff_ids: list[str]) -> str:
    """`<v1 id>/{VERSION,json,layer.tar}` per layer, as Docker ≤ 24 loaders without manifest.json read them.

    Lower layers' ids follow the chain of diff_ids only (images sharing them share the entries);
    the top layer's id also covers the config, so no two images' tops collide. Returns the top id.
    """
    try:
        config = json.loads(config_raw)
    except ValueError:
        config = {}
    parent, chain = "", ""
    for i, diff_id in enumerate(diff_ids):
        chain = diff_id if not chain else "sha256:" + _sha(f"{chain} {diff_id}")
        top = i == len(diff_ids) - 1
        v1 = _sha(f"{chain} {config_digest}") if top else chain.removeprefix("sha256:")
        if v1 not in archive.legacy:
            doc: dict = {"id": v1}
            if parent:
                doc["parent"] = parent
            if top:
                doc.update({k: config[k] for k in _LEGACY_TOP_KEYS if k in config})
            doc.setdefault("created", EPOCH)
            archive.tar.add(f"{v1}/VERSION", b"1.0")
            archive.tar.add(f"{v1}/json", json.dumps(doc, separators=(",", ":")).encode())
            archive.tar.symlink(f"{v1}/layer.tar", f"../{archive.layers[diff_id]}")
            archive.legacy.add(v1)
        parent = v1
    return parent

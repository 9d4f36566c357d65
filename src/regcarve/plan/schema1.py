"""What becomes of schema1 images (`--schema1 keep|convert|skip`), and their conversion to Docker v2 schema2.

Registries and runtimes are dropping schema1: Distribution v3 takes none, Docker ≥ 20.10 will not push it
and refuses to pull it by default, containerd 2.1 rejects it. Converted, the image has a new config (made
from the history, model/schema1_convert.py) and a new manifest, so a new digest; its layers are the stored
blobs, unchanged. The config needs each layer's diff_id: every layer is decompressed once a run, however
many tags share it (blobs/diffids.py).
"""

from __future__ import annotations

from enum import Enum

from regcarve.blobs.diffids import DiffIdError, DiffIds
from regcarve.blobs.made import MadeBlobs
from regcarve.model.catalog import ImageKind, ManifestNode
from regcarve.model.manifests import DOCKER_MANIFEST, Descriptor, parse_manifest
from regcarve.model.schema1_convert import ConversionError, manifest_bytes, read_schema1
from regcarve.plan.output import ImageFailed, ManifestOut


class Schema1Mode(Enum):
    KEEP = "keep"  # as stored, signed (digest kept): for registries that still take schema1, Harbor 2.x
    CONVERT = "convert"  # to Docker v2 schema2: a new digest, pullable by current Docker and containerd
    SKIP = "skip"  # left out


SKIPPED = "schema1 manifest, left out (--schema1 skip)"


class Schema1Converter:
    """Converts schema1 manifests, each once a run; the configs and manifests it makes go into `blobs`."""

    def __init__(self, blobs: MadeBlobs):
        self.blobs = blobs
        self.diff_ids = DiffIds(blobs)
        self._done: dict[str, tuple[ManifestOut, tuple[Descriptor, ...]] | str] = {}

    def convert(self, node: ManifestNode) -> tuple[ManifestOut, tuple[Descriptor, ...]]:
        """The schema2 manifest for a schema1 one, and its blobs (config, then layers, each once).
        ImageFailed says why it cannot be made."""
        assert node.kind is ImageKind.SCHEMA1
        done = self._done.get(node.digest)
        if done is None:
            try:
                done = self._convert(node)
            except (ConversionError, DiffIdError) as e:
                done = f"schema1 manifest {node.digest} cannot be converted to schema2: {e}"
            self._done[node.digest] = done
        if isinstance(done, str):
            raise ImageFailed(done)
        return done

    def _convert(self, node: ManifestNode) -> tuple[ManifestOut, tuple[Descriptor, ...]]:
        image = read_schema1(node.raw)
        layers = image.kept_layers()
        for digest in dict.fromkeys(layers):
            if not self.blobs.has(digest):
                raise ConversionError(f"layer {digest} is not in the archive")
        config = image.config(self.diff_ids.of(layers))
        raw = manifest_bytes(config, [(d, self.blobs.size(d)) for d in layers])
        self.blobs.add(config)
        digest = self.blobs.add(raw)
        parsed = parse_manifest(raw)
        assert parsed.config is not None
        unique = {d.digest: d for d in [parsed.config, *parsed.layers]}
        out = ManifestOut(digest, DOCKER_MANIFEST, raw, parsed, ImageKind.IMAGE, node.platform, stored=False,
                          converted_from=node.digest)
        return out, tuple(unique.values())

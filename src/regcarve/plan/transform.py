"""From a selected image to what goes out: the manifest bytes a destination accepts, and its blobs.

The transformations are schema1's. Kept, it goes out signed: the registry stores its unsigned payload but
accepts only a signed manifest, so the payload is signed afresh (or its stored 2.0–2.4 signatures merged
back), which keeps the registry's digest. Converted (plan/schema1.py), it goes out as a new Docker v2
schema2 manifest with a new config, its layers unchanged.
"""

from __future__ import annotations

from types import MappingProxyType

from regcarve.blobs.source import BlobSource
from regcarve.model.catalog import ImageKind, ManifestNode
from regcarve.model.manifests import DOCKER_SCHEMA1_SIGNED, Descriptor
from regcarve.model import schema1
from regcarve.plan.output import NOTHING_EXPECTED, ImageFailed, ImageOut, ManifestOut
from regcarve.plan.schema1 import Schema1Converter
from regcarve.plan.select import Job


def manifest_out(node: ManifestNode, sign: bool = True) -> ManifestOut:
    """The manifest as it goes out: the stored bytes, or for schema1 (with `sign`) the signed document."""
    if node.kind is not ImageKind.SCHEMA1 or not sign:
        return ManifestOut(node.digest, node.media_type, node.raw, node.parsed, node.kind, node.platform)
    try:
        signed = schema1.for_push(node.raw, node.signatures)
    except schema1.Schema1Error as e:
        raise ImageFailed(f"schema1 manifest {node.digest} cannot be signed for push: {e}") from None
    return ManifestOut(node.digest, DOCKER_SCHEMA1_SIGNED, signed, node.parsed, node.kind, node.platform,
                       stored=False)


# an ImageOut but for its tag: the manifest that goes out, its children, its blobs carried and absent
Body = tuple[ManifestOut, tuple[ManifestOut, ...], tuple[Descriptor, ...], tuple[Descriptor, ...]]


def emit(job: Job, blobs: BlobSource, converter: Schema1Converter | None = None,
         expected: dict[str, str] | None = None, made: dict[ManifestNode, Body] | None = None) -> ImageOut:
    """What a sink receives for a job. Raises ImageFailed when the manifest cannot be made. `expected`: its
    blobs the source lacks and the destination should hold (a delta volume's), by the delivery that shipped them.
    `made`: what was emitted for each root so far in this run, the same for every tag naming it (reused,
    not made again per tag; a schema1 manifest, signed afresh for each tag, is not kept there).

    With a `converter`, a tag's own schema1 manifest goes out converted to schema2 (a schema1 child of an
    index stays as it is: converting it would change the index's digest; --platform makes it the tag's)."""
    assert job.image.tag is not None
    if converter is not None and job.root.kind is ImageKind.SCHEMA1:
        manifest, own = converter.convert(job.root)
        return ImageOut(job.image.repository, job.image.tag, manifest, (), own, (), job.image.digest,
                        job.platform_choice)
    reuse = made is not None and not expected and job.root.kind is not ImageKind.SCHEMA1
    body = made.get(job.root) if reuse else None
    if body is None:
        body = _body(job, blobs, expected or {})
        if reuse:
            made[job.root] = body
    return ImageOut(job.image.repository, job.image.tag, *body, job.image.digest, job.platform_choice,
                    MappingProxyType(dict(expected)) if expected else NOTHING_EXPECTED)


def _body(job: Job, blobs: BlobSource, expected: dict[str, str]) -> Body:
    children: dict[str, ManifestOut] = {}
    for node in job.nodes:
        if node is not job.root and node.digest not in children:
            children[node.digest] = manifest_out(node, sign=False)
    carried, absent = [], []
    for d in job.image.blob_descriptors(job.nodes):
        foreign_absent = d.is_foreign and not blobs.has(d.digest) and d.digest not in expected
        (absent if foreign_absent else carried).append(d)
    return manifest_out(job.root), tuple(children.values()), tuple(carried), tuple(absent)

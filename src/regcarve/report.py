"""`regcarve list`: the inventory as a table, or as JSON in a stable schema (see README, "Inventory JSON")."""

from __future__ import annotations

from regcarve.model.catalog import Catalog, Image, ImageKind, ManifestNode
from regcarve.model.manifests import Descriptor

INVENTORY_SCHEMA = "regcarve.inventory/v1"

_SHORT_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json": "docker-v2",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-list",
    "application/vnd.docker.distribution.manifest.v1+json": "docker-v1",
    "application/vnd.docker.distribution.manifest.v1+prettyjws": "docker-v1",
    "application/vnd.oci.image.manifest.v1+json": "oci",
    "application/vnd.oci.image.index.v1+json": "oci-index",
}


def image_status(image: Image) -> str:
    return "broken" if image.errors() else "ok"


def _node_json(node: ManifestNode) -> dict:
    out: dict = {
        "digest": node.digest,
        "media_type": node.media_type,
        "kind": node.kind.value,
        "size": node.size,
        "platform": str(node.platform) if node.platform else None,
    }
    if node.is_attestation:
        out["attestation"] = True
    if node.kind is ImageKind.INDEX:
        out["children"] = [_node_json(c) for c in node.children]
        present = {c.digest for c in node.children}
        out["missing_children"] = [d.to_json() for d in node.parsed.manifests if d.digest not in present]
    else:
        config: Descriptor | None = node.parsed.config
        out["config"] = config.to_json() if config else None
        out["layers"] = [d.to_json() for d in node.parsed.layers]
    if node.parsed.artifact_type:
        out["artifact_type"] = node.parsed.artifact_type
    return out


def image_json(image: Image) -> dict:
    return {
        "ref": image.ref,
        "repository": image.repository,
        "tag": image.tag,
        "digest": image.digest,
        "media_type": image.media_type,
        "kind": image.kind.value,
        "platforms": image.platforms(),
        "size": image.size(),
        "foreign_layers": image.has_foreign_layers,
        "status": image_status(image),
        "problems": sorted({p.code for p in image.all_problems()}),
        "manifest": _node_json(image.root) if image.root else None,
    }


def catalog_json(catalog: Catalog, untagged: bool = False) -> dict:
    inv = catalog.inventory
    verified = [b for b in inv.blobs.values() if b.verified]
    out = {
        "schema": INVENTORY_SCHEMA,
        "input": {
            "compression": inv.compression,
            "bytes": inv.source_bytes,
            "members": inv.members,
            "storage_prefixes": sorted(inv.prefixes),
            "truncated": inv.truncated or None,
        },
        "repositories": [
            {
                "name": r.name,
                "tags": sorted(r.tags),
                "revisions": len(r.revisions),
                "layer_links": len(r.layer_links),
                "uploads": r.uploads,
            }
            for r in sorted(inv.repositories.values(), key=lambda r: r.name)
            if r.has_manifests
        ],
        "tags": [image_json(i) for i in catalog.images],
        "blobs": {
            "count": len(inv.blobs),
            "verified": len(verified),
            "bytes": sum(b.size for b in verified),
            "corrupt": sorted(b.digest for b in inv.blobs.values() if not b.verified),
        },
        "problems": [p.to_json() for p in sorted(catalog.problems, key=lambda p: (p.code, p.subject))],
    }
    if untagged:
        out["untagged"] = [image_json(i) for i in catalog.untagged]
    return out


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table_lines(catalog: Catalog, untagged: bool = False) -> list[str]:
    images = catalog.images + (catalog.untagged if untagged else [])
    rows = [("REFERENCE", "DIGEST", "KIND", "PLATFORMS", "SIZE", "STATUS")]
    for image in images:
        kind = image.kind.value
        if image.media_type:
            kind += "/" + _SHORT_TYPES.get(image.media_type, image.media_type)
        status = image_status(image)
        if status != "ok":
            status += ": " + ", ".join(sorted({p.code for p in image.errors()}))
        rows.append((
            image.ref,
            image.digest[:19] if image.digest else "-",
            kind,
            ",".join(image.platforms()) or "-",
            human_size(image.size()) if image.root else "-",
            status,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]


def problem_lines(catalog: Catalog) -> list[str]:
    lines = []
    for p in sorted(catalog.problems, key=lambda p: (p.severity.value, p.code, p.subject)):
        affects = f" [affects {', '.join(sorted(p.affects)[:5])}{' …' if len(p.affects) > 5 else ''}]" if p.affects else ""
        lines.append(f"{p.severity.value}: {p.code}: {p.message}{affects}")
    return lines

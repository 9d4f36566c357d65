"""Text for a terminal: the `list` table, problem lines, sizes."""

from __future__ import annotations

from regcarve.model.attachments import AttachmentKind, counts
from regcarve.model.catalog import Catalog, Image, ManifestNode
from regcarve.model.problems import Problem

_SHORT_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json": "docker-v2",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-list",
    "application/vnd.docker.distribution.manifest.v1+json": "docker-v1",
    "application/vnd.docker.distribution.manifest.v1+prettyjws": "docker-v1",
    "application/vnd.oci.image.manifest.v1+json": "oci",
    "application/vnd.oci.image.index.v1+json": "oci-index",
}


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table_lines(catalog: Catalog, untagged: bool = False, width: int | None = None) -> list[str]:
    """The table; with a `width` (a terminal's), long references are cut in the middle and long
    platform lists shortened so that a line fits, when it can."""
    images = catalog.images + (catalog.untagged if untagged else [])
    rows = [("REFERENCE", "DIGEST", "KIND", "PLATFORMS", "SIZE", "ATTACHED", "STATUS")]
    # Tags without problems or attachments of their own (nearly all) read like every other tag naming the
    # same root manifest: its columns are made once, whatever the number of tags.
    shared: dict[tuple[str, ManifestNode], tuple[str, ...]] = {}
    distinct = [rows[0][1:]]  # every different tuple of columns but the reference, once
    for image in images:
        key = None if image.root is None or image.problems or image.carries else (image.repository, image.root)
        columns = shared.get(key) if key else None
        if columns is None:
            columns = _columns(catalog, image, width)
            distinct.append(columns)
            if key:
                shared[key] = columns
        rows.append((image.ref, *columns))
    last = len(rows[0]) - 1
    widths = [max(len(r[0]) for r in rows), *(max(len(c[i]) for c in distinct) for i in range(last - 1))]
    if width is not None:
        rest = sum(widths[1:]) + 2 * last + max(len(c[-1]) for c in distinct)
        widths[0] = min(widths[0], max(width - 1 - rest, _MIN_REFERENCE))
        rows = [(middle_cut(r[0], widths[0]), *r[1:]) for r in rows]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"  # each column left-aligned, padded with spaces
    return [line.format(*r) for r in rows]


def _columns(catalog: Catalog, image: Image, width: int | None) -> tuple[str, ...]:
    """Every column of the image's row but the reference."""
    kind = image.kind.value
    if image.media_type:
        kind += "/" + _SHORT_TYPES.get(image.media_type, image.media_type)
    nodes = image.nodes()
    errors = image.errors(nodes)
    status = "broken: " + ", ".join(sorted({p.code for p in errors})) if errors else "ok"
    platforms = image.platforms()
    if width is not None and len(platforms) > 1:
        platforms = [platforms[0], f"+{len(platforms) - 1}"]
    return (
        image.digest[:19] if image.digest else "-",
        kind,
        ",".join(platforms) or "-",
        human_size(image.size(nodes)) if image.root else "-",
        attached_text(catalog, image),
        status,
    )


def attached_text(catalog: Catalog, image: Image) -> str:
    """`sig 2, att 1, sbom 1, idx 1` for an image with attachments (idx: a referrers index); `sig of v1` for an
    attachment."""
    own = image.attached_as
    if own is not None:
        tags = [i.tag for i in catalog.images_holding(image.repository, own.subject) if i.digest == own.subject]
        of = tags[0] if tags else own.subject[:19]  # an untagged subject, such as an index's child
        return f"{_SHORT_KINDS[own.kind.value]} of {of}"
    found = counts(catalog.attached(image))
    return ", ".join(f"{_SHORT_KINDS[k]} {n}" for k, n in found.items()) or "-"


_SHORT_KINDS = {AttachmentKind.SIGNATURE.value: "sig", AttachmentKind.ATTESTATION.value: "att",
                AttachmentKind.SBOM.value: "sbom", AttachmentKind.REFERRERS.value: "idx",
                AttachmentKind.OTHER.value: "other"}


_MIN_REFERENCE = 30  # narrower than this, a reference is no longer recognisable: let the line wrap


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, its middle replaced by '…' when it is longer."""
    if len(text) <= width:
        return text
    keep = max(width - 1, 2)
    head = (keep + 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - head):]


def problem_lines(problems: list[Problem]) -> list[str]:
    lines = []
    for p in sorted(problems, key=lambda p: (p.severity.value, p.code, p.subject)):
        affects = f" [affects {', '.join(sorted(p.affects)[:5])}{' …' if len(p.affects) > 5 else ''}]" if p.affects else ""
        lines.append(f"{p.severity.value}: {p.code}: {p.message}{affects}")
    return lines

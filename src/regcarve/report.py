"""The JSON documents, in stable schemas (README: "Inventory JSON", "Report JSON"): the inventory and a run's report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import IO

from regcarve.model.attachments import counts
from regcarve.model.catalog import Catalog, Image, ImageKind, ManifestNode
from regcarve.model.manifests import Descriptor, written_media_type
from regcarve.model.schema1_convert import ConversionError, read_schema1
from regcarve.run import Outcome
from regcarve.safefiles import atomic_write_parts
from regcarve.sinks.base import Status

INVENTORY_SCHEMA = "regcarve.inventory/v1"
REPORT_SCHEMA = "regcarve.report/v1"
INDENT = "  "


class Streamed:
    """A JSON array whose items are made as the writer reaches them, written, and let go."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[object]) -> None:
        self.items = items


class Rendered:
    """A value already rendered by `json.dumps(value, indent=2)` at the outermost level."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def json_parts(value: object, level: int = 0) -> Iterator[str]:
    """The text of `json.dumps(value, indent=2)`, in parts: a Streamed array's items are made one at
    a time; a Rendered value is reused as it is. Byte for byte what json.dumps writes."""
    pad = "\n" + INDENT * level
    if isinstance(value, Rendered):
        yield value.text.replace("\n", pad) if level else value.text
    elif isinstance(value, Streamed):
        opened = False
        for item in value.items:
            yield ("," if opened else "[") + pad + INDENT
            yield from json_parts(item, level + 1)
            opened = True
        yield pad + "]" if opened else "[]"
    elif isinstance(value, dict) and value and _flat(value):  # a report's image: no indenting encoder per item
        yield "{" + ",".join(f"{pad}{INDENT}{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()) + pad + "}"
    elif isinstance(value, dict) and (text := _with_rendered(value)) is not None:
        yield text.replace("\n", pad) if level else text
    elif isinstance(value, dict) and any(isinstance(v, (Streamed, Rendered, dict)) for v in value.values()):
        opened = False
        for key, item in value.items():
            yield ("," if opened else "{") + pad + INDENT + json.dumps(key) + ": "
            yield from json_parts(item, level + 1)
            opened = True
        yield pad + "}" if opened else "{}"
    else:
        text = json.dumps(value, indent=2)
        yield text.replace("\n", pad) if level and "\n" in text else text


_SCALARS = (str, int, float, bool, type(None))


def _flat(value: dict) -> bool:
    """Its keys strings, its values strings, numbers, booleans or null: json.dumps(indent=2) writes each
    member on its own line as json.dumps (the fast encoder) writes the key and the value."""
    return all(type(k) is str and type(v) in _SCALARS for k, v in value.items())


def _with_rendered(value: dict) -> str | None:
    """json.dumps(value, indent=2) of a dict whose Rendered values sit at its own level (a tag's object): one
    dumps call with a marker in each one's place, then the texts put in. None when it is not such a dict, or
    when a marker's text already occurs in it."""
    rendered = {k: v for k, v in value.items() if isinstance(v, Rendered)}
    if not rendered or any(isinstance(v, (Streamed, Rendered)) for v in _nested(value, rendered)):
        return None
    markers = {k: f"\0rendered {i}\0" for i, k in enumerate(rendered)}
    text = json.dumps({k: markers.get(k, v) for k, v in value.items()}, indent=2)
    for key, marker in markers.items():
        quoted = json.dumps(marker)
        if text.count(quoted) != 1:
            return None
        text = text.replace(quoted, rendered[key].text.replace("\n", "\n" + INDENT))
    return text


def _nested(value: dict, skip: dict) -> Iterator[object]:
    """The values below `value`'s own level (but not those of `skip`'s keys): where a Streamed or Rendered
    value would need the part-by-part writer."""
    for key, item in value.items():
        if key in skip:
            continue
        todo = [item]
        while todo:
            v = todo.pop()
            yield v
            if isinstance(v, dict):
                todo.extend(v.values())
            elif isinstance(v, list):
                todo.extend(v)


def buffered(parts: Iterable[str], size: int = 1 << 14) -> Iterator[str]:
    """The same text in pieces of about `size` characters (fewer, larger writes)."""
    held: list[str] = []
    count = 0
    for part in parts:
        held.append(part)
        count += len(part)
        if count >= size:
            yield "".join(held)
            held, count = [], 0
    if held:
        yield "".join(held)


def image_status(image: Image) -> str:
    return "broken" if image.errors() else "ok"


def _media_types(stored: str) -> dict:
    """`media_type`: what is written and served; `stored_media_type` beside it when the storage holds
    another form (schema1 stored unsigned)."""
    written = written_media_type(stored)
    return {"media_type": written} if written == stored else {"media_type": written, "stored_media_type": stored}


def _node_json(node: ManifestNode) -> dict:
    out: dict = {
        "digest": node.digest,
        **_media_types(node.media_type),
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
    if node.parsed.subject:
        out["subject"] = node.parsed.subject.to_json()
    return out


def schema1_conversion(node: ManifestNode) -> dict:
    """What `--schema1 convert` (docker-archive's default) does to a tag whose manifest is schema1: it gets a new
    digest; `problem`, when its history already says it cannot be converted."""
    try:
        read_schema1(node.raw)
        problem = None
    except ConversionError as e:
        problem = str(e)
    return {"digest_changes": True, "problem": problem}


RenderNode = Callable[[ManifestNode], Rendered]


def node_renderer() -> RenderNode:
    """Tags that share a manifest share its nodes (resolution makes one per digest and repository):
    each is rendered once, and the texts of the last few thousand are kept."""
    @lru_cache(maxsize=4096)
    def render(node: ManifestNode) -> Rendered:
        return Rendered(json.dumps(_node_json(node), indent=2))

    return render


def _attachments_json(image: Image, catalog: Catalog) -> dict:
    """What is attached to the image (recursively), and what the image itself is attached to."""
    attached = catalog.attached(image)
    own = image.attached_as
    return {
        "attached_to": None if own is None else {
            "subject": own.subject, "kind": own.kind.value, "via": own.via.value,
            "subject_tags": catalog.tags_holding(image.repository, own.subject)},
        "attachment_counts": counts(attached),
        "attachments": [a.to_json() for a in attached],
    }


def image_json(image: Image, catalog: Catalog, render: RenderNode | None = None) -> dict:
    """A tag's JSON object; with `render`, its manifest tree as the Rendered text json_parts writes."""
    manifest: dict | Rendered | None = None
    if image.root is not None:
        manifest = render(image.root) if render else _node_json(image.root)
    out = {
        "ref": image.ref,
        "repository": image.repository,
        "tag": image.tag,
        "digest": image.digest,
        **_media_types(image.media_type),
        "kind": image.kind.value,
        "platforms": image.platforms(),
        "size": image.size(),
        "foreign_layers": image.has_foreign_layers,
        "status": image_status(image),
        "problems": sorted({p.code for p in image.all_problems()}),
        "manifest": manifest,
        **_attachments_json(image, catalog),
    }
    if image.root is not None and image.kind is ImageKind.SCHEMA1:
        out["schema1_convert"] = schema1_conversion(image.root)
    return out


SHARED_CHARS = 4_000_000  # the texts of the last tags' manifests kept, for the tags after them naming the same


def _tag_objects(found: list[Image], catalog: Catalog, render: RenderNode) -> Iterator[dict | Rendered]:
    """Each tag's object. A tag without problems or attachments of its own reads like every other tag naming
    its manifest (in its repository) but for its first four members, ref, repository, tag and digest: the text
    of the rest is made once and reused (thousands of tags may name one manifest)."""
    shared: dict[tuple[str, ManifestNode], str] = {}
    kept = 0  # characters in `shared`
    for image in found:
        if image.root is None or image.problems or image.carries:
            yield image_json(image, catalog, render)
            continue
        # what json.dumps(indent=2) writes for these members (each value by the fast encoder, without indent)
        head = (f'{{\n{INDENT}"ref": {json.dumps(image.ref)},\n{INDENT}"repository": {json.dumps(image.repository)},'
                f'\n{INDENT}"tag": {json.dumps(image.tag)},\n{INDENT}"digest": {json.dumps(image.digest)}')
        key = (image.repository, image.root)
        rest = shared.get(key)
        if rest is None:
            text = "".join(json_parts(image_json(image, catalog, render)))
            if not text.startswith(head + ","):  # not expected: the members are in this order
                yield Rendered(text)
                continue
            rest = shared[key] = text[len(head):]
            kept += len(rest)
            while kept > SHARED_CHARS:
                kept -= len(shared.pop(next(iter(shared))))
        yield Rendered(head + rest)


def catalog_json(catalog: Catalog, untagged: bool = False, streamed: bool = False) -> dict:
    """The inventory document; `streamed`: its tags made as json_parts reaches them (write_inventory)."""
    inv = catalog.inventory

    def images(found: list[Image]) -> list[dict] | Streamed:
        if streamed:
            return Streamed(_tag_objects(found, catalog, node_renderer()))
        return [image_json(i, catalog) for i in found]

    verified = [b for b in inv.blobs.values() if b.verified]
    out = {
        "schema": INVENTORY_SCHEMA,
        "input": {
            "compression": inv.input.compression,
            "bytes": inv.input.bytes,
            "members": inv.input.members,
            "storage_prefixes": sorted(inv.input.prefixes),
            "truncated": inv.input.truncated or None,
            "verification": inv.input.verification,
            "storage_root": inv.input.root or None,
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
        "tags": images(catalog.images),
        "blobs": {
            "count": len(inv.blobs),
            "verified": len(verified),
            "bytes": sum(b.size for b in verified),
            "not_hashed": sum(1 for b in inv.blobs.values() if not b.hashed),
            "corrupt": sorted(b.digest for b in inv.blobs.values() if not b.verified),
        },
        "problems": [p.to_json() for p in sorted(catalog.problems, key=lambda p: (p.code, p.subject))],
    }
    if untagged:
        out["untagged"] = images(catalog.untagged)
    return out


def write_inventory(stream: IO[str], catalog: Catalog, untagged: bool = False) -> None:
    """`list --json`: the inventory written as it is made, one tag at a time, never held whole."""
    for text in buffered(json_parts(catalog_json(catalog, untagged, streamed=True))):
        stream.write(text)
    stream.write("\n")
    stream.flush()


CONVERT_STATUSES = (Status.WRITTEN, Status.SKIPPED, Status.FAILED)


def report_json(outcome: Outcome, fmt: str, out: Path | str, statuses: tuple[Status, ...] = CONVERT_STATUSES,
                streamed: bool = False) -> dict:
    """The report of a run; `summary` counts `statuses` (what the command can end an image with).
    `streamed`: each image's object made as json_parts reaches it."""
    made = (r.to_json() for r in outcome.results)
    facts = outcome.catalog.inventory.input
    return {
        "schema": REPORT_SCHEMA,
        "format": fmt,
        "out": str(out),
        "input": {"compression": facts.compression, "bytes": facts.bytes, "verification": facts.verification},
        "images": Streamed(made) if streamed else list(made),
        "summary": {s.value: outcome.count(s) for s in statuses},
        "problems": [p.to_json() for p in outcome.catalog.problems],
    }


def write_report(path: Path, outcome: Outcome, fmt: str, out: Path | str,
                 statuses: tuple[Status, ...] = CONVERT_STATUSES) -> None:
    """The report, written as it is made (never held whole), under a temporary name renamed at the end."""
    parts = json_parts(report_json(outcome, fmt, out, statuses, streamed=True))
    atomic_write_parts(path, (text.encode() for text in buffered(chain(parts, ["\n"]))))

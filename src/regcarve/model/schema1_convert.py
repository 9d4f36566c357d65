"""Schema1 → Docker v2 schema2, by containers/image's rules (what `skopeo copy --format v2s2` does).

- The history is read as containers/image reads it: every `v1Compatibility` must decode (Go's rules: member
  names matched without regard to case, the last of duplicates winning, typed fields), every id is 64 hex
  digits, each entry's parent is the id below it, the base has none, and an id repeated by the entry just
  above it is dropped with that entry (`fixManifestLayers`).
- Layers of `throwaway` entries are dropped; the others keep their blobs (same digests), bottom first.
- The config is `v1Compatibility[0]` (the top entry) without `id`, `parent`, `parent_id`, `layer_id`,
  `throwaway` and `Size`, every other member carried over verbatim, plus `history` (one entry per history
  entry, bottom first: created, author, created_by — the container_config.Cmd words joined by spaces —,
  comment, empty_layer) and `rootfs` (`layers`, the diff_ids of the kept layers).
- Both documents are written as Go's json.Marshal writes them, so the config and manifest digests are the
  ones skopeo gives. One rule is left out: containers/image re-encodes the config of an image built by
  Docker older than 1.8.3 through its own struct, which adds zero-valued fields; here it is carried over as
  it is (the same settings, other bytes).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from regcarve.model.gojson import GoJSONError, go_string, go_time, object_text, raw_members, valid_text
from regcarve.model.manifests import DOCKER_CONFIG, DOCKER_MANIFEST

LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"  # what containers/image gives every one
DROPPED_CONFIG_MEMBERS = ("id", "parent", "parent_id", "layer_id", "throwaway", "Size")
_V1_ID = re.compile(r"[a-f0-9]{64}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# Schema2V1Image, which containers/image decodes the top entry into first: what each member must be
_TOP_STRINGS = ("id", "parent", "comment", "container", "docker_version", "author", "architecture", "variant", "os")
_TOP_OBJECTS = ("container_config", "config")


class ConversionError(ValueError):
    """The schema1 manifest cannot be converted: why."""


@dataclass(frozen=True)
class HistoryEntry:
    """One history entry as containers/image reads it."""

    v1_id: str
    parent: str
    created: str  # as Go writes the time back
    created_by: str
    author: str
    comment: str
    throwaway: bool

    def to_schema2(self) -> str:
        """The config's history item, as Go writes a Schema2History (omitempty fields left out)."""
        parts = [f'"created":"{self.created}"']
        for name, value in (("author", self.author), ("created_by", self.created_by), ("comment", self.comment)):
            if value:
                parts.append(f'"{name}":{go_string(value)}')
        if self.throwaway:
            parts.append('"empty_layer":true')
        return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class Schema1Image:
    """A schema1 manifest's history and layers, top first as schema1 lists them, repeats removed."""

    entries: tuple[HistoryEntry, ...]
    blob_sums: tuple[str, ...]  # one per entry
    top: str  # the top entry's v1Compatibility text: what the config is made from

    def kept_layers(self) -> list[str]:
        """The blobs of the converted image's layers, bottom first: those of entries that are not throwaway."""
        return [b for e, b in zip(reversed(self.entries), reversed(self.blob_sums)) if not e.throwaway]

    def config(self, diff_ids: list[str]) -> bytes:
        """The schema2 config, given the diff_id of each kept layer (bottom first)."""
        if len(diff_ids) != len(self.kept_layers()):
            raise ValueError(f"{len(diff_ids)} diff_ids for {len(self.kept_layers())} layers")
        members = raw_members(self.top)
        for name in DROPPED_CONFIG_MEMBERS:
            members.pop(name, None)
        ids = ",".join(f'"{d}"' for d in diff_ids)
        members["rootfs"] = '{"type":"layers"' + (f',"diff_ids":[{ids}]' if diff_ids else "") + "}"
        members["history"] = "[" + ",".join(e.to_schema2() for e in reversed(self.entries)) + "]"
        return object_text(members).encode("utf-8")


def manifest_bytes(config: bytes, layers: list[tuple[str, int]]) -> bytes:
    """The Docker v2 schema2 manifest of a converted image: the config and (digest, size) of each layer,
    bottom first, as Go writes containers/image's Schema2."""
    def descriptor(media_type: str, size: int, digest: str) -> str:
        return f'{{"mediaType":"{media_type}","size":{size},"digest":"{digest}"}}'

    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    listed = ",".join(descriptor(LAYER_MEDIA_TYPE, size, digest) for digest, size in layers)
    return (f'{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",'
            f'"config":{descriptor(DOCKER_CONFIG, len(config), config_digest)},"layers":[{listed}]}}').encode()


def read_schema1(payload: bytes) -> Schema1Image:
    """The history and layers of a schema1 manifest (signed or not); ConversionError says why it cannot be
    converted."""
    try:
        doc = json.loads(payload, object_pairs_hook=_object)
    except (ValueError, RecursionError):
        raise ConversionError("the manifest is not JSON") from None
    fs_layers, history = _list(doc, "fsLayers"), _list(doc, "history")
    if len(fs_layers) != len(history):
        raise ConversionError(f"{len(history)} history entries but {len(fs_layers)} fsLayers")
    if not fs_layers:
        raise ConversionError("no fsLayers")
    blob_sums, texts, entries = [], [], []
    for i, (layer, item) in enumerate(zip(fs_layers, history)):
        blob_sum = _member(layer, "blobSum", f"fsLayers[{i}]")
        if not isinstance(blob_sum, str) or not _DIGEST.fullmatch(blob_sum):
            raise ConversionError(f"fsLayers[{i}].blobSum is not a sha256 digest")
        text = _member(item, "v1Compatibility", f"history[{i}]")
        if not isinstance(text, str):
            raise ConversionError(f"history[{i}].v1Compatibility is not a string")
        blob_sums.append(blob_sum)
        texts.append(valid_text(text))
        entries.append(_entry(texts[-1], i))
    _check_top(texts[0])
    return _without_repeats(entries, blob_sums, texts)


def _list(doc: Any, name: str) -> list:
    value = doc.get(name) if isinstance(doc, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConversionError(f"{name} is not a list")
    return value


def _member(obj: Any, name: str, where: str) -> Any:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConversionError(f"{where} is not an object")
    return _fields(obj, (name,))[name]


class _Members(dict):
    """A decoded JSON object that remembers its members in document order, repeats included."""

    pairs: list[tuple[str, Any]]


def _object(pairs: list[tuple[str, Any]]) -> _Members:
    obj = _Members(pairs)
    obj.pairs = pairs
    return obj


def _decode(text: str) -> Any:
    return json.loads(text, parse_constant=_no, object_pairs_hook=_object)


def _fields(obj: dict, names: tuple[str, ...]) -> dict[str, Any]:
    """The members Go decodes into a struct with these fields: names matched without regard to case, the
    last member matching a field winning; a field no member matches is None."""
    wanted = {n.lower(): n for n in names}
    out: dict[str, Any] = dict.fromkeys(names)
    for key, value in getattr(obj, "pairs", obj.items()):
        field = wanted.get(key.lower())
        if field is not None:
            out[field] = value
    return out


def _entry(text: str, index: int) -> HistoryEntry:
    where = f"history[{index}].v1Compatibility"
    try:
        obj = _decode(text)
    except (ValueError, RecursionError) as e:
        raise ConversionError(f"{where} is not JSON ({str(e).splitlines()[0][:80]})") from None
    if obj is not None and not isinstance(obj, dict):
        raise ConversionError(f"{where} is not a JSON object")
    f = _fields(obj or {}, ("id", "parent", "comment", "created", "container_config", "author", "throwaway"))
    for name in ("id", "parent", "comment", "author"):
        if f[name] is not None and not isinstance(f[name], str):
            raise ConversionError(f"{where}: {name} is not a string")
    if f["throwaway"] is not None and not isinstance(f["throwaway"], bool):
        raise ConversionError(f"{where}: throwaway is not true or false")
    try:
        created = go_time(f["created"])
    except GoJSONError as e:
        raise ConversionError(f"{where}: {e}") from None
    v1_id = f["id"] or ""
    if not _V1_ID.fullmatch(v1_id):
        raise ConversionError(f"{where}: id {v1_id[:80]!r} is not 64 hex digits")
    return HistoryEntry(v1_id, f["parent"] or "", created, " ".join(_command(f["container_config"], where)),
                        valid_text(f["author"] or ""), valid_text(f["comment"] or ""), bool(f["throwaway"]))


def _no(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _command(container_config: Any, where: str) -> list[str]:
    if container_config is None:
        return []
    if not isinstance(container_config, dict):
        raise ConversionError(f"{where}: container_config is not an object")
    cmd = _fields(container_config, ("Cmd",))["Cmd"]
    if cmd is None:
        return []
    if not isinstance(cmd, list) or not all(w is None or isinstance(w, str) for w in cmd):
        raise ConversionError(f"{where}: container_config.Cmd is not a list of strings")
    return [valid_text(w or "") for w in cmd]


def _check_top(text: str) -> None:
    """What containers/image needs of the top entry beyond the history: the types its image struct has."""
    f = _fields(_decode(text) or {}, _TOP_STRINGS + _TOP_OBJECTS + ("Size",))
    for name in _TOP_STRINGS:
        if f[name] is not None and not isinstance(f[name], str):
            raise ConversionError(f"history[0].v1Compatibility: {name} is not a string")
    for name in _TOP_OBJECTS:
        if f[name] is not None and not isinstance(f[name], dict):
            raise ConversionError(f"history[0].v1Compatibility: {name} is not an object")
    size = f["Size"]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ConversionError("history[0].v1Compatibility: Size is not an integer")
    try:
        raw_members(text)
    except GoJSONError as e:
        raise ConversionError(f"history[0].v1Compatibility: {e}") from None


def _without_repeats(entries: list[HistoryEntry], blob_sums: list[str], texts: list[str]) -> Schema1Image:
    """containers/image's fixManifestLayers: ids unique but for runs, parents chained, runs cut to one."""
    if entries[-1].parent:
        raise ConversionError("the base entry of the history has a parent")
    seen: set[str] = set()
    last = ""
    for e in entries:
        if e.v1_id != last and e.v1_id in seen:
            raise ConversionError(f"id {e.v1_id} appears more than once in the history")
        seen.add(e.v1_id)
        last = e.v1_id
    keep = [True] * len(entries)
    for i in range(len(entries) - 2, -1, -1):
        if entries[i].v1_id == entries[i + 1].v1_id:
            keep[i] = False
        elif entries[i].parent != entries[i + 1].v1_id:
            raise ConversionError(f"history[{i}] has parent {entries[i].parent!r}, not {entries[i + 1].v1_id}")
    pick = [i for i in range(len(entries)) if keep[i]]
    return Schema1Image(tuple(entries[i] for i in pick), tuple(blob_sums[i] for i in pick), texts[pick[0]])

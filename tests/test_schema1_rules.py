"""The schema1 → schema2 rules on their own (Hypothesis): Go's JSON bytes, the config made from any history."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcarve.model.gojson import ZERO_TIME, compact, go_string, go_time, object_text
from regcarve.model.schema1_convert import DROPPED_CONFIG_MEMBERS, ConversionError, manifest_bytes, read_schema1

GO_ESCAPED = "<>&\u2028\u2029"
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["<script>", "a & b", "\u2028\u2029", "é", "\x00\x1f", '"\\'])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12)


def go_escaped(literal: str) -> str:
    for c in GO_ESCAPED:
        literal = literal.replace(c, f"\\u{ord(c):04x}")
    return literal


@given(texts)
def test_go_strings_decode_to_the_text_and_escape_what_go_escapes(text):
    literal = go_string(text)
    assert json.loads(literal) == text
    assert not any(c in literal for c in GO_ESCAPED)


@given(json_values, st.sampled_from([None, 0, 1, 3, "\t"]))
def test_compact_keeps_the_value_and_drops_only_whitespace(value, indent):
    raw = json.dumps(value, indent=indent, ensure_ascii=False)
    out = compact(raw)
    assert json.loads(out) == value
    assert out == go_escaped(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@given(st.dictionaries(texts, json_values, max_size=6))
def test_objects_come_out_sorted_bytewise_with_their_values_verbatim(members):
    raw = {k: json.dumps(v, indent=2, ensure_ascii=False) for k, v in members.items()}
    out = object_text(raw)
    assert json.loads(out) == members
    keys = list(json.loads(out, object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
    assert keys == sorted(members, key=lambda k: k.encode("utf-8"))


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59), st.integers(0, 9))
def test_times_come_back_as_go_writes_them(when, offset_minutes, digits):
    zone = timezone(timedelta(minutes=offset_minutes))
    when = when.replace(tzinfo=zone)
    fraction = f"{when.microsecond:06d}000"[:digits]
    sign, minutes = "-" if offset_minutes < 0 else "+", abs(offset_minutes)
    seconds = f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    text = seconds + (f".{fraction}" if digits else "") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    out = go_time(text)
    trimmed = fraction.rstrip("0")
    assert out.startswith(seconds + (f".{trimmed}" if trimmed else ""))
    assert out.endswith("Z") if offset_minutes == 0 else out.endswith(text[-6:])
    if when.year >= 1000:  # fromisoformat wants four digits, as Go writes them
        assert datetime.fromisoformat(out.replace("Z", "+00:00")).utcoffset() == timedelta(minutes=offset_minutes)


@pytest.mark.parametrize("value", [3, "2016-02-30T00:00:00Z", "2016-01-01 00:00:00Z", "2016-01-01T00:00:00+24:00"])
def test_times_go_refuses_are_refused(value):
    with pytest.raises(ValueError):
        go_time(value)


def test_a_time_never_set_is_go_zero():
    assert go_time(None) == ZERO_TIME


# --- whole histories ------------------------------------------------------------------------------
def v1_id(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"layer {n}".encode()).hexdigest()


@st.composite
def histories(draw):
    """A schema1 payload (top first) and what each entry was made of, bottom first."""
    n = draw(st.integers(1, 6))
    made = []
    for i in range(n):  # bottom first
        made.append({
            "throwaway": draw(st.booleans()),
            "cmd": draw(st.none() | st.lists(texts, max_size=3)),
            "author": draw(texts), "comment": draw(texts),
            "created": draw(st.sampled_from(["2016-01-01T00:00:00Z", "2016-01-01T00:00:00.100+02:00", None])),
            "layer": draw(st.integers(0, 3)),
        })
    extra = draw(st.dictionaries(texts.filter(lambda k: k.lower() not in {
        "id", "parent", "comment", "created", "container_config", "author", "throwaway", "history", "rootfs",
        "container", "docker_version", "architecture", "variant", "os", "config", "size", "parent_id",
        "layer_id"}), json_values, max_size=3))
    entries = []
    for i, m in enumerate(made):
        v1 = {"id": v1_id(i), "created": m["created"], "author": m["author"], "comment": m["comment"],
              "throwaway": m["throwaway"], "container_config": {"Cmd": m["cmd"]}}
        if i:
            v1["parent"] = v1_id(i - 1)
        if i == n - 1:
            v1 |= extra | {"Size": 12, "parent_id": "x", "layer_id": "y", "os": "linux"}
        entries.append((json.dumps(v1, ensure_ascii=False), digest(m["layer"])))
    entries.reverse()
    payload = json.dumps({"schemaVersion": 1, "name": "a/b", "tag": "t", "architecture": "amd64",
                          "fsLayers": [{"blobSum": d} for _, d in entries],
                          "history": [{"v1Compatibility": v} for v, _ in entries]}, indent=3).encode()
    return payload, made, extra


@settings(max_examples=150)
@given(histories())
def test_the_config_is_the_top_entry_with_history_and_rootfs(case):
    payload, made, extra = case
    image = read_schema1(payload)
    kept = [digest(m["layer"]) for m in made if not m["throwaway"]]
    assert image.kept_layers() == kept
    diff_ids = ["sha256:" + hashlib.sha256(d.encode()).hexdigest() for d in kept]
    config = json.loads(image.config(diff_ids))
    assert config["rootfs"] == {"type": "layers", **({"diff_ids": diff_ids} if diff_ids else {})}
    assert not set(DROPPED_CONFIG_MEMBERS) & set(config)
    assert {k: config[k] for k in extra} == extra and config["os"] == "linux"
    assert len(config["history"]) == len(made)
    for item, m in zip(config["history"], made):
        assert item.get("created_by", "") == " ".join(m["cmd"] or [])
        assert item.get("author", "") == m["author"] and item.get("comment", "") == m["comment"]
        assert item.get("empty_layer", False) == m["throwaway"]
        assert item["created"] == {"2016-01-01T00:00:00.100+02:00": "2016-01-01T00:00:00.1+02:00",
                                   None: ZERO_TIME}.get(m["created"], m["created"])
    manifest = json.loads(manifest_bytes(image.config(diff_ids), [(d, 7) for d in kept]))
    assert [layer["digest"] for layer in manifest["layers"]] == kept


def payload_of(entries: list[dict]) -> bytes:
    return json.dumps({"schemaVersion": 1, "fsLayers": [{"blobSum": digest(0)} for _ in entries],
                       "history": [{"v1Compatibility": json.dumps(e)} for e in entries]}).encode()


@pytest.mark.parametrize("entries, why", [
    ([{"id": v1_id(1), "parent": v1_id(9)}, {"id": v1_id(0)}], "has parent"),
    ([{"id": "short"}], "is not 64 hex digits"),
    ([{"id": v1_id(0), "parent": v1_id(1)}], "base entry"),
    ([{"id": v1_id(0), "parent": v1_id(1)}, {"id": v1_id(1), "parent": v1_id(0)}, {"id": v1_id(0)}], "more than once"),
    ([{"id": v1_id(0), "container_config": {"Cmd": "sh"}}], "Cmd is not a list"),
    ([{"id": v1_id(0), "throwaway": "yes"}], "throwaway"),
    ([{"id": v1_id(0), "Size": "big"}], "Size is not an integer"),
    ([], "no fsLayers"),
])
def test_histories_containers_image_refuses_are_refused(entries, why):
    with pytest.raises(ConversionError, match=why):
        read_schema1(payload_of(entries))


def test_member_names_match_without_case_the_last_winning():
    image = read_schema1(payload_of([{"ID": "x", "id": v1_id(0), "Throwaway": True, "CONTAINER_CONFIG": {"cmd": ["a"]}}]))
    assert image.kept_layers() == [] and image.entries[0].created_by == "a" and image.entries[0].throwaway

"""JSON as Go's encoding/json writes it, for documents that must come out as containers/image makes them.

A schema1 manifest converted to schema2 gets a new config and manifest; written the way containers/image
writes them (Go's `json.Marshal`), they have the digests `skopeo copy --format v2s2` gives. What that
takes: strings escaped as Go escapes them (`<`, `>`, `&`, U+2028 and U+2029 as `\\u…`), values carried
over verbatim (`json.RawMessage`: compacted, escaped the same way, numbers and escapes untouched),
object keys of a map sorted bytewise, and times in RFC 3339 with nanoseconds, trailing zeros dropped.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from json.decoder import scanstring

_WHITESPACE = " \t\n\r"
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPED = re.compile("[<>&\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})")
_STRICT = json.JSONDecoder(parse_constant=lambda name: _reject(name))
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Go writes for a time.Time never set


class GoJSONError(ValueError):
    """Text Go's encoding/json would refuse to decode as asked."""


def _reject(name: str) -> None:
    raise GoJSONError(f"{name} is not JSON")


def valid_text(text: str) -> str:
    """`text` as Go holds a decoded string: an unpaired surrogate escape becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def go_string(text: str) -> str:
    """A JSON string literal as Go's json.Marshal writes it."""
    literal = json.dumps(valid_text(text), ensure_ascii=False)
    return _GO_ESCAPED.sub(lambda m: _GO_ESCAPES[m.group()], literal)


def compact(raw: str) -> str:
    """A JSON value's text without insignificant whitespace, escaped as Go escapes a RawMessage it writes."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == '"':
            end = _string_end(raw, i)
            out.append(_GO_ESCAPED.sub(lambda m: _GO_ESCAPES[m.group()], raw[i:end]))
            i = end
            continue
        if c not in _WHITESPACE:
            out.append(c)
        i += 1
    return "".join(out)


def _string_end(raw: str, start: int) -> int:
    """The index just past the string literal that opens at `start`."""
    i = start + 1
    while True:
        c = raw[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1


def raw_members(text: str) -> dict[str, str]:
    """A JSON object's members as Go decodes it into map[string]json.RawMessage: decoded keys, the last of
    duplicates winning, each value's text as written. GoJSONError when `text` is not one JSON object."""
    i = _skip(text, 0)
    if text[i:i + 1] != "{":
        raise GoJSONError("not a JSON object")
    members: dict[str, str] = {}
    i = _skip(text, i + 1)
    if text[i:i + 1] == "}":
        return _only_whitespace_after(text, i + 1, members)
    while True:
        if text[i:i + 1] != '"':
            raise GoJSONError(f"expected a member name at offset {i}")
        try:
            key, i = scanstring(text, i + 1)
            i = _skip(text, i)
            if text[i:i + 1] != ":":
                raise GoJSONError(f"expected ':' at offset {i}")
            start = _skip(text, i + 1)
            _, end = _STRICT.raw_decode(text, start)
        except (ValueError, RecursionError) as e:
            raise GoJSONError(str(e).splitlines()[0] if str(e) else "nested too deep") from None
        members[valid_text(key)] = text[start:end]
        i = _skip(text, end)
        if text[i:i + 1] == "}":
            return _only_whitespace_after(text, i + 1, members)
        if text[i:i + 1] != ",":
            raise GoJSONError(f"expected ',' or '}}' at offset {i}")
        i = _skip(text, i + 1)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _only_whitespace_after(text: str, i: int, members: dict[str, str]) -> dict[str, str]:
    if _skip(text, i) != len(text):
        raise GoJSONError(f"data after the object at offset {i}")
    return members


def object_text(members: dict[str, str]) -> str:
    """A map[string]json.RawMessage as json.Marshal writes it: keys sorted bytewise, values compacted."""
    ordered = sorted(members.items(), key=lambda kv: kv[0].encode("utf-8"))
    return "{" + ",".join(f"{go_string(k)}:{compact(v)}" for k, v in ordered) + "}"


def go_time(value: object) -> str:
    """A time.Time decoded from JSON (`value` as Python decoded it) and written back as Go writes it:
    RFC 3339 with nanoseconds, trailing zeros dropped, `Z` for a zero offset. GoJSONError when Go's
    decoder would refuse it."""
    if value is None:
        return ZERO_TIME
    if not isinstance(value, str):
        raise GoJSONError(f"created is {type(value).__name__}, not an RFC 3339 time")
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise GoJSONError(f"created {value[:40]!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7) or "", m.group(8)
    try:
        offset = timezone.utc if zone == "Z" else _offset(zone)
        datetime(year, month, day, hour, minute, second, tzinfo=offset)
    except ValueError as e:
        raise GoJSONError(f"created {value[:40]!r}: {e}") from None
    nanos = fraction[:9].ljust(9, "0").rstrip("0")
    written_zone = "Z" if offset.utcoffset(None) == timedelta(0) else zone
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}" \
           f"{'.' + nanos if nanos else ''}{written_zone}"


def _offset(zone: str) -> timezone:
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"time zone offset {zone} out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if zone[0] == "-" else delta)

"""Docker schema1 manifests: libtrust JWS signing, digests and stored-signature merging.

A schema1 manifest's digest is sha256 of its *payload*: the JSON without ``signatures``.
Distribution 2.5-2.8 stores only that payload; 2.0-2.4 stored it plus each JWS signature
object as a separate blob. A registry refuses an unsigned schema1 manifest on push, so
the payload is signed afresh here (or its stored signatures merged back) in libtrust's
"pretty JWS" form, which leaves the payload, and therefore the digest, unchanged.

The form (docker/libtrust ``jsonsign.go``): the payload is split at ``formatLength``, the
offset just past its last member, with the rest kept as ``formatTail``; both go into the
base64url ``protected`` header. The signed document is ``payload[:formatLength]``, then
``,"signatures":[...]`` and ``}``. A registry rebuilds the payload as
``doc[:formatLength] + formatTail`` and checks each signature over
``protected + "." + base64url(payload)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from regcarve.model.manifests import DOCKER_SCHEMA1_SIGNED

if TYPE_CHECKING:  # cryptography is imported when something is signed, not for every command
    from cryptography.hazmat.primitives.asymmetric import ec

MEDIA_TYPE_SIGNED = DOCKER_SCHEMA1_SIGNED

_JSON_SPACE = b" \t\n\r"
_P256_OCTETS = 32


class Schema1Error(ValueError):
    """The bytes are not a usable schema1 manifest, payload or signature."""


@dataclass(frozen=True)
class _Format:
    """Where libtrust splits a payload, and the indentation it signs with."""

    length: int
    tail: bytes
    indent: str


def is_schema1(doc: bytes) -> bool:
    """Whether `doc` (signed or not) is a JSON object with ``"schemaVersion": 1``."""
    try:
        _load_manifest(doc)
    except Schema1Error:
        return False
    return True


def payload_digest(doc: bytes) -> str:
    """The schema1 digest (``sha256:<hex>``) of a signed or unsigned manifest."""
    return "sha256:" + hashlib.sha256(_payload_of(doc)).hexdigest()


def sign(payload: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """Sign an unsigned schema1 payload with `key` (a fresh P-256 key when None)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    fmt = _format_of(payload)
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Schema1Error("signing key must be an EC P-256 private key")
    protected = _b64(_compact({
        "formatLength": fmt.length,
        "formatTail": _b64(fmt.tail),
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }))
    der = key.sign(f"{protected}.{_b64(payload)}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = {
        "header": {"jwk": _jwk(key.public_key()), "alg": "ES256"},
        "signature": _b64(r.to_bytes(_P256_OCTETS, "big") + s.to_bytes(_P256_OCTETS, "big")),
        "protected": protected,
    }
    return _assemble(payload, fmt, [signature])


def for_push(payload: bytes, stored_signatures: list[bytes]) -> bytes:
    """The document a registry accepts on push: the stored (v2.0–2.4) signatures merged, else signed afresh."""
    return merge_stored_signatures(payload, stored_signatures) if stored_signatures else sign(payload)


def merge_stored_signatures(payload: bytes, signature_blobs: list[bytes]) -> bytes:
    """Rebuild a v2.0-2.4 signed manifest from its payload and stored JWS signature blobs."""
    fmt = _format_of(payload)
    if not signature_blobs:
        raise Schema1Error("no signatures to merge")
    signatures = [_load_signature(blob) for blob in signature_blobs]
    for sig in signatures:
        if _protected_format(sig) != (fmt.length, fmt.tail):
            raise Schema1Error("a stored signature was made for a different formatting of the payload")
    return _assemble(payload, fmt, signatures)


# --- parsing -------------------------------------------------------------------------------

def _load_manifest(doc: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(doc.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Schema1Error(f"not JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise Schema1Error("not a JSON object")
    version = obj.get("schemaVersion")
    if type(version) is not int or version != 1:
        raise Schema1Error(f"schemaVersion is {version!r}, not 1")
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _format_of(payload: bytes) -> _Format:
    """libtrust's split of an unsigned payload (``NewJSONSignature``)."""
    if "signatures" in _load_manifest(payload):
        raise Schema1Error("payload already has signatures")
    head = payload.rstrip(_JSON_SPACE)[:-1].rstrip(_JSON_SPACE)  # drop the closing brace
    indent = ""
    if payload.startswith(b"{\n"):
        indent = payload[2:payload.index(b'"')].decode("ascii")
    return _Format(len(head), payload[len(head):], indent)


def _payload_of(doc: bytes) -> bytes:
    """The payload of a signed manifest as a registry rebuilds it (``ParsePrettySignature``)."""
    manifest = _load_manifest(doc)
    if "signatures" not in manifest:
        return doc
    signatures = manifest["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise Schema1Error("signatures is not a non-empty list")
    formats = {_protected_format(sig) for sig in signatures}
    if len(formats) != 1:
        raise Schema1Error("signatures disagree on formatLength/formatTail")
    length, tail = formats.pop()
    if length > len(doc):
        raise Schema1Error(f"formatLength {length} is past the end of the document")
    payload = doc[:length] + tail
    _load_manifest(payload)
    return payload


def _load_signature(blob: bytes) -> dict[str, Any]:
    """One stored JWS signature object, in libtrust's field order."""
    try:
        sig = json.loads(blob)
    except ValueError as e:
        raise Schema1Error(f"signature blob is not JSON: {str(e).splitlines()[0]}") from None
    header = sig.get("header") if isinstance(sig, dict) else None
    if not (isinstance(header, dict) and isinstance(header.get("alg"), str)
            and isinstance(sig.get("signature"), str) and isinstance(sig.get("protected"), str)):
        raise Schema1Error("signature blob lacks header.alg, signature or protected")
    ordered = {}
    if isinstance(header.get("jwk"), dict):
        ordered["jwk"] = dict(sorted(header["jwk"].items()))
    ordered["alg"] = header["alg"]
    if header.get("x5c"):
        ordered["x5c"] = header["x5c"]
    return {"header": ordered, "signature": sig["signature"], "protected": sig["protected"]}


def _protected_format(sig: Any) -> tuple[int, bytes]:
    try:
        protected = json.loads(_unb64(sig["protected"]))
        length, tail = protected["formatLength"], _unb64(protected["formatTail"])
    except (TypeError, KeyError, ValueError):
        raise Schema1Error("a signature has no readable protected formatLength/formatTail") from None
    if type(length) is not int or length < 0:
        raise Schema1Error(f"formatLength {length!r} is not a length")
    return length, tail


# --- writing -------------------------------------------------------------------------------

def _assemble(payload: bytes, fmt: _Format, signatures: list[dict[str, Any]]) -> bytes:
    """libtrust ``PrettySignature``: the payload head, the sorted signatures, a closing brace."""
    signatures = sorted(signatures, key=lambda s: (s["header"].get("jwk", {}).get("kid", ""), s["signature"]))
    if not fmt.indent:
        return payload[:fmt.length] + b',"signatures":' + _compact(signatures) + b"}"
    # Go's MarshalIndent(v, prefix=indent, indent=indent): every line after the first is prefixed.
    listing = json.dumps(signatures, indent=fmt.indent).replace("\n", "\n" + fmt.indent)
    return payload[:fmt.length] + f',\n{fmt.indent}"signatures": {listing}\n}}'.encode()


def _jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kid": _key_id(public),
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(_P256_OCTETS, "big")),
        "y": _b64(numbers.y.to_bytes(_P256_OCTETS, "big")),
    }


def _key_id(public: ec.EllipticCurvePublicKey) -> str:
    """libtrust key ID: base32 of the first 240 bits of sha256(DER public key), in groups of 4."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)

"""schema1 signing against a real Distribution registry: a re-signed stored payload keeps its digest."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import LiveRegistry
from regcarve.model.schema1 import (
    MEDIA_TYPE_SIGNED,
    Schema1Error,
    is_schema1,
    merge_stored_signatures,
    payload_digest,
    sign,
)

REPO, TAG = "legacy/old", "s1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- a schema1 image stored by a real registry ------------------------------------------------

@dataclass
class Legacy:
    payload: bytes  # the manifest blob registry A stored for REPO:TAG
    digest: str  # registry A's Docker-Content-Digest for REPO:TAG
    layers: dict[str, bytes]  # blobSum -> layer bytes
    served: bytes  # what registry A serves for REPO:TAG: the payload re-signed with A's own key


def http(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def upload_blob(reg: LiveRegistry, repo: str, digest: str, data: bytes) -> None:
    status, headers, body = http("POST", f"http://{reg.host}/v2/{repo}/blobs/uploads/")
    assert status == 202, body
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{reg.host}{location}"
    sep = "&" if "?" in location else "?"
    status, _, body = http("PUT", f"{location}{sep}digest={digest}", data,
                           {"Content-Type": "application/octet-stream"})
    assert status == 201, body


def put_manifest(reg: LiveRegistry, repo: str, ref: str, doc: bytes) -> tuple[int, str | None, bytes]:
    status, headers, body = http("PUT", f"http://{reg.host}/v2/{repo}/manifests/{ref}", doc,
                                 {"Content-Type": MEDIA_TYPE_SIGNED})
    return status, headers.get("Docker-Content-Digest"), body


def error_codes(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def stored_blob(reg: LiveRegistry, digest: str) -> bytes:
    hexd = digest.split(":", 1)[1]
    return (reg.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data").read_bytes()


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd[0]} {cmd[1]}: {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Legacy:
    """Push a two-layer image as schema1 (skopeo --format v2s1) and read back what the registry stored."""
    work = tmp_path_factory.mktemp("schema1-image")
    layout, files = work / "oci", work / "files"
    (files / "etc").mkdir(parents=True)
    (files / "etc" / "motd").write_text("carved from an old registry\n")
    (files / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    (files / "hello.sh").chmod(0o755)
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{TAG}")
    run("umoci", "insert", "--image", f"{layout}:{TAG}", str(files / "etc"), "/etc")
    run("umoci", "insert", "--image", f"{layout}:{TAG}", str(files / "hello.sh"), "/hello.sh")
    with LiveRegistry() as a:
        run("skopeo", "copy", "--format", "v2s1", "--dest-tls-verify=false",
            f"oci:{layout}:{TAG}", f"docker://{a.host}/{REPO}:{TAG}")
        link = a.root / f"docker/registry/v2/repositories/{REPO}/_manifests/tags/{TAG}/current/link"
        payload = stored_blob(a, link.read_text().strip())
        digest, content_type, served = a.manifest(REPO, TAG)
        assert content_type == MEDIA_TYPE_SIGNED
        blob_sums = [layer["blobSum"] for layer in json.loads(payload)["fsLayers"]]
        layers = {d: stored_blob(a, d) for d in blob_sums}
    return Legacy(payload, digest, layers, served)


@pytest.fixture(scope="module")
def registry_b(legacy: Legacy):
    """A second registry holding the layers of REPO but no manifest yet."""
    with LiveRegistry() as b:
        for digest, data in legacy.layers.items():
            upload_blob(b, REPO, digest, data)
        yield b


# --- the registry is the judge -----------------------------------------------------------------

def test_stored_payload_is_unsigned_and_is_the_digest(legacy: Legacy):
    assert "signatures" not in json.loads(legacy.payload)
    assert is_schema1(legacy.payload)
    assert sha256(legacy.payload) == legacy.digest == payload_digest(legacy.payload)
    assert len(legacy.layers) == 2


def test_reads_what_libtrust_wrote(legacy: Legacy):
    """The registry's own re-signed form: its digest, and the independent verifier used below."""
    assert payload_digest(legacy.served) == legacy.digest
    assert verify_signatures(legacy.served) == legacy.payload


def test_registry_refuses_the_unsigned_payload(legacy: Legacy, registry_b: LiveRegistry):
    status, _, body = put_manifest(registry_b, REPO, "unsigned", legacy.payload)
    assert (status, error_codes(body)) == (400, ["MANIFEST_INVALID"]), body


def test_signed_payload_is_accepted_with_the_same_digest(legacy: Legacy, registry_b: LiveRegistry):
    doc = sign(legacy.payload)
    assert payload_digest(doc) == legacy.digest
    status, digest, body = put_manifest(registry_b, REPO, TAG, doc)
    assert status == 201, body
    assert digest == legacy.digest
    assert registry_b.manifest(REPO, legacy.digest)[0] == legacy.digest
    assert stored_blob(registry_b, legacy.digest) == legacy.payload


def test_indented_payload_keeps_its_digest(legacy: Legacy, registry_b: LiveRegistry):
    """Docker clients pushed 3-space-indented payloads; libtrust then signs with the same indent."""
    pretty = json.dumps(json.loads(legacy.payload), indent=3).encode()
    doc = sign(pretty)
    assert b'\n   "signatures": [\n      {\n         "header": {' in doc
    status, digest, body = put_manifest(registry_b, REPO, "pretty", doc)
    assert status == 201, body
    assert digest == sha256(pretty) != legacy.digest


def _tamper_signature(sig: dict) -> None:
    raw = bytearray(b64decode(sig["signature"]))
    raw[5] ^= 1
    sig["signature"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _tamper_kid(sig: dict) -> None:
    kid = sig["header"]["jwk"]["kid"]
    sig["header"]["jwk"]["kid"] = ("A" if kid[0] != "A" else "B") + kid[1:]


def _tamper_key(sig: dict) -> None:
    other = json.loads(sign(b'{"schemaVersion":1}'))["signatures"][0]
    sig["header"]["jwk"] = other["header"]["jwk"]


@pytest.mark.parametrize("tamper, code", [
    (_tamper_signature, "MANIFEST_UNVERIFIED"),
    (_tamper_key, "MANIFEST_UNVERIFIED"),
    (_tamper_kid, "MANIFEST_INVALID"),  # libtrust refuses a jwk whose kid is not its key's ID
])
def test_registry_refuses_a_broken_signature(legacy: Legacy, registry_b: LiveRegistry, tamper, code: str):
    """The acceptance above means something: the registry does check signature, key and kid."""
    sigs = json.loads(sign(legacy.payload))["signatures"]
    tamper(sigs[0])
    doc = merge_stored_signatures(legacy.payload, [json.dumps(s).encode() for s in sigs])
    status, _, body = put_manifest(registry_b, REPO, "tampered", doc)
    assert (status, error_codes(body)) == (400, [code]), body


def test_merged_stored_signatures_are_accepted(legacy: Legacy, registry_b: LiveRegistry):
    """v2.0-2.4: payload plus separately stored signature blobs, as libtrust's Signatures() wrote them."""
    blobs = [json.dumps(json.loads(sign(legacy.payload))["signatures"][0], separators=(",", ":")).encode()
             for _ in range(2)]
    doc = merge_stored_signatures(legacy.payload, blobs)
    assert len(json.loads(doc)["signatures"]) == 2
    status, digest, body = put_manifest(registry_b, REPO, "merged", doc)
    assert status == 201, body
    assert digest == legacy.digest


def test_skopeo_pushes_a_dir_tree_holding_the_signed_manifest(legacy: Legacy, tmp_path: Path):
    tree = tmp_path / "dir"
    tree.mkdir()
    (tree / "version").write_text("Directory Transport Version: 1.1\n")
    doc = sign(legacy.payload)
    (tree / "manifest.json").write_bytes(doc)
    for digest, data in legacy.layers.items():
        (tree / digest.split(":", 1)[1]).write_bytes(data)
    assert run("skopeo", "inspect", "--raw", f"dir:{tree}").encode() == doc
    assert len(json.loads(run("skopeo", "inspect", f"dir:{tree}"))["Layers"]) == 2
    with LiveRegistry() as c:
        run("skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
            f"dir:{tree}", f"docker://{c.host}/{REPO}:{TAG}")
        assert c.manifest(REPO, TAG)[0] == legacy.digest
        assert stored_blob(c, legacy.digest) == legacy.payload


# --- properties ----------------------------------------------------------------------------

def verify_signatures(doc: bytes) -> bytes:
    """An independent libtrust check: every signature is valid ES256 over the rebuilt payload."""
    signatures = json.loads(doc)["signatures"]
    for sig in signatures:
        protected = json.loads(b64decode(sig["protected"]))
        payload = doc[:protected["formatLength"]] + b64decode(protected["formatTail"])
        jwk = sig["header"]["jwk"]
        assert (sig["header"]["alg"], jwk["kty"], jwk["crv"]) == ("ES256", "EC", "P-256")
        x, y = (int.from_bytes(b64decode(jwk[c]), "big") for c in "xy")
        public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        assert jwk["kid"].split(":") == [kid[i:i + 4] for i in range(0, 48, 4)]
        raw = b64decode(sig["signature"])
        assert len(raw) == 64
        signed = (sig["protected"] + "." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()).encode()
        try:
            public.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                          signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            pytest.fail(f"signature by {jwk['kid']} does not verify")
    return payload


json_scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
digests = st.binary(min_size=1, max_size=8).map(sha256)


@st.composite
def schema1_payloads(draw) -> bytes:
    layers = draw(st.lists(digests, min_size=1, max_size=3))
    manifest = {
        "schemaVersion": 1,
        "name": draw(st.from_regex(r"[a-z0-9]+(/[a-z0-9]+)?", fullmatch=True)),
        "tag": draw(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)),
        "architecture": draw(st.sampled_from(["amd64", "arm64", "s390x"])),
        "fsLayers": [{"blobSum": d} for d in layers],
        "history": [{"v1Compatibility": json.dumps(draw(json_values))} for _ in layers],
    }
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in manifest and k != "signatures"),
                                 json_values, max_size=2))
    items = list(manifest.items()) + list(extra.items())
    obj = dict(draw(st.permutations(items)))
    indent = draw(st.sampled_from([None, 3, "\t", 2]))
    text = json.dumps(obj, indent=indent, ensure_ascii=draw(st.booleans()))
    return (text + draw(st.sampled_from(["", "\n", " \n\t"]))).encode()


@settings(max_examples=150, deadline=None)
@given(schema1_payloads())
def test_sign_roundtrips_the_payload(payload: bytes):
    doc = sign(payload)
    assert payload_digest(doc) == sha256(payload) == payload_digest(payload)
    assert verify_signatures(doc) == payload
    signed = json.loads(doc)
    del signed["signatures"]
    assert signed == json.loads(payload)
    assert is_schema1(doc) and is_schema1(payload)


@settings(max_examples=50, deadline=None)
@given(schema1_payloads())
def test_merging_a_signature_back_rebuilds_the_signed_document(payload: bytes):
    doc = sign(payload)
    blob = json.dumps(json.loads(doc)["signatures"][0]).encode()
    assert merge_stored_signatures(payload, [blob]) == doc


# --- malformed input ---------------------------------------------------------------------------

SIGNED = sign(b'{"schemaVersion":1,"name":"a/b","tag":"t","fsLayers":[],"history":[]}')
_sig = json.loads(SIGNED)["signatures"][0]


def _with_protected(protected: dict) -> bytes:
    sig = dict(_sig, protected=base64.urlsafe_b64encode(json.dumps(protected).encode()).decode())
    return SIGNED[:SIGNED.index(b',"signatures"')] + b',"signatures":' + json.dumps([sig]).encode() + b"}"


@pytest.mark.parametrize("doc", [
    b"", b"not json", b"\xff{}", b"[1]", b'{"schemaVersion":2}', b'{"schemaVersion":true}', b"{}",
    b'{"schemaVersion":1,"signatures":[]}',
    b'{"schemaVersion":1,"signatures":[{"protected":"!!"}]}',
    _with_protected({"formatLength": 10**6, "formatTail": "fQ"}),
    _with_protected({"formatLength": -1, "formatTail": "fQ"}),
    _with_protected({"formatTail": "fQ"}),
    _with_protected({"formatLength": 5, "formatTail": "fQ"}),  # rebuilds a payload that is not JSON
])
def test_payload_digest_rejects_malformed(doc: bytes):
    with pytest.raises(Schema1Error) as err:
        payload_digest(doc)
    assert "\n" not in str(err.value)


def test_signatures_must_agree_on_the_format():
    other = json.loads(sign(b'{"schemaVersion":1,"x":1}'))["signatures"][0]
    doc = SIGNED[:-2] + b"," + json.dumps(other).encode() + b"]}"
    with pytest.raises(Schema1Error, match="disagree"):
        payload_digest(doc)


@pytest.mark.parametrize("payload", [b"{}", b"[]", b"nope", SIGNED, b'{"schemaVersion":1,"a":NaN}'])
def test_sign_rejects_malformed(payload: bytes):
    with pytest.raises(Schema1Error):
        sign(payload)


def test_sign_rejects_other_curves():
    with pytest.raises(Schema1Error):
        sign(b'{"schemaVersion":1}', ec.generate_private_key(ec.SECP384R1()))


@pytest.mark.parametrize("blobs", [[], [b"nope"], [b'{"header":{}}'], [b'{"header":{"alg":"ES256"},"signature":"x"}']])
def test_merge_rejects_malformed_signature_blobs(blobs: list[bytes]):
    with pytest.raises(Schema1Error):
        merge_stored_signatures(b'{"schemaVersion":1}', blobs)


def test_merge_rejects_a_signature_made_for_another_formatting():
    compact = b'{"schemaVersion":1,"name":"a/b"}'
    pretty = json.dumps(json.loads(compact), indent=3).encode()
    blob = json.dumps(json.loads(sign(pretty))["signatures"][0]).encode()
    with pytest.raises(Schema1Error, match="different formatting"):
        merge_stored_signatures(compact, [blob])

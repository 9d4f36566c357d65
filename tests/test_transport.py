"""The registry transport against a real Distribution registry (plain HTTP, anonymous): ping,
blob upload with a streamed file body, error bodies, Locations, refusals, unreachable hosts.
Helpers here (`blob_file`, `upload`) serve the other test_transport* modules too."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from registry import free_port
from regcarve.sinks.registry import NotARegistry, RegistryRefused, RegistryUnreachable
from regcarve.sinks.registry.transport import (ConnectionSettings, FileSource, RegistryResponse, RetryPolicy,
                                               Transport, add_query)

PLAIN = ConnectionSettings(plain_http=True)
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_file(folder: Path, size: int = 300_000) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    path = folder / digest_of(data)[7:19]
    path.write_bytes(data)
    return path, digest_of(data), data


def pull_push(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


def upload(t: Transport, repo: str, path: Path, digest: str, scopes: tuple[str, ...] | None = None) -> RegistryResponse:
    """Monolithic upload: POST → 202 Location → PUT Location?digest= with the file as body."""
    scopes = scopes or pull_push(repo)
    started = t.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, expect=(202,))
    return t.request("PUT", add_query(started.location(), {"digest": digest}), scopes=scopes,
                     body=FileSource(path), expect=(201,))


def image_manifest(config: tuple[bytes, str], layers: list[tuple[int, str]]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config[0]),
                   "digest": config[1]},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": size, "digest": d}
                   for size, d in layers],
    }).encode()


@pytest.fixture
def transport(registry):
    with Transport(registry.host, settings=PLAIN) as t:
        yield t


def test_ping_anonymous_registry_asks_no_credentials(transport):
    assert transport.ping() is None
    assert transport.counters.requests == {"GET": 1}


def test_blob_head_upload_from_file_then_present(transport, registry, tmp_path):
    path, digest, data = blob_file(tmp_path, 2_000_000)
    missing = transport.request("HEAD", f"/v2/team/web/blobs/{digest}", scopes=("repository:team/web:pull",),
                                expect=(200, 404))
    assert missing.status == 404
    stored = upload(transport, "team/web", path, digest)
    assert stored.headers["Docker-Content-Digest"] == digest
    present = transport.request("HEAD", f"/v2/team/web/blobs/{digest}", expect=(200, 404))
    assert (present.status, present.headers["Content-Length"]) == (200, str(len(data)))
    assert registry.request("GET", f"/v2/team/web/blobs/{digest}")[2] == data
    counters = transport.counters
    assert counters.bytes_sent == len(data) and counters.retries == 0
    assert counters.requests == {"GET": 1, "HEAD": 2, "POST": 1, "PUT": 1}


def test_file_source_slice_sends_only_its_bytes(transport, registry, tmp_path):
    path = tmp_path / "padded"
    body = os.urandom(100_000)
    path.write_bytes(b"x" * 777 + body + b"y" * 333)
    digest = digest_of(body)
    started = transport.request("POST", "/v2/slice/blobs/uploads/", expect=(202,))
    transport.request("PUT", add_query(started.location(), {"digest": digest}),
                      body=FileSource(path, offset=777, length=len(body)), expect=(201,))
    assert registry.request("GET", f"/v2/slice/blobs/{digest}")[2] == body


def test_manifest_put_then_get_is_byte_exact(transport, registry, tmp_path):
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    path = tmp_path / "config"
    path.write_bytes(config)
    upload(transport, "team/app", path, digest_of(config))
    manifest = image_manifest((config, digest_of(config)), [])
    put = transport.request("PUT", "/v2/team/app/manifests/v1", scopes=pull_push("team/app"),
                            headers={"Content-Type": DOCKER_MANIFEST}, body=manifest, expect=(201,))
    assert put.headers["Docker-Content-Digest"] == digest_of(manifest)
    got = transport.request("GET", "/v2/team/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert got.body == manifest and got.headers["Content-Type"] == DOCKER_MANIFEST


def test_error_body_code_and_message_become_the_refusal(transport):
    with pytest.raises(RegistryRefused) as refused:
        transport.request("GET", "/v2/team/web/manifests/nope", scopes=("repository:team/web:pull",))
    e = refused.value
    assert (e.status, e.code, e.method, e.attempts) == (404, "MANIFEST_UNKNOWN", "GET", 1)
    assert e.error_message and e.url.endswith("/v2/team/web/manifests/nope")
    assert str(e).startswith(f"{transport.host}: GET /v2/team/web/manifests/nope: HTTP 404 MANIFEST_UNKNOWN")
    assert transport.counters.retries == 0  # a 4xx is not retried

    with pytest.raises(RegistryRefused) as blob:
        transport.request("GET", f"/v2/team/web/blobs/{digest_of(b'none')}")
    assert blob.value.code == "BLOB_UNKNOWN"


def test_every_error_of_the_body_is_kept(transport):
    """Distribution names each missing blob of a manifest in its own error entry."""
    missing = [digest_of(b"a"), digest_of(b"b")]
    manifest = image_manifest((b"{}", missing[0]), [(1, missing[1])])
    with pytest.raises(RegistryRefused) as refused:
        transport.request("PUT", "/v2/team/broken/manifests/v1", headers={"Content-Type": DOCKER_MANIFEST},
                          body=manifest, expect=(201,))
    e = refused.value
    assert e.status == 400 and e.code == "MANIFEST_BLOB_UNKNOWN"
    assert {err.code for err in e.errors} == {"MANIFEST_BLOB_UNKNOWN"}
    assert {err.detail for err in e.errors} >= set(missing[1:])
    assert len(e.errors) >= 2


def test_a_status_outside_expect_is_refused_even_when_successful(transport):
    with pytest.raises(RegistryRefused) as refused:
        transport.request("POST", "/v2/team/x/blobs/uploads/", expect=(201,))
    assert refused.value.status == 202 and refused.value.code is None


def test_relative_and_absolute_locations_reach_the_same_upload(transport, registry, tmp_path):
    path, digest, data = blob_file(tmp_path)
    started = transport.request("POST", "/v2/team/rel/blobs/uploads/", expect=(202,))
    absolute = started.location()
    assert absolute.startswith(f"http://{registry.host}/v2/team/rel/blobs/uploads/")
    relative = absolute.split(registry.host, 1)[1]  # what registries with relativeurls send
    resolved = RegistryResponse(202, started.headers.__class__({"Location": relative}), b"", started.url).location()
    assert resolved == absolute == transport.resolve(relative)
    status = transport.request("GET", relative, expect=(204,))  # upload status, by the relative form
    assert status.headers["Range"] == "0-0"
    transport.request("PUT", add_query(relative, {"digest": digest}), body=FileSource(path), expect=(201,))
    assert registry.request("GET", f"/v2/team/rel/blobs/{digest}")[2] == data


def test_add_query_appends_to_an_existing_query():
    assert add_query("http://h/v2/r/blobs/uploads/u?_state=a%3D", {"digest": "sha256:ab"}) == \
        "http://h/v2/r/blobs/uploads/u?_state=a%3D&digest=sha256%3Aab"
    assert add_query("/v2/r/blobs/uploads/", {"mount": "sha256:ab", "from": "t/b"}) == \
        "/v2/r/blobs/uploads/?mount=sha256%3Aab&from=t%2Fb"


def test_connection_refused_is_unreachable_quickly_after_bounded_retries():
    port = free_port()  # nothing listens there
    settings = ConnectionSettings(plain_http=True, retry=RetryPolicy(attempts=3, first_delay=0.05))
    t = Transport(f"127.0.0.1:{port}", settings=settings)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as failed:
        t.request("HEAD", "/v2/x/blobs/" + digest_of(b""), expect=(200, 404))
    assert time.monotonic() - started < 2
    assert failed.value.attempts == 3 and t.counters.retries == 2
    assert str(failed.value).startswith(f"127.0.0.1:{port}: GET /v2/: cannot connect")
    assert "Connection refused" in str(failed.value) and "\n" not in str(failed.value)


def test_unknown_host_name_is_not_retried():
    t = Transport("registry.invalid:5000", settings=ConnectionSettings(plain_http=True))
    with pytest.raises(RegistryUnreachable, match=r"^registry\.invalid:5000: GET /v2/: host name not found"):
        t.ping()
    assert t.counters.retries == 0


def test_host_must_be_host_and_port():
    for bad in ("https://r.example", "r.example/path", "", "r.example:port"):
        with pytest.raises(ValueError, match="HOST"):
            Transport(bad)
    assert Transport("[::1]:5000").base_url == "https://[::1]:5000"


def test_not_a_registry(registry):
    """A web server answering 404 or an HTML page to /v2/ is not taken for a registry."""
    with FaultProxy(registry.host) as proxy:
        proxy.fail("GET", "^/v2/$", 404, times=None, body=b"not found")
        with pytest.raises(NotARegistry, match=r": GET /v2/ answered HTTP 404: not a registry's API$"):
            Transport(proxy.host, settings=PLAIN).ping()
        proxy.clear_rules()
        proxy.fail("GET", "^/v2/$", 200, times=None, body=b"<!DOCTYPE html><html>portal</html>")
        with pytest.raises(NotARegistry, match="HTTP 200"):
            Transport(proxy.host, settings=PLAIN).ping()

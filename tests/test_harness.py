"""The push-test harness proven with real clients: skopeo, urllib, http.client, urllib3, openssl.

Each piece (CertAuthority, TokenIssuer, LiveRegistry's options, FaultProxy) is shown doing what
push tests will rely on, against Debian's Distribution 2.8 which is the judge of certificates,
passwords and tokens. Every assertion has a counterpart that would fail if the piece did not
work (a wrong password, another key, a registry without the option).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
import urllib3

from certs import CertAuthority
from faultproxy import FaultProxy
from registry import LiveRegistry
from tinyimage import DirImage, write_dir_image
from tokenissuer import Grant, TokenIssuer, decode_jwt, new_signing_key

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


def push(image: DirImage, dest: str, *flags: str) -> subprocess.CompletedProcess:
    return skopeo("copy", "--quiet", *flags, image.ref, f"docker://{dest}")


def call(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, Message, bytes]:
    """(status, headers looked up case-insensitively, body): Go sends `Www-Authenticate`."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def error_codes(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("harness")


@pytest.fixture(scope="module")
def ca(work) -> CertAuthority:
    return CertAuthority(work / "ca")


@pytest.fixture(scope="module")
def image(work) -> DirImage:
    return write_dir_image(work / "image", [{"etc/motd": b"carved\n"}, {"app/data": bytes(range(256)) * 64}])


# --- CertAuthority ------------------------------------------------------------------------------

def test_ca_certificates_verify_with_openssl(ca: CertAuthority):
    leaf = ca.issue("openssl-check")
    out = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile", str(ca.ca_pem), str(leaf.cert)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(leaf.cert)],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert sorted(p.name for p in ca.cert_dir.iterdir()) == ["ca.crt"]  # usable as --dest-cert-dir
    other = CertAuthority(ca.folder.parent / "other-ca")
    wrong = subprocess.run(["openssl", "verify", "-CAfile", str(other.ca_pem), str(leaf.cert)], capture_output=True)
    assert wrong.returncode != 0


# --- TLS + htpasswd -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_registry(ca):
    with LiveRegistry(tls=ca, htpasswd={"alice": "wonderland"}) as reg:
        yield reg


def test_tls_htpasswd_registry_takes_skopeo_push(tls_registry: LiveRegistry, ca, image):
    assert tls_registry.scheme == "https" and tls_registry.url.startswith("https://127.0.0.1:")
    creds = ["--dest-cert-dir", str(ca.cert_dir), "--dest-creds", "alice:wonderland"]
    run = push(image, f"{tls_registry.host}/team/app:1", *creds)
    assert run.returncode == 0, run.stderr
    run = push(image, f"localhost:{tls_registry.port}/team/app:2", *creds)  # the DNS SAN
    assert run.returncode == 0, run.stderr
    assert tls_registry.tags("team/app") == ["1", "2"]
    assert tls_registry.catalog() == ["team/app"]
    assert tls_registry.manifest("team/app", "1")[0] == image.manifest_digest


def test_tls_htpasswd_registry_refuses_a_wrong_password(tls_registry: LiveRegistry, ca, image):
    run = push(image, f"{tls_registry.host}/team/app:bad", "--dest-cert-dir", str(ca.cert_dir),
               "--dest-creds", "alice:queen-of-hearts")
    assert run.returncode != 0 and "unauthorized" in run.stderr.lower()
    status, headers, _ = call("GET", f"{tls_registry.url}/v2/", context=ca.client_context())
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    status, _, _ = call("GET", f"{tls_registry.url}/v2/", context=ca.client_context(),
                        headers={"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="})  # alice:wonderland
    assert status == 200
    assert "bad" not in tls_registry.tags("team/app")


def test_tls_registry_is_refused_without_the_ca(tls_registry: LiveRegistry, image):
    run = push(image, f"{tls_registry.host}/team/app:noca", "--dest-creds", "alice:wonderland")
    assert run.returncode != 0 and "certificate signed by unknown authority" in run.stderr
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(f"{tls_registry.url}/v2/", timeout=10, context=ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


# --- token auth ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer(work):
    with TokenIssuer(work / "token", {"bob": "builder", "reader": "glasses"},
                     permissions={"reader": {"pull"}}) as tokens:
        yield tokens


def test_token_registry_takes_skopeo_push_and_the_issuer_logs_the_scopes(token_registry, issuer, image):
    issuer.clear()
    run = push(image, f"{token_registry.host}/team/app:1", "--dest-tls-verify=false", "--dest-creds", "bob:builder")
    assert run.returncode == 0, run.stderr
    assert token_registry.tags("team/app") == ["1"]  # the harness's own token works too
    asked = issuer.requests(user="bob")
    assert asked and all(r.outcome == "issued" and r.service == issuer.service for r in asked)
    assert "repository:team/app:pull,push" in {s for r in asked for s in r.scopes}
    assert "repository:team/app:pull,push" in {s for r in asked for s in r.granted}
    assert issuer.issued("bob") == len(asked) and not issuer.requests(user="regcarve-harness")
    assert issuer.requests(harness=True, user="regcarve-harness")  # kept apart, not lost


def test_issued_token_has_the_claims_distribution_checks(issuer):
    status, _, body = call("GET", f"{issuer.realm}?service={issuer.service}&scope=repository:a/b:pull"
                                  "&scope=repository:c:pull,push", headers={"Authorization": "Basic Ym9iOmJ1aWxkZXI="})
    doc = json.loads(body)
    assert status == 200 and doc["token"] == doc["access_token"] and doc["expires_in"] == issuer.expires_in
    header, claims = decode_jwt(doc["token"])
    assert header == {"typ": "JWT", "alg": "ES256", "kid": issuer.key_id}
    assert (claims["iss"], claims["aud"], claims["sub"]) == (issuer.issuer, issuer.service, "bob")
    assert claims["exp"] - claims["iat"] == issuer.expires_in
    assert claims["access"] == [{"type": "repository", "name": "a/b", "actions": ["pull"]},
                                {"type": "repository", "name": "c", "actions": ["pull", "push"]}]
    assert len(issuer.key_id.split(":")) == 12


def bearer_get(reg: LiveRegistry, token: str) -> tuple[int, str]:
    status, headers, _ = call("GET", f"{reg.url}/v2/team/app/tags/list", headers={"Authorization": f"Bearer {token}"})
    return status, headers.get("WWW-Authenticate", "")


PULL = [Grant.parse("repository:team/app:pull")]


@pytest.mark.parametrize("bad", [
    pytest.param(lambda i: i.mint("bob", PULL, key=new_signing_key()), id="another-key"),
    pytest.param(lambda i: i.mint("bob", PULL, key=new_signing_key(), kid=i.key_id), id="another-key-trusted-kid"),
    pytest.param(lambda i: i.mint("bob", PULL, key=new_signing_key("RS256")), id="another-rsa-key"),
    pytest.param(lambda i: i.mint("bob", PULL, issuer="someone-else"), id="wrong-iss"),
    pytest.param(lambda i: i.mint("bob", PULL, audience="another-service"), id="wrong-aud"),
    pytest.param(lambda i: i.mint("bob", PULL, lifetime=-90), id="expired-beyond-leeway"),
    pytest.param(lambda i: i.mint("bob", PULL, not_before=int(time.time()) + 90), id="not-yet-valid"),
])
def test_registry_verifies_the_token_itself(token_registry, issuer, bad):
    assert bearer_get(token_registry, issuer.mint("bob", PULL)) == (200, "")  # the control
    status, challenge = bearer_get(token_registry, bad(issuer))
    assert status == 401 and 'error="invalid_token"' in challenge


def test_registry_allows_60s_of_clock_leeway(token_registry, issuer):
    """Distribution 2.8 adds 60 s to exp: a short expires_in alone does not make the registry
    refuse a token, so token-refresh tests must count fetches at the issuer."""
    assert bearer_get(token_registry, issuer.mint("bob", PULL, lifetime=-30))[0] == 200


def test_read_only_user_cannot_push(token_registry, issuer, image):
    issuer.clear()
    run = push(image, f"{token_registry.host}/team/ro:1", "--dest-tls-verify=false", "--dest-creds", "reader:glasses")
    assert run.returncode != 0
    asked = issuer.requests(user="reader")
    assert asked and all(s.endswith(":pull") for r in asked for s in r.granted)
    reader = issuer.mint("reader", [issuer.grant("reader", "repository:team/ro:pull,push")])
    status, headers, _ = call("POST", f"{token_registry.url}/v2/team/ro/blobs/uploads/", body=b"",
                              headers={"Authorization": f"Bearer {reader}"})
    assert status == 401 and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert token_registry.tags("team/ro") == []


def test_harness_client_follows_the_registry_challenge(token_registry, issuer):
    """A cross-repository mount needs pull on `from` too, more than LiveRegistry guesses from the
    path: it must ask the issuer for the scopes the registry's challenge names."""
    blob = b"mount me"
    status, headers, _ = token_registry.request("POST", "/v2/team/src/blobs/uploads/", body=b"")
    location = headers["Location"]
    status, _, body = token_registry.request("PUT", f"{location}&digest={sha256(blob)}", body=blob,
                                             headers={"Content-Type": "application/octet-stream"})
    assert status == 201, body
    status, _, body = token_registry.request(
        "POST", f"/v2/team/dst/blobs/uploads/?mount={sha256(blob)}&from=team/src", body=b"")
    assert status == 201, body
    asked = {s for r in issuer.requests(harness=True, user="regcarve-harness") for s in r.scopes}
    assert "repository:team/src:pull" in asked


def test_issuer_refuses_a_wrong_password_and_never_logs_it(token_registry, issuer, image):
    issuer.clear()
    run = push(image, f"{token_registry.host}/team/app:x", "--dest-tls-verify=false", "--dest-creds", "bob:b0b")
    assert run.returncode != 0 and "invalid username or password" in run.stderr
    status, headers, body = call("GET", f"{issuer.realm}?service={issuer.service}",
                                 headers={"Authorization": "Basic Ym9iOmIwYg=="})  # bob:b0b
    assert status == 401 and error_codes(body) == ["UNAUTHORIZED"] and headers["WWW-Authenticate"].startswith("Basic")
    assert {r.outcome for r in issuer.requests()} == {"bad-credentials"}
    assert "b0b" not in repr(issuer.log)


def test_anonymous_gets_no_access_or_a_401(work):
    with TokenIssuer(work / "anon", {"u": "p"}, expires_in=7) as open_issuer:
        status, _, body = call("GET", f"{open_issuer.realm}?service={open_issuer.service}&scope=repository:x:pull")
        doc = json.loads(body)
        assert status == 200 and doc["expires_in"] == 7
        assert decode_jwt(doc["token"])[1]["access"] == []
        assert open_issuer.requests()[0].user is None and open_issuer.requests()[0].granted == ()
    with TokenIssuer(work / "closed", {"u": "p"}, refuse_anonymous=True) as closed:
        assert call("GET", f"{closed.realm}?service={closed.service}")[0] == 401
        assert closed.requests()[0].outcome == "anonymous-refused"


def test_token_auth_over_tls_end_to_end(work, ca, image):
    """HTTPS registry, HTTPS realm (RS256 this time): skopeo trusts both through --dest-cert-dir."""
    with TokenIssuer(work / "tls-token", {"bob": "builder"}, tls=ca, algorithm="RS256") as tokens, \
            LiveRegistry(tls=ca, token=tokens) as reg:
        assert tokens.realm.startswith("https://")
        run = push(image, f"{reg.host}/secure/app:1", "--dest-cert-dir", str(ca.cert_dir), "--dest-creds", "bob:builder")
        assert run.returncode == 0, run.stderr
        assert reg.tags("secure/app") == ["1"] and tokens.issued("bob") >= 1
        assert decode_jwt(tokens.mint("bob", []))[0]["alg"] == "RS256"


# --- schema1 and foreign URLs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema1_image(work, image) -> Path:
    run = skopeo("copy", "--quiet", "--format", "v2s1", image.ref, f"dir:{work / 'schema1'}")
    assert run.returncode == 0, run.stderr
    return work / "schema1"


def test_registry_without_schema1_refuses_a_schema1_push(schema1_image, image):
    with LiveRegistry() as with_s1, LiveRegistry(schema1=False) as without:
        assert push(image, f"{without.host}/modern/app:1", "--dest-tls-verify=false").returncode == 0
        ok = skopeo("copy", "--quiet", "--dest-tls-verify=false", f"dir:{schema1_image}",
                    f"docker://{with_s1.host}/legacy/app:1")
        assert ok.returncode == 0, ok.stderr
        refused = skopeo("copy", "--quiet", "--dest-tls-verify=false", f"dir:{schema1_image}",
                         f"docker://{without.host}/legacy/app:1")
        assert refused.returncode != 0 and "500" in refused.stderr
        # the same signed bytes, by hand: the blobs are there (skopeo pushed them before failing)
        signed = with_s1.manifest("legacy/app", "1")[2]
        put = {"body": signed, "headers": {"Content-Type": SCHEMA1_SIGNED}}
        assert with_s1.request("PUT", "/v2/legacy/app/manifests/again", **put)[0] == 201
        status, _, body = without.request("PUT", "/v2/legacy/app/manifests/1", **put)
        assert (status, error_codes(body)) == (500, ["UNKNOWN"])
        assert without.tags("legacy/app") == [] and without.tags("modern/app") == ["1"]


def foreign_layer_manifest(reg: LiveRegistry) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "windows",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(b"not here")]}}).encode()
    status, headers, _ = reg.request("POST", "/v2/win/blobs/uploads/", body=b"")
    location = headers["Location"]
    status, _, body = reg.request("PUT", f"{location}{'&' if '?' in location else '?'}digest={sha256(config)}",
                                  body=config, headers={"Content-Type": "application/octet-stream"})
    assert status == 201, body
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(config), "digest": sha256(config)},
                       "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                                   "size": 8, "digest": sha256(b"not here"),
                                   "urls": ["https://foreign-layers.invalid/layer"]}]}).encode()


@pytest.mark.parametrize("allowed, expected", [(True, 201), (False, 500)])
def test_foreign_urls_option(allowed, expected):
    with LiveRegistry(foreign_urls=allowed) as reg:
        status, _, body = reg.request("PUT", "/v2/win/manifests/1", body=foreign_layer_manifest(reg),
                                      headers={"Content-Type": DOCKER_MANIFEST})
        assert status == expected, body
        assert reg.tags("win") == (["1"] if allowed else [])


# --- FaultProxy ---------------------------------------------------------------------------------

def test_proxy_forwards_a_skopeo_push_and_counts_it(proxy, registry, image):
    run = push(image, f"{proxy.host}/via/proxy:1", "--dest-tls-verify=false")
    assert run.returncode == 0, run.stderr
    assert registry.tags("via/proxy") == ["1"]
    assert proxy.count("PUT", r"/manifests/") == 1
    # Location URLs came back pointing at the proxy: every upload step went through it
    blobs = [image.config_digest, *image.layer_digests]
    assert sorted(u.digest for u in proxy.blob_uploads()) == sorted(blobs)
    assert all(proxy.uploads_with_body(d) == 1 for d in blobs)
    assert all(u.status == 201 for u in proxy.blob_uploads())
    assert sum(u.body_bytes for u in proxy.blob_uploads()) == sum(
        (image.path / d.split(":")[1]).stat().st_size for d in blobs)
    proxy.clear()
    assert push(image, f"{proxy.host}/via/proxy:2", "--dest-tls-verify=false").returncode == 0
    assert proxy.count("PATCH") == 0 and proxy.count("HEAD", r"/blobs/", status=200) >= 3  # blobs known


def test_proxy_answers_503_on_the_chosen_request(proxy):
    rule = proxy.fail("GET", r"^/v2/$", 503, retry_after="2", first=2, times=1)
    answers = [call("GET", f"{proxy.url}/v2/") for _ in range(3)]
    assert [a[0] for a in answers] == [200, 503, 200]
    assert answers[1][1]["Retry-After"] == "2" and error_codes(answers[1][2]) == ["UNAVAILABLE"]
    assert (rule.matched, rule.fired) == (3, 1)
    assert [e.action for e in proxy.requests("GET", r"^/v2/$")] == ["forward", "status", "forward"]


def test_proxy_429_on_manifest_put_fails_skopeo_once(proxy, registry, image):
    proxy.fail("PUT", r"/manifests/", 429, retry_after="1")
    run = push(image, f"{proxy.host}/via/limited:1", "--dest-tls-verify=false")
    assert run.returncode != 0 and "toomanyrequests" in run.stderr
    assert proxy.count("PUT", r"/manifests/", status=429) == 1 and registry.tags("via/limited") == []
    run = push(image, f"{proxy.host}/via/limited:1", "--dest-tls-verify=false")  # the rule ran out
    assert run.returncode == 0, run.stderr
    assert registry.tags("via/limited") == ["1"]


def put_blob(location: str, body: bytes) -> None:
    """Closing PUT with the body. The Content-Type matters: Distribution reads `digest` with
    Go's FormValue, which eats a body sent as urllib's default application/x-www-form-urlencoded."""
    urllib.request.urlopen(urllib.request.Request(f"{location}&digest={sha256(body)}", data=body, method="PUT",
                                                  headers={"Content-Type": "application/octet-stream"}))


def test_proxy_drops_connections(proxy, registry):
    proxy.drop("GET", r"^/v2/$")
    conn = http.client.HTTPConnection(proxy.host, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.request("GET", "/v2/")
        conn.getresponse()
    conn.close()
    assert call("GET", f"{proxy.url}/v2/")[0] == 200  # only the first one

    body = b"x" * 100_000
    proxy.drop("PUT", r"/blobs/uploads/", after="body")
    location = call("POST", f"{proxy.url}/v2/drop/me/blobs/uploads/", body=b"")[1]["Location"]
    assert location.startswith(proxy.url)  # Host was forwarded unchanged
    with pytest.raises((urllib.error.URLError, http.client.RemoteDisconnected, ConnectionResetError)):
        put_blob(location, body)
    dropped = proxy.requests("PUT", r"/blobs/uploads/")[-1]
    assert (dropped.status, dropped.request_bytes, dropped.action) == (None, len(body), "drop_after_body")
    assert registry.request("HEAD", f"/v2/drop/me/blobs/{sha256(body)}")[0] == 404

    proxy.drop("PUT", r"/blobs/uploads/", after="forward")  # the registry acts, the client never hears
    location = call("POST", f"{proxy.url}/v2/drop/me/blobs/uploads/", body=b"")[1]["Location"]
    with pytest.raises((urllib.error.URLError, http.client.RemoteDisconnected, ConnectionResetError)):
        put_blob(location, body)
    assert registry.request("HEAD", f"/v2/drop/me/blobs/{sha256(body)}")[0] == 200


def test_proxy_stalls(proxy):
    proxy.stall("GET", r"^/v2/$", 1.0)
    started = time.monotonic()
    assert call("GET", f"{proxy.url}/v2/")[0] == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    assert call("GET", f"{proxy.url}/v2/")[0] == 200 and time.monotonic() - started < 1.0


def test_proxy_keeps_connections_alive_and_streams_chunked_bodies(proxy, registry):
    """A pooled client (urllib3) runs a whole chunked upload over one kept-alive connection."""
    data = bytes(range(256)) * 4096  # 1 MiB
    pool = urllib3.HTTPConnectionPool("127.0.0.1", proxy.port, maxsize=1, block=True, retries=False)
    try:
        r = pool.request("POST", "/v2/keep/alive/blobs/uploads/", body=b"")
        location = r.headers["Location"]
        assert r.status == 202 and location.startswith(proxy.url)
        pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
        r = pool.urlopen("PATCH", location, body=pieces, chunked=True,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status == 202, r.data
        r = pool.request("PUT", f"{r.headers['Location']}&digest={sha256(data)}", body=b"")
        assert r.status == 201, r.data
        r = pool.request("HEAD", f"/v2/keep/alive/blobs/{sha256(data)}")
        assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
        r = pool.request("GET", f"/v2/keep/alive/blobs/{sha256(data)}")
        assert r.status == 200 and r.data == data
    finally:
        pool.close()
    log = proxy.requests()
    assert len(log) == 5 and len({e.conn for e in log}) == 1
    patch = proxy.requests("PATCH")[0]
    assert patch.chunked and patch.request_bytes == len(data)
    assert proxy.uploads_with_body(sha256(data)) == 1
    assert log[-1].response_bytes == len(data)


def test_proxy_stops_with_idle_client_connections_open(registry):
    """stop() must not hang on a client that keeps an idle connection, nor leave threads."""
    before = threading.active_count()
    p = FaultProxy(registry.host).start()
    conn = http.client.HTTPConnection(p.host, timeout=10)
    conn.request("GET", "/v2/")
    assert conn.getresponse().read() == b"{}"
    started = time.monotonic()
    p.stop()
    assert time.monotonic() - started < 5 and threading.active_count() == before
    conn.close()

"""The registry transport against registries that want TLS, Basic (htpasswd) or Bearer (token)
authentication: the harness's CertAuthority, TokenIssuer and LiveRegistry options."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from certs import CertAuthority
from registry import LiveRegistry
from test_transport import blob_file, digest_of, pull_push, upload
from tokenissuer import TokenIssuer
from regcarve.sinks.registry import (AccessDenied, AuthenticationFailed, NotARegistry, RegistryError,
                                     RegistryUnreachable, TLSFailure)
from regcarve.sinks.registry.auth import Authorizer, parse_challenges, token_from_response
from regcarve.sinks.registry.credentials import Credentials
from regcarve.sinks.registry.transport import ConnectionSettings, RetryPolicy, Transport, add_query

PASSWORD = "Wonder-land:42"  # a colon too: it must survive Basic encoding
PLAIN = ConnectionSettings(plain_http=True)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("ca"))


# --- TLS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_registry(ca):
    with LiveRegistry(tls=ca) as reg:
        yield reg


def test_untrusted_certificate_is_one_clear_line(tls_registry):
    with pytest.raises(TLSFailure) as failed:
        Transport(tls_registry.host).ping()
    message = str(failed.value)
    assert message.startswith(f"{tls_registry.host}: TLS certificate not trusted (")
    assert "--ca-cert FILE" in message and "--insecure" in message and "\n" not in message


def test_ca_cert_makes_it_trusted_and_uploads_work(tls_registry, ca, tmp_path):
    with Transport(tls_registry.host, settings=ConnectionSettings(ca_cert=ca.ca_pem)) as t:
        assert t.ping() is None and t.base_url == f"https://{tls_registry.host}"
        path, digest, data = blob_file(tmp_path)
        upload(t, "tls/blob", path, digest)
    assert tls_registry.request("GET", f"/v2/tls/blob/blobs/{digest}")[2] == data


def test_insecure_skips_verification(tls_registry):
    assert Transport(tls_registry.host, settings=ConnectionSettings(tls_verify=False)).ping() is None


def test_wrong_protocol_either_way(tls_registry):
    with pytest.raises(NotARegistry, match="it speaks HTTPS: leave out --plain-http"):
        Transport(tls_registry.host, settings=PLAIN).ping()
    with LiveRegistry() as plain:
        with pytest.raises(TLSFailure, match=f"^{plain.host}: answers plain HTTP, not TLS"):
            Transport(plain.host).ping()


def test_unusable_ca_file(tls_registry, tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate")
    for path in (tmp_path / "missing.pem", tmp_path / "junk.pem"):
        with pytest.raises(TLSFailure, match=f"cannot use --ca-cert {path}"):
            Transport(tls_registry.host, settings=ConnectionSettings(ca_cert=path))


# --- Basic (htpasswd) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def basic_registry(ca):
    with LiveRegistry(tls=ca, htpasswd={"alice": PASSWORD}) as reg:
        yield reg


def test_basic_good_credentials(basic_registry, ca, tmp_path):
    settings = ConnectionSettings(ca_cert=ca.ca_pem)
    with Transport(basic_registry.host, Credentials("alice", PASSWORD), settings) as t:
        assert t.ping().scheme == "basic"
        t.check_credentials()
        path, digest, data = blob_file(tmp_path)
        upload(t, "basic/web", path, digest)
    assert basic_registry.request("GET", f"/v2/basic/web/blobs/{digest}")[2] == data


def test_basic_wrong_password_stops_before_anything_is_sent(basic_registry, ca):
    t = Transport(basic_registry.host, Credentials("alice", "wrong"), ConnectionSettings(ca_cert=ca.ca_pem))
    with pytest.raises(AuthenticationFailed) as failed:
        t.check_credentials()
    assert str(failed.value) == f"{basic_registry.host}: user 'alice' was refused (HTTP 401): wrong user name or password"
    assert t.counters.requests == {"GET": 2}  # the ping, the proof


def test_basic_without_credentials(basic_registry, ca):
    t = Transport(basic_registry.host, None, ConnectionSettings(ca_cert=ca.ca_pem))
    t.check_credentials()  # nothing to prove
    with pytest.raises(AuthenticationFailed, match="needs credentials and none were given"):
        t.request("HEAD", f"/v2/basic/web/blobs/{digest_of(b'')}", expect=(200, 404))


# --- Bearer (token) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with TokenIssuer(tmp_path_factory.mktemp("tokens"), {"alice": PASSWORD, "reader": PASSWORD},
                     permissions={"reader": {"pull"}}) as tokens:
        yield tokens


@pytest.fixture
def tokens(issuer) -> TokenIssuer:
    issuer.clear()
    issuer.expires_in, issuer.claim_lifetime = 300, None
    yield issuer
    issuer.expires_in, issuer.claim_lifetime = 300, None


def alice(registry: LiveRegistry, **settings) -> Transport:
    return Transport(registry.host, Credentials("alice", PASSWORD), ConnectionSettings(plain_http=True, **settings))


def test_token_flow_with_good_credentials(token_registry, tokens, tmp_path):
    with alice(token_registry) as t:
        challenge = t.ping()
        assert (challenge.scheme, challenge.realm, challenge.service) == ("bearer", tokens.realm, tokens.service)
        t.check_credentials("repository:tok/web:pull,push")
        path, digest, data = blob_file(tmp_path)
        upload(t, "tok/web", path, digest)  # the same scope set: the token is reused
        assert t.counters.tokens_fetched == 1 == tokens.issued("alice")
    [asked] = tokens.requests()
    assert asked.scopes == ("repository:tok/web:pull,push",) and asked.service == tokens.service
    assert token_registry.request("GET", f"/v2/tok/web/blobs/{digest}")[2] == data


def test_token_wrong_password_fails_before_anything(token_registry, tokens):
    t = Transport(token_registry.host, Credentials("alice", "nope"), PLAIN)
    with pytest.raises(AuthenticationFailed) as failed:
        t.check_credentials("repository:tok/web:pull,push")
    assert str(failed.value) == f"{token_registry.host}: user 'alice' refused by the token service " \
                                f"127.0.0.1:{tokens.port}/token (HTTP 401)"
    assert t.counters.requests == {"GET": 1}  # only the ping reached the registry
    assert tokens.requests(outcome="bad-credentials")[0].user == "alice"


def test_short_lived_token_is_refreshed_before_it_expires(token_registry, tokens):
    tokens.expires_in = 2
    head = f"/v2/tok/short/blobs/{digest_of(b'x')}"
    with alice(token_registry) as t:
        for _ in range(3):
            t.request("HEAD", head, scopes=("repository:tok/short:pull",), expect=(200, 404))
        assert tokens.issued("alice") == 1
        time.sleep(1.9)  # past 90 % of the announced life
        t.request("HEAD", head, scopes=("repository:tok/short:pull",), expect=(200, 404))
        assert tokens.issued("alice") == 2 == t.counters.tokens_fetched


def test_a_refused_token_is_fetched_again_once(token_registry, tokens):
    """The issuer announces 300 s but signs tokens that expired 2 minutes ago: the registry
    refuses them. One fresh token is tried; if it is refused too, AccessDenied."""
    tokens.claim_lifetime = -120
    head = f"/v2/tok/stale/blobs/{digest_of(b'y')}"
    with alice(token_registry) as t:
        with pytest.raises(AccessDenied) as denied:
            t.request("HEAD", head, scopes=("repository:tok/stale:pull",), expect=(200, 404))
        assert tokens.issued("alice") == 2 and denied.value.status == 401
        assert "for user 'alice' (scopes repository:tok/stale:pull)" in str(denied.value)
        tokens.claim_lifetime = None  # the cached token is still a stale one: refused, renewed
        assert t.request("HEAD", head, scopes=("repository:tok/stale:pull",), expect=(200, 404)).status == 404
        assert tokens.issued("alice") == 3


def test_scopes_named_by_the_challenge_are_added(token_registry, tokens):
    """Asking too little (pull for a POST) costs one 401: its challenge names pull,push."""
    with alice(token_registry) as t:
        t.request("POST", "/v2/tok/more/blobs/uploads/", scopes=("repository:tok/more:pull",), expect=(202,))
        widened, asked = tokens.requests()[-1].scopes
        # Distribution names the actions in map order: push,pull or pull,push
        assert widened.startswith("repository:tok/more:") and set(widened.rsplit(":", 1)[1].split(",")) == {"pull", "push"}
        assert asked == "repository:tok/more:pull"
        t.request("POST", "/v2/tok/more/blobs/uploads/", scopes=("repository:tok/more:pull",), expect=(202,))
        assert tokens.issued("alice") == 2  # the widened token is kept for that scope set


def test_concurrent_threads_fetch_one_token_per_scope_set(token_registry, tokens):
    sets = [("repository:tok/c1:pull",), ("repository:tok/c2:pull,push", "repository:tok/c1:pull")]
    start = threading.Barrier(16)
    failures: list[BaseException] = []
    with alice(token_registry, connections=16) as t:
        def worker(i: int) -> None:
            start.wait()
            try:
                for _ in range(5):
                    t.request("HEAD", f"/v2/tok/c1/blobs/{digest_of(b'c')}", scopes=sets[i % 2], expect=(200, 404))
            except BaseException as e:  # pragma: no cover - reported below
                failures.append(e)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        assert tokens.issued("alice") == 2 == t.counters.tokens_fetched
        assert t.counters.requests["HEAD"] == 80
    assert sorted(r.scopes for r in tokens.requests()) == sorted(sets)


def test_cross_repository_mount_with_a_multi_scope_token(token_registry, tokens, tmp_path):
    path, digest, _ = blob_file(tmp_path)
    with alice(token_registry) as t:
        upload(t, "tok/base", path, digest)
        scopes = ("repository:tok/app:pull,push", "repository:tok/base:pull")
        mounted = t.request("POST", add_query("/v2/tok/app/blobs/uploads/", {"mount": digest, "from": "tok/base"}),
                            scopes=scopes, expect=(201, 202))
        assert mounted.status == 201 and mounted.headers["Docker-Content-Digest"] == digest
    assert tokens.requests()[-1].granted == scopes
    assert token_registry.request("HEAD", f"/v2/tok/app/blobs/{digest}")[0] == 200


def test_authenticated_but_not_permitted_is_access_denied(token_registry, tokens):
    reader = Transport(token_registry.host, Credentials("reader", PASSWORD), PLAIN)
    reader.check_credentials("repository:tok/ro:pull,push")  # the password is right
    with pytest.raises(AccessDenied) as denied:
        reader.request("POST", "/v2/tok/ro/blobs/uploads/", scopes=pull_push("tok/ro"), expect=(202,))
    assert denied.value.status == 401 and denied.value.code == "UNAUTHORIZED"
    assert str(denied.value).startswith(f"{token_registry.host}: POST /v2/tok/ro/blobs/uploads/: HTTP 401 UNAUTHORIZED")


def test_anonymous_on_a_token_registry_needs_credentials(token_registry, tokens):
    t = Transport(token_registry.host, None, PLAIN)
    with pytest.raises(AuthenticationFailed, match="needs credentials and none were given"):
        t.request("HEAD", f"/v2/tok/web/blobs/{digest_of(b'')}", scopes=("repository:tok/web:pull",),
                  expect=(200, 404))


def test_password_never_goes_to_a_plain_http_token_service_of_a_tls_registry(issuer, ca):
    with LiveRegistry(tls=ca, token=issuer) as reg:
        t = Transport(reg.host, Credentials("alice", PASSWORD), ConnectionSettings(ca_cert=ca.ca_pem))
        with pytest.raises(AuthenticationFailed, match="is plain HTTP; the password is not sent there"):
            t.check_credentials("repository:x/y:pull")
        assert issuer.requests(user="alice") == []


def test_tls_registry_and_tls_token_service(ca, tmp_path):
    with TokenIssuer(tmp_path / "tls-tokens", {"alice": PASSWORD}, tls=ca, algorithm="RS256") as issuer, \
            LiveRegistry(tls=ca, token=issuer) as reg:
        with Transport(reg.host, Credentials("alice", PASSWORD), ConnectionSettings(ca_cert=ca.ca_pem)) as t:
            t.check_credentials("repository:tls/web:pull,push")
            path, digest, data = blob_file(tmp_path)
            upload(t, "tls/web", path, digest)
        assert reg.request("GET", f"/v2/tls/web/blobs/{digest}")[2] == data
        assert issuer.issued("alice") == 1


def test_an_unreachable_token_service_is_named(tmp_path):
    issuer = TokenIssuer(tmp_path / "gone", {"alice": PASSWORD}).start()
    with LiveRegistry(token=issuer) as reg:
        issuer.stop()
        fast = ConnectionSettings(plain_http=True, retry=RetryPolicy(attempts=2, first_delay=0.01))
        with pytest.raises(RegistryUnreachable) as failed:
            Transport(reg.host, Credentials("alice", PASSWORD), fast).check_credentials("repository:a/b:pull")
    assert str(failed.value).startswith(f"{reg.host}: GET 127.0.0.1:{issuer.port}/token: cannot connect")


def test_harbor_answers_a_refused_token_with_basic():
    """Harbor challenges any request that carried credentials with `Basic realm="harbor"`
    (src/server/middleware/v2auth): with a bearer challenge learned, that means "fetch again"."""
    fetched = []

    def fetch(challenge, scopes):
        fetched.append(scopes)
        return token_from_response(f'{{"token": "t{len(fetched)}"}}'.encode(), scopes, time.monotonic())

    auth = Authorizer(Credentials("u", "p"), fetch)
    auth.learn(parse_challenges('Bearer realm="https://h/service/token",service="harbor-registry"')[0])
    scopes = ("repository:lib/a:pull,push",)
    assert auth.authorization(scopes) == "Bearer t1"
    harbor = parse_challenges('Basic realm="harbor"')
    assert auth.retry_after_unauthorized(scopes, "Bearer t1", harbor)
    assert auth.authorization(scopes) == "Bearer t2" and len(fetched) == 2
    # Basic credentials refused: nothing better to send
    assert not auth.retry_after_unauthorized(scopes, Credentials("u", "p").basic_authorization(), harbor)
    # a registry that let the ping through anonymously and challenges later: Basic is adopted
    late = Authorizer(Credentials("u", "p"), fetch)
    assert late.authorization(scopes) is None
    assert late.retry_after_unauthorized(scopes, None, harbor)
    assert late.authorization(scopes) == Credentials("u", "p").basic_authorization()


def test_no_secret_in_errors_reprs_or_logs(token_registry, basic_registry, tokens, ca, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    good = alice(token_registry)
    good.check_credentials("repository:tok/s:pull,push")
    token = good._auth.token(("repository:tok/s:pull,push",)).value
    seen += [repr(good), str(good.counters), repr(good._auth.token(("repository:tok/s:pull,push",)))]
    attempts = [
        lambda: Transport(token_registry.host, Credentials("alice", PASSWORD + "x"), PLAIN).check_credentials("a:b:c"),
        lambda: Transport(basic_registry.host, Credentials("alice", PASSWORD + "x"),
                          ConnectionSettings(ca_cert=ca.ca_pem)).check_credentials(),
        lambda: Transport(token_registry.host, Credentials("reader", PASSWORD), PLAIN).request(
            "PUT", "/v2/tok/s/manifests/v1", scopes=pull_push("tok/s"), body=b"{}", expect=(201,)),
        lambda: good.request("PUT", "/v2/tok/s/manifests/v1", scopes=pull_push("tok/s"), body=b"{}", expect=(201,)),
    ]
    for attempt in attempts:
        with pytest.raises(RegistryError) as failed:
            attempt()
        seen += [str(failed.value), repr(failed.value), repr(failed.value.__dict__)]
    text = "\n".join(seen + [caplog.text])
    assert PASSWORD not in text and token not in text and "Authorization" not in text
    assert "Basic " not in text.replace("Basic realm", "")

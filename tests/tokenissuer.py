"""A Docker/Distribution token server for tests, run in a thread of the test process.

Why in-process: tests must see every token request (who asked, which scopes, what was granted)
and change the issuer's behaviour between steps (shorter `expires_in`, a read-only user). The
registry itself verifies the tokens it mints, so a client that passes against this issuer
passes against real token auth (Distribution's docs/spec/auth/token.md, registry/auth/token):

- `GET <realm>?service=S&scope=T:N:A[,A]` (scope repeatable, or space-separated), Basic
  credentials optional. Answer: `{"token", "access_token", "expires_in", "issued_at"}`.
- The token is a JWS (ES256 or RS256). Distribution 2.8 trusts it when the header `kid` is the
  libtrust key ID of a certificate's key in `rootcertbundle` (or via `x5c`), `iss` equals its
  `auth.token.issuer`, `aud` (a *string* in 2.8) equals its `service`, `exp`/`nbf` hold within
  60 s of leeway, and `access` lists the actions each request needs.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from certs import CertAuthority
from serverthread import BackgroundServer

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Algorithm = Literal["ES256", "RS256"]
HARNESS_USER = "regcarve-harness"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """The key ID Distribution looks `kid` up by: SHA-256 of the DER SubjectPublicKeyInfo,
    first 240 bits, base32 without padding, in 12 colon-separated groups of 4."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def new_signing_key(algorithm: Algorithm = "ES256") -> SigningKey:
    return ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa.generate_private_key(65537, 2048)


def sign_jwt(header: dict, claims: dict, key: SigningKey) -> str:
    """Compact JWS. ES256 signatures are r||s (32 bytes each), not DER, as JWS requires."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, unverified: for tests that inspect what was issued."""
    def part(p: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    header, claims, _ = token.split(".")
    return part(header), part(claims)


@dataclass(frozen=True)
class Grant:
    """One `access` entry of a token: resource type, name, actions."""
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, scope: str) -> "Grant":
        """`repository:team/web:pull,push`, `registry:catalog:*`. The name may hold colons
        (a host:port prefix), so the actions are split off the right."""
        head, _, actions = scope.rpartition(":")
        type_, _, name = head.partition(":")
        return cls(type_, name, tuple(a for a in actions.split(",") if a))

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint, as the tests may assert on it (no password)."""
    method: str
    path: str
    user: str | None  # None: anonymous
    service: str | None
    scopes: tuple[str, ...]  # as asked, one entry per scope
    granted: tuple[str, ...]  # scopes put in the token (empty if refused or no access)
    status: int
    outcome: Literal["issued", "bad-credentials", "anonymous-refused", "not-found"]
    harness: bool  # asked by the harness itself (LiveRegistry's ground-truth client)
    at: float = field(default_factory=time.monotonic)


class TokenIssuer:
    """Token server on a free 127.0.0.1 port (HTTPS when `tls` is given).

    users:       {name: password} accepted as Basic credentials.
    permissions: {name: actions} restricts a user (e.g. {"reader": {"pull"}}); the key None is
                 the anonymous caller (default: no actions). Users not listed get what they ask.
    refuse_anonymous: answer 401 to requests without credentials instead of a token with no access.
    expires_in:  seconds announced in the answer; `claim_lifetime` (default: the same) is what
                 goes into `exp`. Both may be changed while running.
    Attributes for the registry config: realm, service, issuer, rootcertbundle.
    """

    def __init__(self, folder: Path, users: dict[str, str] | None = None, *,
                 permissions: dict[str | None, set[str]] | None = None, refuse_anonymous: bool = False,
                 expires_in: int = 300, claim_lifetime: int | None = None, algorithm: Algorithm = "ES256",
                 tls: CertAuthority | None = None, service: str = "regcarve-test-registry",
                 issuer: str = "regcarve-test-issuer"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.admin: tuple[str, str] = (HARNESS_USER, secrets.token_urlsafe(16))
        self.users = {**(users or {}), self.admin[0]: self.admin[1]}
        self.permissions: dict[str | None, set[str]] = {None: set(), **(permissions or {})}
        self.refuse_anonymous = refuse_anonymous
        self.expires_in = expires_in
        self.claim_lifetime = claim_lifetime
        self.service, self.issuer = service, issuer
        self.key: SigningKey = new_signing_key(algorithm)
        self.algorithm: Algorithm = algorithm
        self.key_id = libtrust_key_id(self.key.public_key())
        self.rootcertbundle = self.folder / f"token-signer-{secrets.token_hex(4)}.crt"
        self.rootcertbundle.write_bytes(self._signer_certificate().public_bytes(serialization.Encoding.PEM))
        self.log: list[TokenRequest] = []
        self._lock = threading.Lock()
        self.tls = tls
        context = tls.issue(f"token-{secrets.token_hex(4)}").server_context() if tls else None
        self._server = BackgroundServer(_TokenHandler, context)
        self._server.server.issuer = self  # type: ignore[attr-defined]
        self.port = self._server.port
        self.scheme = "https" if tls else "http"
        self.realm = f"{self.scheme}://127.0.0.1:{self.port}/token"

    def _signer_certificate(self) -> x509.Certificate:
        """Self-signed: Distribution takes each bundle certificate's key as trusted by key ID."""
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.issuer} signer")])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .sign(self.key, hashes.SHA256()))

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "TokenIssuer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "TokenIssuer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- tokens ----------------------------------------------------------------------------
    def grant(self, user: str | None, scope: str) -> Grant:
        """What `user` gets for one asked scope: the asked actions it is permitted."""
        asked = Grant.parse(scope)
        allowed = self.permissions.get(user)
        if allowed is None and user is not None:
            return asked
        return Grant(asked.type, asked.name, tuple(a for a in asked.actions if a in (allowed or set())))

    def mint(self, subject: str, grants: list[Grant], *, lifetime: int | None = None,
             key: SigningKey | None = None, kid: str | None = None, issuer: str | None = None,
             audience: str | None = None, not_before: int | None = None) -> str:
        """A token as this issuer signs it; the keyword arguments make bad ones for tests
        (another key, a kid that does not match the key, wrong iss/aud, expired)."""
        now = int(time.time())
        key = key or self.key
        life = lifetime if lifetime is not None else (
            self.claim_lifetime if self.claim_lifetime is not None else self.expires_in)
        header = {"typ": "JWT", "alg": "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256",
                  "kid": kid or libtrust_key_id(key.public_key())}
        claims = {"iss": issuer or self.issuer, "sub": subject, "aud": audience or self.service,
                  "exp": now + life, "nbf": not_before if not_before is not None else now - 1, "iat": now,
                  "jti": secrets.token_hex(8), "access": [g.claim() for g in grants if g.actions]}
        return sign_jwt(header, claims, key)

    def record(self, entry: TokenRequest) -> None:
        with self._lock:
            self.log.append(entry)

    # --- what tests assert on --------------------------------------------------------------
    def requests(self, *, user: str | None | Literal["any"] = "any", outcome: str | None = None,
                 harness: bool = False) -> list[TokenRequest]:
        """Logged requests (without the harness's own unless `harness=True`), filtered."""
        with self._lock:
            entries = list(self.log)
        return [e for e in entries if (harness or not e.harness)
                and (user == "any" or e.user == user) and (outcome is None or e.outcome == outcome)]

    def issued(self, user: str | None | Literal["any"] = "any") -> int:
        """How many tokens clients (not the harness) fetched."""
        return len(self.requests(user=user, outcome="issued"))

    def clear(self) -> None:
        with self._lock:
            self.log.clear()


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "regcarve-token-issuer"

    def log_message(self, format, *args) -> None:
        pass  # the issuer keeps its own log

    def _reply(self, status: int, doc: dict, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _credentials(self) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ("", "")
        return user, password

    def do_POST(self) -> None:
        """OAuth2 form posts (refresh tokens) are not offered; per the spec, clients fall back
        to GET on 404."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._refuse(404, "not-found", None, {}, "NOT_FOUND", "use GET")

    def _refuse(self, status: int, outcome, user, query, code: str, message: str) -> None:
        issuer: TokenIssuer = self.server.issuer  # type: ignore[attr-defined]
        issuer.record(TokenRequest(self.command, self.path, user, (query.get("service") or [None])[0],
                                   _scopes(query), (), status, outcome, user == HARNESS_USER))
        extra = {"WWW-Authenticate": 'Basic realm="regcarve-token-issuer"'} if status == 401 else {}
        self._reply(status, {"errors": [{"code": code, "message": message}]}, extra)

    def do_GET(self) -> None:
        issuer: TokenIssuer = self.server.issuer  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        creds = self._credentials()
        user = creds[0] if creds else None
        if url.path != urllib.parse.urlsplit(issuer.realm).path:
            return self._refuse(404, "not-found", user, query, "NOT_FOUND", "no such endpoint")
        if creds is not None and issuer.users.get(creds[0]) != creds[1]:
            return self._refuse(401, "bad-credentials", user, query, "UNAUTHORIZED",
                                "invalid username or password")
        if creds is None and issuer.refuse_anonymous:
            return self._refuse(401, "anonymous-refused", None, query, "UNAUTHORIZED", "authentication required")
        scopes = _scopes(query)
        grants = [issuer.grant(user, s) for s in scopes]
        token = issuer.mint(user or "", grants)
        issuer.record(TokenRequest("GET", self.path, user, (query.get("service") or [None])[0], scopes,
                                   tuple(g.scope() for g in grants if g.actions), 200, "issued",
                                   user == HARNESS_USER))
        issued_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._reply(200, {"token": token, "access_token": token, "expires_in": issuer.expires_in,
                          "issued_at": issued_at})


def _scopes(query: dict[str, list[str]]) -> tuple[str, ...]:
    """Every asked scope: repeated `scope=` parameters, each possibly space-separated."""
    return tuple(s for value in query.get("scope", []) for s in value.split() if s)

"""Start a real Distribution registry (Debian's docker-registry) on 127.0.0.1 for tests and fixtures.

By default it serves plain HTTP without auth, with schema1 and foreign-layer URLs allowed (the
storage fixtures depend on both). Keyword options make the registries a push client meets in
the field: HTTPS from a private CA, htpasswd (Basic) or token (Bearer) auth, no schema1, no
foreign URLs. Its own client (`request`, `manifest`, `tags`, `catalog`) is the ground truth and
works with any of them, using credentials of its own so tests keep theirs.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only duck-typed at run time: this module is also imported as tests.registry
    from certs import CertAuthority
    from tokenissuer import TokenIssuer

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
HTPASSWD_BIN = shutil.which("htpasswd") or "/usr/bin/htpasswd"
HARNESS_USER = "regcarve-harness"

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
{tls}{auth}compatibility:
  schema1:
    enabled: {schema1}
{validation}"""

TLS_BLOCK = """\
  tls:
    certificate: {cert}
    key: {key}
"""

HTPASSWD_BLOCK = """\
auth:
  htpasswd:
    realm: regcarve-test
    path: {path}
"""

TOKEN_BLOCK = """\
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
"""

# Without it, Distribution 2.8 refuses every foreign-layer URL (empty allow and deny = "^$").
FOREIGN_URLS_BLOCK = """\
validation:
  manifests:
    urls:
      allow:
        - ^https?://
"""

ACCEPT_ALL = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
])

_REPO_PATH = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|tags)/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def q(value: object) -> str:
    """A YAML double-quoted scalar (JSON strings are valid ones)."""
    return json.dumps(str(value))


def needed_scope(method: str, path: str) -> str | None:
    """The scope Distribution 2.8 asks for (registry/handlers/app.go appendAccessRecords)."""
    path = urllib.parse.urlsplit(path).path
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    m = _REPO_PATH.match(path)
    if not m:
        return None
    actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return f"repository:{m['name']}:{actions}"


def bearer_scope(challenge: str) -> str | None:
    m = re.search(r'scope="([^"]*)"', challenge)
    return m.group(1) if m else None


class LiveRegistry:
    """A registry process serving `root` (its storage directory) on a free loopback port.

    tls:          serve HTTPS with a certificate from this CA (`url`/`scheme` say https).
    htpasswd:     {user: password} for auth.htpasswd (bcrypt file made by `htpasswd -Bbn`).
    token:        a TokenIssuer for auth.token (realm, service, issuer, rootcertbundle).
    schema1:      compatibility.schema1.enabled (False: a registry without schema1).
    foreign_urls: validation.manifests.urls.allow ^https?:// (False: 2.8's default, none allowed).
    """

    def __init__(self, root: Path | None = None, *, tls: CertAuthority | None = None,
                 htpasswd: dict[str, str] | None = None, token: TokenIssuer | None = None,
                 schema1: bool = True, foreign_urls: bool = True):
        if htpasswd is not None and token is not None:
            raise ValueError("a registry has one auth method: htpasswd or token")
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="regcarve-registry-")
            root = Path(self._tmp.name) / "storage"
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self.tls, self.htpasswd, self.token = tls, htpasswd, token
        self.schema1, self.foreign_urls = schema1, foreign_urls
        # The ground-truth client trusts the CA only, like a client configured for this site.
        self.ssl_context: ssl.SSLContext | None = tls.client_context() if tls else None
        self.credentials: tuple[str, str] | None = None  # the harness's own, never a test's
        if htpasswd is not None:
            self.credentials = (HARNESS_USER, secrets.token_urlsafe(16))
        elif token is not None:
            self.credentials = token.admin
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, valid until)
        self.proc: subprocess.Popen | None = None
        self._log = None

    # --- lifecycle -------------------------------------------------------------------------
    def _config(self) -> str:
        side = self.root.parent
        tls = auth = ""
        if self.tls is not None:
            cert = self.tls.issue(f"registry-{self.port}")
            tls = TLS_BLOCK.format(cert=q(cert.cert), key=q(cert.key))
        if self.htpasswd is not None:
            path = side / f"registry-{self.port}.htpasswd"
            users = {**self.htpasswd, HARNESS_USER: self.credentials[1]}
            lines = [subprocess.run([HTPASSWD_BIN, "-Bbn", user, password], check=True, capture_output=True,
                                    text=True).stdout.strip() for user, password in users.items()]
            path.write_text("\n".join(lines) + "\n")
            auth = HTPASSWD_BLOCK.format(path=q(path))
        if self.token is not None:
            auth = TOKEN_BLOCK.format(realm=q(self.token.realm), service=q(self.token.service),
                                      issuer=q(self.token.issuer), bundle=q(self.token.rootcertbundle))
        return CONFIG.format(root=self.root, port=self.port, tls=tls, auth=auth,
                             schema1="true" if self.schema1 else "false",
                             validation=FOREIGN_URLS_BLOCK if self.foreign_urls else "")

    def start(self) -> "LiveRegistry":
        cfg = self.root.parent / f"registry-{self.port}.yml"
        cfg.write_text(self._config())
        self._log = open(self.root.parent / f"registry-{self.port}.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(20)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, seconds: float) -> None:
        """Up once /v2/ answers at all: 200, or 401 when auth is on."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: see {self._log.name}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=self.ssl_context).read()
                return
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return
                time.sleep(0.1)
            except ssl.SSLCertVerificationError:
                raise
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError("registry did not start within 20 s")

    def stop(self) -> None:
        """Stops the one process this object started (by its PID), then removes its temp dir."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LiveRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- auth for the ground-truth client --------------------------------------------------
    def _fetch_token(self, scope: str | None) -> str:
        """A token from the issuer over HTTP(S), with the harness's credentials; cached per
        scope until shortly before it expires."""
        key = scope or ""
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        params = [("service", self.token.service)] + ([("scope", scope)] if scope else [])
        basic = base64.b64encode(":".join(self.credentials).encode()).decode()
        req = urllib.request.Request(f"{self.token.realm}?{urllib.parse.urlencode(params)}",
                                     headers={"Authorization": f"Basic {basic}"})
        context = self.token.tls.client_context() if self.token.tls else None
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            doc = json.loads(resp.read())
        token = doc.get("token") or doc["access_token"]
        self._tokens[key] = (token, time.monotonic() + max(0, int(doc.get("expires_in", 60)) - 5))
        return token

    def _auth_header(self, method: str, path: str) -> dict[str, str]:
        if self.htpasswd is not None:
            return {"Authorization": "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()}
        if self.token is not None:
            return {"Authorization": f"Bearer {self._fetch_token(needed_scope(method, path))}"}
        return {}

    def _send(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
        url = path if path.startswith(("http://", "https://")) else f"{self.url}{path}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    # --- the registry API, as ground truth -------------------------------------------------
    def request(self, method: str, path: str, accept: str = ACCEPT_ALL, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        """One API call (`path` like /v2/..., or an absolute upload URL) as the harness."""
        all_headers = {"Accept": accept, **(headers or {}), **self._auth_header(method, path)}
        status, resp_headers, resp_body = self._send(method, path, body, all_headers)
        challenge = next((v for k, v in resp_headers.items() if k.lower() == "www-authenticate"), "")
        if status == 401 and self.token is not None and challenge.startswith("Bearer"):
            # the registry wanted another scope than guessed: ask for exactly that one
            all_headers["Authorization"] = f"Bearer {self._fetch_token(bearer_scope(challenge))}"
            status, resp_headers, resp_body = self._send(method, path, body, all_headers)
        return status, resp_headers, resp_body

    def manifest(self, repo: str, ref: str) -> tuple[str, str, bytes]:
        """(Docker-Content-Digest, Content-Type, body) of repo:ref."""
        status, headers, body = self.request("GET", f"/v2/{repo}/manifests/{ref}")
        if status != 200:
            raise KeyError(f"{repo}:{ref}: HTTP {status} {body[:200]!r}")
        return headers["Docker-Content-Digest"], headers["Content-Type"], body

    def catalog(self) -> list[str]:
        _, _, body = self.request("GET", "/v2/_catalog?n=1000", accept="application/json")
        return json.loads(body)["repositories"] or []

    def tags(self, repo: str) -> list[str]:
        status, _, body = self.request("GET", f"/v2/{repo}/tags/list?n=100000", accept="application/json")
        if status != 200:
            return []
        return sorted(json.loads(body).get("tags") or [])

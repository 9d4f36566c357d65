"""Start a real Distribution registry (Debian's docker-registry) on 127.0.0.1 for tests and fixtures."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"

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
compatibility:
  schema1:
    enabled: true
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveRegistry:
    """A registry process serving `root` (its storage directory) on a free loopback port."""

    def __init__(self, root: Path | None = None):
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="regcarve-registry-")
            root = Path(self._tmp.name) / "storage"
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LiveRegistry":
        cfg = self.root.parent / f"registry-{self.port}.yml"
        cfg.write_text(CONFIG.format(root=self.root, port=self.port))
        self._log = open(self.root.parent / f"registry-{self.port}.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: see {self._log.name}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError("registry did not start within 20 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> "LiveRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the registry API, as ground truth -------------------------------------------------
    def request(self, method: str, path: str, accept: str = ACCEPT_ALL) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(f"http://{self.host}{path}", method=method, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

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

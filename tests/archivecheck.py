"""What the docker-archive tests check archives with: skopeo, a live registry, tarfile."""

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

from registry import LiveRegistry


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr[-2000:]}"
    return p


def push(reg: LiveRegistry, source: str, dest: str) -> None:
    skopeo("copy", "-q", "--dest-tls-verify=false", source, f"docker://{reg.host}/{dest}")


def pushed_config(reg: LiveRegistry, repo: str, tag: str) -> tuple[str, dict]:
    _, _, body = reg.manifest(repo, tag)
    digest = json.loads(body)["config"]["digest"]
    status, _, config = reg.request("GET", f"/v2/{repo}/blobs/{digest}", accept="*/*")
    assert status == 200
    return digest, json.loads(config)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as t:
        infos = t.getmembers()
    names = [i.name for i in infos]
    assert len(names) == len(set(names)), "an entry is stored twice"
    return {i.name: i for i in infos}


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as t:
        return t.extractfile(name).read()

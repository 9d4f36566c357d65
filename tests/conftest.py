import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# tests import helpers (registry.py, …) from this folder; the package itself is pip-installed
sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAIN_ARCHIVE = FIXTURES / "registry.tar.gz"
GC_ARCHIVE = FIXTURES / "gc-damaged.tar.gz"
SIGNED_ARCHIVE = FIXTURES / "signed.tar.gz"


def load_truth(archive: Path) -> dict:
    return json.loads(archive.with_name(archive.name.split(".")[0] + ".truth.json").read_text())


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def regcarve(*args, input: bytes | None = None, cwd=None) -> Run:
    """Run the real CLI in a subprocess, as a user would."""
    p = subprocess.run([sys.executable, "-m", "regcarve", *map(str, args)], input=input,
                       capture_output=True, cwd=cwd, timeout=600)
    return Run(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


@pytest.fixture(scope="session")
def truth() -> dict:
    return load_truth(MAIN_ARCHIVE)


@pytest.fixture(scope="session")
def gc_truth() -> dict:
    return load_truth(GC_ARCHIVE)


@pytest.fixture(scope="session")
def plain_tar(tmp_path_factory) -> Path:
    """The main fixture as an uncompressed tar (the same bytes gzip -dc gives)."""
    out = tmp_path_factory.mktemp("plain") / "registry.tar"
    with open(out, "wb") as f:
        subprocess.run(["gzip", "-dc", str(MAIN_ARCHIVE)], stdout=f, check=True)
    return out


@pytest.fixture(scope="session")
def zstd_tar(plain_tar) -> Path:
    out = plain_tar.with_suffix(".tar.zst")
    subprocess.run(["zstd", "-q", "-19", "--long=31", "-o", str(out), str(plain_tar)], check=True)
    return out


# --- live registries, for the tests that need one (each module gets its own) -------------------------------
@pytest.fixture(scope="module")
def registry():
    """A plain-HTTP registry (Debian's docker-registry) on 127.0.0.1, for the module."""
    from registry import LiveRegistry

    with LiveRegistry() as reg:
        yield reg


@pytest.fixture
def proxy(registry):
    """A fault proxy in front of the module's registry, fresh for each test."""
    from faultproxy import FaultProxy

    with FaultProxy(registry.host) as p:
        yield p


@pytest.fixture(scope="module")
def token_registry(issuer):
    """A registry that trusts the module's `issuer` (a TokenIssuer fixture the module defines)."""
    from registry import LiveRegistry

    with LiveRegistry(token=issuer) as reg:
        yield reg

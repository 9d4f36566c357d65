"""The push line `convert --format dir` prints, run exactly as printed (issue 12): into a registry
set up as the summary says, every written image arrives; into a stock one, --keep-going lets every
image the registry can take go in; with --default-project, one sync puts every repository in a
project. The input is README's own fixture; the registries are Debian's docker-registry."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from conftest import MAIN_ARCHIVE, regcarve
from registry import LiveRegistry
from storagetar import Storage


def printed_sync(stderr: str) -> list[str]:
    line = next(l for l in stderr.splitlines() if l.startswith("  skopeo sync "))
    return shlex.split(line)


def run_as_printed(argv: list[str], host: str) -> subprocess.CompletedProcess:
    assert argv[-1] == "<registry>[/prefix]"
    # the only addition: the test registry speaks plain HTTP
    return subprocess.run([*argv[:-1], "--dest-tls-verify=false", host], capture_output=True, text=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("instructions") / "out"
    run = regcarve("convert", "-o", str(out), MAIN_ARCHIVE)
    written = [l.split()[1] for l in run.stdout.splitlines() if l.startswith("written ")]
    return out, run.stderr, written


def test_the_summary_names_what_the_registry_must_allow(converted):
    _, stderr, _ = converted
    assert "--keep-going" in printed_sync(stderr)
    assert ("the registry must take schema1 manifests — Distribution 2.x: compatibility.schema1.enabled: true "
            "(Harbor 2.x has it); Distribution v3 (registry:3) takes none (legacy/old:s1)") in stderr
    assert ("the registry must take layers with foreign URLs — Distribution: validation.manifests.urls.allow: "
            "['^https?://'] (team/win:1)") in stderr


def test_printed_line_into_a_registry_set_up_as_said_delivers_every_image(converted):
    out, stderr, written = converted
    with LiveRegistry(schema1="compatibility.schema1.enabled: true" in stderr,
                      foreign_urls="validation.manifests.urls.allow" in stderr) as reg:
        sync = run_as_printed(printed_sync(stderr), reg.host)
        assert sync.returncode == 0, sync.stderr[-2000:]
        for ref in written:
            repo, tag = ref.rsplit(":", 1)
            assert reg.manifest(repo, tag)[0] is not None, ref
    assert len(written) == 14


def test_printed_line_into_a_stock_registry_keeps_going_past_refusals(converted):
    out, stderr, written = converted
    with LiveRegistry(schema1=False, foreign_urls=False) as reg:
        sync = run_as_printed(printed_sync(stderr), reg.host)
        assert sync.returncode != 0  # skopeo says which images failed
        arrived = {ref for ref in written if reg.tags(ref.rsplit(":", 1)[0]) and
                   ref.rsplit(":", 1)[1] in reg.tags(ref.rsplit(":", 1)[0])}
    assert set(written) - arrived == {"legacy/old:s1", "team/win:1"}


def test_default_project_puts_every_repository_in_a_project_with_one_sync(tmp_path):
    out = tmp_path / "out"
    run = regcarve("convert", "-q", "-o", str(out), "--default-project", "library", MAIN_ARCHIVE)
    assert (out / "library/app:v1/manifest.json").exists() and (out / "foo/latest:1/manifest.json").exists()
    assert "single name component" not in run.stderr
    with LiveRegistry() as reg:
        sync = run_as_printed(printed_sync(run.stderr), reg.host)
        assert sync.returncode == 0, sync.stderr[-2000:]
        catalog = reg.catalog()
    assert "library/app" in catalog and "library/foo" in catalog and "team/web" in catalog
    assert all("/" in name for name in catalog)


def test_default_project_refuses_a_collision_and_a_bad_project(tmp_path):
    s = Storage()
    s.image("app", "v1", seed=1)
    s.image("library/app", "v1", seed=2)
    s.image("web", "1", seed=3)
    archive = tmp_path / "in.tar"
    archive.write_bytes(s.tar())
    run = regcarve("convert", "-o", str(tmp_path / "out"), "--default-project", "library", str(archive))
    assert run.code == 1
    assert "failed  app:v1: app would go out as library/app, which library/app fills already" in run.stderr
    assert {l.split()[1] for l in run.stdout.splitlines() if l.startswith("written")} == {"library/app:v1", "web:1"}
    assert (tmp_path / "out/library/web:1/manifest.json").exists()
    bad = regcarve("convert", "-q", "-o", str(tmp_path / "bad"), "--default-project", "a/b", str(archive))
    assert bad.code == 2 and "a project is one name component" in bad.stderr


def test_push_default_project_keeps_a_repository_that_already_has_the_name(tmp_path, registry):
    s = Storage()
    s.image("app", "v1", seed=1)
    kept = s.image("library/app", "v1", seed=2)
    archive = tmp_path / "in.tar"
    archive.write_bytes(s.tar())
    run = regcarve("push", str(archive), f"{registry.host}/", "--plain-http", "--default-project", "library",
                   "--image", "*app:v1")
    assert run.code == 1
    assert "failed  app:v1: app would land in library/app, which library/app fills already" in run.stderr, run.stderr
    assert registry.manifest("library/app", "v1")[0] == kept.digest

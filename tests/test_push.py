"""`regcarve push`, against real registries the tests start: plain HTTP, TLS + htpasswd, token auth,
a registry without schema1, and a fault proxy in front of one (drops, 5xx, stalls, SIGINT)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certs import CertAuthority
from outcheck import snapshot
from conftest import GC_ARCHIVE, MAIN_ARCHIVE, load_truth, regcarve
from faultproxy import FaultProxy
from registry import LiveRegistry
from storagetar import Storage
from tokenissuer import TokenIssuer

PLAIN = "--plain-http"


def pushed(reg: LiveRegistry, truth: dict, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Every tag of the truth (but `skip`) answers its source digest; every index child is there by digest."""
    for t in truth["tags"]:
        if t["repo"] in skip:
            continue
        repo = prefix + t["repo"]
        digest, _, _ = reg.manifest(repo, t["tag"])
        assert digest == t["digest"], f"{repo}:{t['tag']}"
        todo = list(t.get("children", []))
        while todo:
            child = todo.pop()
            if child["manifest"].get("missing"):
                continue
            assert reg.manifest(repo, child["digest"])[0] == child["digest"]
            todo += child["manifest"].get("children", [])


def report_of(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return doc | {"by_ref": {e["ref"]: e for e in doc["images"]}}


@pytest.fixture(scope="module")
def truth():
    return load_truth(MAIN_ARCHIVE)


# --- plain HTTP ------------------------------------------------------------------------------------
def test_every_tag_of_the_fixture_lands_with_its_digest_and_a_rerun_sends_nothing(tmp_path, truth):
    with LiveRegistry() as reg, FaultProxy(reg.host) as proxy:
        report = tmp_path / "r.json"
        run = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "--report", report)
        assert run.code == 0, run.stderr
        pushed(reg, truth)
        doc = report_of(report)
        assert doc["format"] == "registry" and doc["out"] == proxy.host
        assert doc["summary"] == {"pushed": len(truth["tags"]), "present": 0, "skipped": 0, "failed": 0}
        entry = doc["by_ref"]["team/web:1.0"]
        assert entry["path"] == f"{proxy.host}/team/web:1.0" and entry["status"] == "pushed"
        # an empty registry: one list per repository, one request per (repository, blob) pair, a PUT per
        # uploaded blob and per manifest, and the ping
        repos, tags = len(truth["catalog"]), len(truth["tags"])
        pairs, uploads, manifests = proxy.count("POST"), proxy.count("PUT", r"/blobs/uploads/"), \
            proxy.count("PUT", r"/manifests/")
        assert proxy.count("GET") == repos + 1 and proxy.count("HEAD") == 0
        assert manifests >= tags and uploads <= pairs and proxy.count("PATCH") == 0
        assert f"{repos + 1 + pairs + uploads + manifests} request(s)" in run.stderr
        for digest in {u.digest for u in proxy.blob_uploads()}:
            assert proxy.uploads_with_body(digest) == 1  # each blob uploaded once; mounted elsewhere
        proxy.clear()
        again = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "--report", report, "-q")
        assert again.code == 0, again.stderr
        assert {e.method for e in proxy.requests()} == {"GET", "HEAD"}
        assert proxy.count("HEAD") == tags
        assert report_of(report)["summary"]["present"] == tags


def test_gc_damaged_storage_pushes_what_is_whole_and_fails_the_rest(tmp_path):
    truth = load_truth(GC_ARCHIVE)
    with LiveRegistry() as reg:
        report = tmp_path / "r.json"
        run = regcarve("push", GC_ARCHIVE, reg.host, PLAIN, "--report", report, "-q")
        assert run.code == 1
        doc = report_of(report)
        for t in truth["tags"]:
            ref = f"{t['repo']}:{t['tag']}"
            entry = doc["by_ref"].get(ref)
            if entry is None:
                continue  # deleted before GC
            if entry["status"] == "pushed":
                assert reg.manifest(t["repo"], t["tag"])[0] == t["digest"]
            else:
                assert entry["status"] == "failed" and "not in the archive" in entry["reason"], entry
                assert t["repo"] not in reg.catalog() or t["tag"] not in reg.tags(t["repo"])
        assert doc["by_ref"]["gc/intact:1"]["status"] == "pushed"


def test_prefix_and_default_project(tmp_path, truth):
    with LiveRegistry() as reg:
        run = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--default-project", "library", "-q",
                       "--image", "app", "--image", "foo", "--image", "foo/latest", "--image", "team/web:1.0")
        assert run.code == 0, run.stderr
        assert set(reg.catalog()) == {"library/app", "library/foo", "foo/latest", "team/web"}
        assert "Harbor projects this push needs (create them first): foo, library, team" in run.stderr
        run = regcarve("push", MAIN_ARCHIVE, reg.host + "/mirror/x", PLAIN, "--default-project", "library", "-q")
        assert run.code == 0, run.stderr
        pushed(reg, truth, prefix="mirror/x/")  # a prefix makes every name a project path already


def test_an_out_of_convert_dir_is_pushed_from_its_store_without_reading_the_archive(tmp_path, truth):
    out = tmp_path / "out"
    assert regcarve("convert", MAIN_ARCHIVE, "-o", out, "-q").code == 1  # the nested index is not a dir: image
    before = snapshot(out)
    with LiveRegistry() as reg:
        run = regcarve("push", out, reg.host, PLAIN)
        assert run.code == 0, run.stderr
        assert "an OUT of convert --format dir" in run.stderr
        pushed(reg, truth, skip=("team/nested",))
    assert snapshot(out) == before  # read, never written


def test_two_repositories_landing_in_one_do_not_overwrite_each_other(tmp_path):
    s = Storage()
    s.image("web", "1", seed=1)
    s.image("library/web", "1", seed=2)
    src = tmp_path / "in.tar"
    src.write_bytes(s.tar())
    with LiveRegistry() as reg:
        report = tmp_path / "r.json"
        run = regcarve("push", src, reg.host, PLAIN, "--default-project", "library", "--report", report, "-q")
        assert run.code == 1
        by_ref = report_of(report)["by_ref"]
        assert by_ref["library/web:1"]["status"] == "pushed"
        assert by_ref["web:1"]["status"] == "failed" and "which library/web fills" in by_ref["web:1"]["reason"]
        assert reg.manifest("library/web", "1")[0] == by_ref["library/web:1"]["digest"]


def test_many_tags_of_one_repository_are_asked_about_in_batches(tmp_path):
    """150 tags of one repository are asked about in three batches (probe.HEADS_PER_TASK = 64): the tags the
    registry holds with another digest, in each batch, are pushed again; every other one is present."""
    s = Storage()
    a = s.image("team/many", None, seed=1)
    b = s.image("team/many", "b", seed=2)
    for i in range(150):
        s.tag("team/many", f"t{i:03}", a.digest)
    src = tmp_path / "in.tar"
    src.write_bytes(s.tar())
    with LiveRegistry() as reg:
        assert regcarve("push", src, reg.host, PLAIN, "-q").code == 0
        moved = ["t010", "t070", "t140"]  # one in each batch
        for tag in moved:
            status, _, _ = reg.request("PUT", f"/v2/team/many/manifests/{tag}", body=b.manifest,
                                       headers={"Content-Type": b.media_type})
            assert status == 201 and reg.manifest("team/many", tag)[0] == b.digest
        report = tmp_path / "r.json"
        again = regcarve("push", src, reg.host, PLAIN, "--report", report, "-q")
        assert again.code == 0, again.stderr
        doc = report_of(report)
        assert doc["summary"] == {"pushed": 3, "present": 148, "skipped": 0, "failed": 0}
        assert {ref for ref, e in doc["by_ref"].items() if e["status"] == "pushed"} == {f"team/many:{t}" for t in moved}
        assert all(reg.manifest("team/many", tag)[0] == a.digest for tag in moved)
        assert re.search(r"\(2 GET, 151 HEAD\b", again.stderr), again.stderr  # one list, a HEAD per tag


def test_dry_run_sends_nothing_and_says_what_it_would(tmp_path, truth):
    with LiveRegistry() as reg, FaultProxy(reg.host) as proxy:
        regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "-q", "--image", "team/web:1.0")
        proxy.clear()
        report = tmp_path / "r.json"
        run = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "--dry-run", "--report", report, "-q")
        assert run.code == 0, run.stderr
        assert {e.method for e in proxy.requests()} <= {"GET", "HEAD"}
        # the first push took team/web:1.0 and its cosign signature, which goes with it
        assert f"dry run: {len(truth['tags']) - 2} tag(s) would be pushed" in run.stderr
        assert "nothing was sent" in run.stderr
        summary = report_of(report)["summary"]
        assert summary["planned"] == len(truth["tags"]) - 2 and summary["present"] == 2
        assert reg.catalog() == ["team/web"] and reg.tags("team/web")[0] == "1.0"
        assert [t for t in reg.tags("team/web")[1:] if not t.endswith(".sig")] == []


def test_an_unreachable_registry_stops_before_the_input_is_read(tmp_path):
    with LiveRegistry() as reg:
        host = reg.host
    started = time.monotonic()
    run = regcarve("push", "/nonexistent/input.tar", host, PLAIN)
    assert run.code == 4 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert host in run.stderr and time.monotonic() - started < 15


# --- TLS, Basic and token auth -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertAuthority(tmp_path_factory.mktemp("ca"))


def test_tls_and_htpasswd(tmp_path, ca, truth):
    with LiveRegistry(tls=ca, htpasswd={"alice": "s3cret pw"}) as reg:
        wrong = regcarve("push", MAIN_ARCHIVE, reg.host, "--ca-cert", ca.ca_pem, "--creds", "alice:wrong")
        assert wrong.code == 4 and "wrong user name or password" in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1 and "wrong" not in wrong.stderr.split("alice")[0]
        untrusted = regcarve("push", MAIN_ARCHIVE, reg.host, "--creds", "alice:s3cret pw")
        assert untrusted.code == 4 and "--insecure" in untrusted.stderr
        insecure = regcarve("push", MAIN_ARCHIVE, reg.host, "--insecure", "--creds", "alice:s3cret pw", "-q", "--dry-run")
        assert insecure.code == 0, insecure.stderr
        assert untrusted.code == 4 and "--ca-cert" in untrusted.stderr
        assert reg.catalog() == []  # nothing was sent
        run = regcarve("push", MAIN_ARCHIVE, reg.host, "--ca-cert", ca.ca_pem, "--creds", "alice:s3cret pw", "-q")
        assert run.code == 0, run.stderr
        assert "s3cret" not in run.stderr + run.stdout
        pushed(reg, truth)


def test_token_auth_with_a_password_from_stdin_and_an_auth_file(tmp_path, truth):
    with TokenIssuer(tmp_path / "issuer", {"bob": "tok-pw"}) as issuer, LiveRegistry(token=issuer) as reg:
        wrong = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--creds", "bob", "--password-stdin",
                         input=b"nope\n")
        assert wrong.code == 4 and reg.catalog() == [] and "nope" not in wrong.stderr
        issuer.clear()
        run = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--creds", "bob", "--password-stdin", "-q",
                       input=b"tok-pw\n")
        assert run.code == 0, run.stderr
        pushed(reg, truth)
        asked = [r.scopes for r in issuer.requests(user="bob")]
        mounts = [s for scopes in asked for s in scopes if s.endswith(":pull")]
        assert mounts, "mounts ask for pull on the repository they come from"
        assert len(asked) <= 2 * len(truth["catalog"]) + 1  # a token per scope set, not per request
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"bob:tok-pw").decode()}}}))
        again = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--authfile", auth, "-q")
        assert again.code == 0 and "0 pushed" in again.stderr, again.stderr


# --- a registry that refuses some images ---------------------------------------------------------------
def test_a_registry_without_schema1_fails_those_images_and_takes_the_rest(tmp_path, truth):
    with LiveRegistry(schema1=False) as reg:
        report = tmp_path / "r.json"
        run = regcarve("push", MAIN_ARCHIVE, reg.host, PLAIN, "--report", report, "-q")
        assert run.code == 1
        doc = report_of(report)
        legacy = doc["by_ref"]["legacy/old:s1"]
        assert legacy["status"] == "failed" and "does not take schema1" in legacy["reason"]
        assert "failed  legacy/old:s1" in run.stderr
        assert [r for r, e in doc["by_ref"].items() if e["status"] != "pushed"] == ["legacy/old:s1"]
        pushed(reg, truth, skip=("legacy/old",))


# --- faults between regcarve and the registry ------------------------------------------------------------
def test_dropped_connections_and_503s_are_retried(tmp_path, truth):
    with LiveRegistry() as reg, FaultProxy(reg.host) as proxy:
        proxy.fail("PUT", r"/blobs/uploads/", 503, first=2, times=2)
        proxy.drop("PUT", r"/blobs/uploads/", after="forward", first=6)  # the registry took it; the answer is lost
        proxy.drop("POST", r"/blobs/uploads/", first=3)
        proxy.fail("PUT", r"/manifests/", 503, retry_after="0")
        proxy.drop("PUT", r"/manifests/", after="body", first=4)
        run = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "-q")
        assert run.code == 0, run.stderr
        assert all(rule.fired for rule in proxy.rules)
        pushed(reg, truth)
        for digest in {u.digest for u in proxy.blob_uploads() if u.digest}:
            assert proxy.uploads_with_body(digest) <= 2


def test_a_persistent_failure_fails_only_the_images_it_touches(tmp_path, truth):
    with LiveRegistry() as reg, FaultProxy(reg.host) as proxy:
        proxy.fail("PUT", r"/v2/team/web/manifests/", 503, times=None)
        report = tmp_path / "r.json"
        run = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "--report", report, "-q")
        assert run.code == 1
        failed = {r for r, e in report_of(report)["by_ref"].items() if e["status"] == "failed"}
        assert failed == {f"team/web:{t['tag']}" for t in truth["tags"] if t["repo"] == "team/web"}
        assert all("503" in report_of(report)["by_ref"][r]["reason"] for r in failed)
        pushed(reg, truth, skip=("team/web",))


def test_sigint_mid_push_then_a_rerun_completes_without_uploading_a_blob_twice(tmp_path, truth):
    with LiveRegistry() as reg, FaultProxy(reg.host) as proxy:
        proxy.stall("PUT", r"/manifests/", 30, times=None)  # blobs go; no tag can complete
        proc = subprocess.Popen([sys.executable, "-m", "regcarve", "push", str(MAIN_ARCHIVE), proxy.host, PLAIN, "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
        deadline = time.monotonic() + 60
        while proxy.count("PUT", r"/blobs/uploads/", status=201) < 10:
            assert time.monotonic() < deadline and proc.poll() is None, "the push never got there"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        stderr = proc.stderr.read().decode()
        assert code == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
        proxy.clear_rules()
        assert reg.catalog() == [] or all(reg.tags(r) == [] for r in reg.catalog())  # nothing half-done under a tag
        run = regcarve("push", MAIN_ARCHIVE, proxy.host, PLAIN, "-q")
        assert run.code == 0, run.stderr
        pushed(reg, truth)
        for digest in {u.digest for u in proxy.blob_uploads() if u.digest}:
            assert proxy.uploads_with_body(digest) == 1, digest

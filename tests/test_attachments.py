"""Signatures, attestations, SBOMs and referrers indexes travel with their images (issue 17).

On `fixtures/signed.tar.gz`, made by a real registry: `app/signed:v1`, its cosign `.sig` and `.att` tags, an
SPDX artifact whose `subject` is v1 (by digest only), the referrers fallback index tagged `sha256-<v1>` that
lists it, and a cosign signature of the SPDX artifact. Every digest is read from the truth file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import MAIN_ARCHIVE, SIGNED_ARCHIVE, load_truth, regcarve
from registry import LiveRegistry

SIGNED = SIGNED_ARCHIVE
REPO = "app/signed"


@pytest.fixture(scope="module")
def signed() -> dict:
    """The truth, and the digests each attachment is known by."""
    truth = load_truth(SIGNED)
    tags = {t["tag"]: t for t in truth["tags"]}
    image = tags["v1"]["digest"]
    sbom = next(u for u in truth["untagged"] if u.get("subject"))
    assert sbom["subject"]["digest"] == image and sbom["artifact_type"] == "application/spdx+json"
    hexes = {"image": image.removeprefix("sha256:"), "sbom": sbom["digest"].removeprefix("sha256:")}
    return {
        "truth": truth,
        "tags": tags,
        "image": image,
        "sbom": sbom["digest"],
        "sig": tags[f"sha256-{hexes['image']}.sig"]["digest"],
        "att": tags[f"sha256-{hexes['image']}.att"]["digest"],
        "referrers_tag": f"sha256-{hexes['image']}",
        "referrers": tags[f"sha256-{hexes['image']}"]["digest"],
        "sbom_sig_tag": f"sha256-{hexes['sbom']}.sig",
        "sbom_sig": tags[f"sha256-{hexes['sbom']}.sig"]["digest"],
    }


def written_digests(out: Path) -> dict[str, str]:
    """tag → sha256 of the manifest.json a dir output holds for it."""
    return {p.parent.name.split(":", 1)[1]: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (out / "app").glob("signed:*/manifest.json")}


# --- 1. the inventory knows the links ---------------------------------------------------------------
def test_list_json_links_each_attachment_to_its_image(signed):
    run = regcarve("list", "--json", "-q", SIGNED)
    assert run.code == 0, run.stderr
    tags = {t["tag"]: t for t in json.loads(run.stdout)["tags"]}
    v1 = tags["v1"]
    assert v1["attached_to"] is None
    assert v1["attachment_counts"] == {"signature": 2, "attestation": 1, "sbom": 1, "referrers-index": 1}
    attached = {a["digest"]: a for a in v1["attachments"]}
    assert set(attached) == {signed[k] for k in ("sig", "att", "sbom", "referrers", "sbom_sig")}
    assert attached[signed["sbom"]] == {
        "digest": signed["sbom"], "subject": signed["image"], "kind": "sbom", "via": "subject",
        "carried_by": f"{REPO}:{signed['referrers_tag']}", "artifact_type": "application/spdx+json"}
    assert attached[signed["sbom_sig"]]["subject"] == signed["sbom"]  # a signature of the SBOM: recursive
    for tag, kind, via in ((f"sha256-{signed['image'][7:]}.sig", "signature", "cosign-tag"),
                           (f"sha256-{signed['image'][7:]}.att", "attestation", "cosign-tag"),
                           (signed["referrers_tag"], "referrers-index", "referrers-tag")):
        link = tags[tag]["attached_to"]
        assert link == {"subject": signed["image"], "kind": kind, "via": via, "subject_tags": [f"{REPO}:v1"]}, tag
    index = tags[signed["referrers_tag"]]["manifest"]
    assert index["children"][0]["subject"]["digest"] == signed["image"]
    assert tags[signed["sbom_sig_tag"]]["attached_to"]["subject"] == signed["sbom"]


def test_the_table_says_what_is_attached():
    lines = regcarve("list", "-q", SIGNED).stdout.splitlines()
    assert lines[0].split()[5] == "ATTACHED"
    v1 = next(line for line in lines if line.startswith(f"{REPO}:v1 "))
    assert "sig 2, att 1, sbom 1, idx 1" in v1
    att = next(line for line in lines if line.startswith(f"{REPO}:sha256-") and ".att " in line)
    assert "att of v1" in att


def test_the_main_fixture_ties_its_cosign_signature_to_team_web(truth):
    tags = {t["ref"]: t for t in json.loads(regcarve("list", "--json", "-q", MAIN_ARCHIVE).stdout)["tags"]}
    web = next(t for t in truth["tags"] if t["repo"] == "team/web" and t["tag"] == "1.0")
    sig = tags[f"team/web:sha256-{web['digest'][7:]}.sig"]
    assert sig["attached_to"]["subject_tags"] == ["team/web:1.0", "team/web:latest"]
    assert tags["team/web:2.0"]["attachments"] == [] and tags["team/web:1.0"]["attachment_counts"] == {"signature": 1}


# --- 2. selection carries attachments ---------------------------------------------------------------
def test_selecting_the_image_writes_every_attachment_byte_exact(signed, tmp_path):
    run = regcarve("convert", SIGNED, "-o", tmp_path / "out", "-q", "--image", f"{REPO}:v1")
    assert run.code == 0, run.stderr
    assert written_digests(tmp_path / "out") == {tag: t["digest"] for tag, t in signed["tags"].items()}
    sbom_file = tmp_path / "out" / f"{REPO}:{signed['referrers_tag']}" / f"{signed['sbom'][7:]}.manifest.json"
    assert "sha256:" + hashlib.sha256(sbom_file.read_bytes()).hexdigest() == signed["sbom"]
    assert ("4 attachment tag(s) went with their images (2 signatures, 1 attestation, 1 referrers index)"
            in run.stderr)


def test_no_attachments_leaves_them_out_and_globs_select_attachments_alone(signed, tmp_path):
    run = regcarve("convert", SIGNED, "-o", tmp_path / "a", "-q", "--image", f"{REPO}:v1", "--no-attachments")
    assert run.code == 0, run.stderr
    assert set(written_digests(tmp_path / "a")) == {"v1"}
    assert "--no-attachments: 4 attachment tag(s) left out" in run.stderr
    only = regcarve("convert", SIGNED, "-o", tmp_path / "b", "-q", "--image", f"{REPO}:sha256-*")
    assert only.code == 0, only.stderr
    assert set(written_digests(tmp_path / "b")) == set(signed["tags"]) - {"v1"}
    excluded = regcarve("convert", SIGNED, "-o", tmp_path / "c", "-q", "--image", f"{REPO}:v1",
                        "--exclude", "*:*.att")
    assert set(written_digests(tmp_path / "c")) == set(signed["tags"]) - {f"sha256-{signed['image'][7:]}.att"}


# --- 3. --platform carries an index of artifacts whole ------------------------------------------------
def test_platform_writes_the_referrers_index_whole(signed, tmp_path):
    run = regcarve("convert", SIGNED, "-o", tmp_path / "out", "-q", "--image", f"{REPO}:v1",
                   "--platform", "linux/amd64")
    assert run.code == 0, run.stderr
    assert written_digests(tmp_path / "out") == {tag: t["digest"] for tag, t in signed["tags"].items()}
    assert "--platform:" not in run.stderr  # no tag traded its index for a child


# --- 5. docker-archive: one line -----------------------------------------------------------------------
def test_docker_archive_leaves_attachments_out_in_one_line(tmp_path):
    run = regcarve("convert", SIGNED, "-o", tmp_path / "out", "--format", "docker-archive")
    assert run.code == 0, run.stderr
    assert [p.name for p in (tmp_path / "out").rglob("*.tar")] == ["v1.tar"]
    lines = [line for line in run.stderr.splitlines() if "attachment" in line or "sha256-" in line]
    assert lines == ["note: 4 attachment tag(s) left out (2 signatures, 1 attestation, 1 referrers index): a "
                     "docker-archive holds container images only; --format dir or oci, or regcarve push, carry them"]


# --- 4. push keeps every digest; the skopeo warning says exactly what skopeo changes --------------------
def test_push_keeps_every_digest_of_tags_artifact_and_referrers_index(signed):
    with LiveRegistry() as reg:
        run = regcarve("push", SIGNED, reg.host, "--plain-http", "-q")
        assert run.code == 0, run.stderr
        assert {tag: reg.manifest(REPO, tag)[0] for tag in reg.tags(REPO)} == {
            tag: t["digest"] for tag, t in signed["tags"].items()}
        digest, media_type, body = reg.manifest(REPO, signed["sbom"])
        assert digest == signed["sbom"] and "sha256:" + hashlib.sha256(body).hexdigest() == signed["sbom"]
        assert json.loads(body)["subject"]["digest"] == signed["image"]


def _warning(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("warning: skopeo would push")]
    return [line for i in at for line in lines[i:i + 2]]


@pytest.mark.parametrize("fmt", ["dir", "oci"])
def test_the_skopeo_warning_appears_exactly_when_such_a_tag_is_written(signed, tmp_path, fmt):
    with_index = regcarve("convert", SIGNED, "-o", tmp_path / "with", "-q", "--format", fmt)
    assert with_index.code == 0, with_index.stderr
    warning = _warning(with_index.stderr)
    assert len(warning) == 2 and "1 tag(s)" in warning[0], with_index.stderr
    assert warning[1].endswith(f"--image {REPO}:{signed['referrers_tag']}")
    without = regcarve("convert", SIGNED, "-o", tmp_path / "without", "-q", "--format", fmt,
                       "--exclude", f"{REPO}:{signed['referrers_tag']}")
    assert without.code == 0 and _warning(without.stderr) == [], without.stderr
    main = regcarve("convert", MAIN_ARCHIVE, "-o", tmp_path / "main", "-q", "--format", fmt)
    assert _warning(main.stderr) == [], main.stderr


def test_the_warning_is_true_and_its_command_keeps_the_digest(signed, tmp_path):
    """skopeo sync, as printed, lands the referrers index under a new digest; the printed regcarve push
    then puts the source's bytes under the tag."""
    out = tmp_path / "out"
    run = regcarve("convert", SIGNED, "-o", out, "-q")
    assert run.code == 0, run.stderr
    push_line = _warning(run.stderr)[1].strip()
    with LiveRegistry() as reg:
        sync = subprocess.run(["skopeo", "sync", "--src", "dir", "--dest", "docker", "--scoped", "--all",
                               "--keep-going", "--dest-tls-verify=false", str(out), reg.host],
                              capture_output=True, text=True)
        assert sync.returncode == 0, sync.stderr
        arrived = {tag: reg.manifest(REPO, tag)[0] for tag in reg.tags(REPO)}
        assert arrived[signed["referrers_tag"]] != signed["referrers"]
        assert {t: d for t, d in arrived.items() if t != signed["referrers_tag"]} == {
            tag: t["digest"] for tag, t in signed["tags"].items() if tag != signed["referrers_tag"]}
        args = push_line.replace("<registry>[/prefix]", reg.host).split()[1:]
        fixed = regcarve(*args, "--plain-http", "-q")
        assert fixed.code == 0, fixed.stderr
        assert reg.manifest(REPO, signed["referrers_tag"])[0] == signed["referrers"]

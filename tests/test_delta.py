"""Deltas end to end, with real registries: delivery A packed from a live registry's storage, more images
pushed (some sharing A's layers, one re-tagged), delivery B packed `--since A/pack.json`. Then the receiving
side: B ships no blob A shipped; A then B, untarred or pushed volume by volume, give every tag its source
digest; B alone fails exactly the images that need a blob only A brought, naming delivery A; B converted
with `--blobs-from` an OUT of A gives the same files as converting the whole storage."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MAIN_ARCHIVE, regcarve
from registry import LiveRegistry

FIRST = ["team/web:1.0", "app:v1", "team/multi:latest"]
# team/web:2.0 shares 1.0's base layer in its repository; foo and team/oci-multi share A's layers from
# other repositories (a mount); team/zstd:1 shares nothing with A
MORE = ["team/web:2.0", "foo:latest", "team/oci-multi:1", "team/zstd:1"]
RETAG = "team/web:again"  # team/web:1.0's manifest under a new tag: nothing of it is new


@dataclass
class Deliveries:
    a: Path  # MEDIA of delivery A
    b: Path  # MEDIA of delivery B, --since A
    digests: dict[str, str]  # every tag of the source when B was packed → its digest
    full: Path  # that storage converted whole (--format dir), for comparison


def volumes(media: Path) -> list[dict]:
    return json.loads((media / "pack.json").read_text())["volumes"]


@pytest.fixture(scope="module")
def deliveries(tmp_path_factory) -> Deliveries:
    tmp = tmp_path_factory.mktemp("delta")
    with LiveRegistry() as source:
        push = ["push", MAIN_ARCHIVE, source.host, "--plain-http", "-q"]
        assert regcarve(*push, *sum((["--image", r] for r in FIRST), [])).code == 0
        run = regcarve("pack", source.root, "-o", tmp / "a", "--volume-size", "1600K", "--name", "deliv-a")
        assert run.code == 0, run.stderr
        assert regcarve(*push, *sum((["--image", r] for r in MORE), [])).code == 0
        _, content_type, raw = source.manifest("team/web", "1.0")
        status, _, _ = source.request("PUT", "/v2/team/web/manifests/again", body=raw,
                                      headers={"Content-Type": content_type})
        assert status == 201
        # every tag the source holds: the named ones and what came with them (a signature travels with its image)
        every = [f"{repo}:{tag}" for repo in source.catalog() for tag in source.tags(repo)]
        assert set(FIRST + MORE + [RETAG]) <= set(every)
        digests = {r: source.manifest(*r.rsplit(":", 1))[0] for r in every}
        run = regcarve("pack", source.root, "-o", tmp / "b", "--volume-size", "300K", "--name", "deliv-b",
                       "--since", tmp / "a" / "pack.json")
        assert run.code == 0, run.stderr
        run = regcarve("convert", source.root, "-o", tmp / "full", "-q")
        assert run.code == 0, run.stderr
    assert len(volumes(tmp / "b")) >= 2
    return Deliveries(tmp / "a", tmp / "b", digests, tmp / "full")


def _blobs_of(manifest: dict) -> set[str]:
    out, stack = set(), [manifest]
    while stack:
        m = stack.pop()
        stack += m.get("children", [])
        out.update(d["digest"] for d in [m.get("config")] + m.get("layers", []) if d)
    return out


def _tags_of(volume_file: Path) -> dict[str, dict]:
    """ref → the tag entry of `list --json` (read without its pack.json: expected blobs show as missing)."""
    return {t["ref"]: t for t in json.loads(regcarve("list", "--json", volume_file).stdout)["tags"]}


def _stored_layers_and_configs(media: Path) -> set[str]:
    """Every config and layer a delivery's volumes store (manifests are shipped every time)."""
    out = set()
    for volume in volumes(media):
        for tag in _tags_of(media / volume["file"]).values():
            out |= _blobs_of(tag["manifest"])
    return out & {d for v in volumes(media) for d in v["stored"]}


def _untar_into(media: Path, root: Path) -> None:
    for volume in volumes(media):
        with tarfile.open(media / volume["file"]) as tar:
            tar.extractall(root, filter="data")


def _push_volumes(media: Path, host: str, *extra) -> list:
    return [regcarve("push", media / v["file"], host, "--plain-http", *extra) for v in volumes(media)]


def _assert_every_tag_served(reg: LiveRegistry, digests: dict[str, str]) -> None:
    """Every tag with its source digest, and every config and layer of it readable from its repository."""
    for ref, digest in digests.items():
        repo, tag = ref.rsplit(":", 1)
        got, _, body = reg.manifest(repo, tag)
        assert got == digest, ref
        doc = json.loads(body)
        children = [reg.manifest(repo, c["digest"])[2] for c in doc.get("manifests", [])]
        for m in [doc] + [json.loads(c) for c in children]:
            for d in ([m["config"]] if m.get("config") else []) + m.get("layers", []):
                status, _, data = reg.request("GET", f"/v2/{repo}/blobs/{d['digest']}")
                assert status == 200 and "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"], (ref, d)


def test_b_ships_no_blob_a_shipped_and_untarred_after_a_serves_every_tag(deliveries, tmp_path):
    a, b = deliveries.a, deliveries.b
    shipped_a, shipped_b = _stored_layers_and_configs(a), _stored_layers_and_configs(b)
    assert shipped_a and shipped_b and not shipped_a & shipped_b
    expects = {e["digest"]: e for v in volumes(b) for e in v["expects"]}
    assert expects and set(expects) <= shipped_a and all("deliv-a" in e["from"] for e in expects.values())
    assert all(e["repositories"] for e in expects.values())  # where a receiving push may mount them from
    assert regcarve("verify", b).code == 0  # a blob expected from delivery A may be absent from B
    storage = tmp_path / "far" / "storage"
    storage.mkdir(parents=True)
    _untar_into(a, storage)
    with LiveRegistry(storage) as far:  # the far side got A and serves it …
        for ref in FIRST:
            assert far.manifest(*ref.rsplit(":", 1))[0] == deliveries.digests[ref]
    _untar_into(b, storage)
    with LiveRegistry(storage) as far:  # … then B on top: every tag with its source digest
        _assert_every_tag_served(far, deliveries.digests)


def test_push_a_then_b_into_a_fresh_registry(deliveries):
    with LiveRegistry() as reg:
        for run in _push_volumes(deliveries.a, reg.host):
            assert run.code == 0, run.stderr
        runs = _push_volumes(deliveries.b, reg.host)
        for run in runs:
            assert run.code == 0, run.stderr
        said = " ".join(r.stderr for r in runs)
        assert "expected from earlier deliveries found in the registry" in said
        mounted = sum(int(m.group(1)) for r in runs for m in re.finditer(r"\((\d+) mounted from another", r.stderr))
        assert mounted > 0  # foo and team/oci-multi take A's layers from other repositories
        _assert_every_tag_served(reg, deliveries.digests)


def test_b_alone_into_a_registry_that_got_a(deliveries, tmp_path):
    storage = tmp_path / "far" / "storage"
    storage.mkdir(parents=True)
    _untar_into(deliveries.a, storage)
    with LiveRegistry(storage) as reg:
        for run in _push_volumes(deliveries.b, reg.host, "-q"):
            assert run.code == 0, run.stderr
        _assert_every_tag_served(reg, deliveries.digests)


def _needing_expected(media: Path) -> dict[str, set[str]]:
    """Every image of the delivery → the blobs it needs that its volume expects from an earlier delivery."""
    out = {}
    for volume in volumes(media):
        expected = {e["digest"] for e in volume["expects"]}
        for ref, tag in _tags_of(media / volume["file"]).items():
            out[ref] = _blobs_of(tag["manifest"]) & expected
    return out


def test_b_alone_into_a_fresh_registry_fails_exactly_the_images_needing_expected_blobs(deliveries):
    needing = _needing_expected(deliveries.b)
    assert {r for r, n in needing.items() if not n} == {"team/zstd:1"}
    with LiveRegistry() as reg:
        dry = _push_volumes(deliveries.b, reg.host, "--dry-run")
        runs = _push_volumes(deliveries.b, reg.host)
        for run, dry_run in zip(runs, dry):
            assert run.code == 1 == dry_run.code, run.stderr
        said = "\n".join(r.stderr for r in runs)
        for ref, blobs in needing.items():
            if blobs:
                (line,) = [l for l in said.splitlines() if l.startswith(f"failed  {ref}: ")]
                assert "is expected from delivery deliv-a (" in line and "push that delivery first" in line
                assert any(d in line for d in blobs)
                (planned,) = [l for r in dry for l in r.stderr.splitlines() if l.startswith(f"failed  {ref}: ")]
                assert "is expected from delivery deliv-a (" in planned  # a dry run finds the same, by HEADs only
                assert ref.rsplit(":", 1)[1] not in reg.tags(ref.rsplit(":", 1)[0])
            else:
                assert reg.manifest(*ref.rsplit(":", 1))[0] == deliveries.digests[ref]
        status, _, _ = reg.request("HEAD", f"/v2/foo/blobs/{sorted(needing['foo:latest'])[0]}")
        assert status == 404  # nothing was uploaded in its place


def _convert_volumes(media: Path, into: Path, *extra) -> list[tuple[Path, object]]:
    outs = []
    for n, volume in enumerate(volumes(media)):
        out = into / f"out{n}"
        outs.append((out, regcarve("convert", media / volume["file"], "-o", out, "-q", *extra)))
    return outs


def _image_files(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in out.rglob("*") if p.is_file() and ".regcarve" not in p.parts}


def test_convert_b_with_blobs_from_an_out_of_a_gives_the_full_storage_s_files(deliveries, tmp_path):
    a_outs = _convert_volumes(deliveries.a, tmp_path / "a")
    assert all(run.code == 0 for _, run in a_outs)
    blobs_from = sum((["--blobs-from", out] for out, _ in a_outs), [])
    b_outs = _convert_volumes(deliveries.b, tmp_path / "b", *blobs_from)
    full = _image_files(deliveries.full)
    written = set()
    for out, run in b_outs:
        assert run.code == 0, run.stderr
        assert "taken from earlier OUTs (each hashed)" in run.stderr
        for rel, path in _image_files(out).items():
            assert filecmp.cmp(path, full[rel], shallow=False), rel
            written.add(rel.split("/")[0] if ":" in rel.split("/")[0] else rel.rsplit("/", 1)[0])
        with LiveRegistry() as reg:  # and skopeo takes them
            p = subprocess.run(["skopeo", "sync", "--src", "dir", "--dest", "docker", "--scoped", "--all",
                                "--dest-tls-verify=false", str(out), reg.host], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr[-3000:]
            for ref in _tags_of(out):
                assert reg.manifest(*ref.rsplit(":", 1))[0] == deliveries.digests[ref]
    assert written == {r for r in deliveries.digests}


def test_convert_b_alone_fails_the_images_needing_expected_blobs(deliveries, tmp_path):
    needing = _needing_expected(deliveries.b)
    for out, run in _convert_volumes(deliveries.b, tmp_path):
        assert run.code == 1
        for line in run.stderr.splitlines():
            if line.startswith("failed "):
                ref = line.split()[1].rstrip(":")
                assert needing[ref] and "expected from delivery deliv-a (" in line
        assert not [ref for ref, n in needing.items() if n and (out / ref).exists()]


def test_a_tampered_earlier_out_is_passed_over(deliveries, tmp_path):
    (a_out, run), *_ = _convert_volumes(deliveries.a, tmp_path / "a")
    tampered = tmp_path / "tampered"
    shutil.copytree(a_out, tampered)  # copies: the original keeps its bytes
    volume = next(v for v in volumes(deliveries.b) if any(i["ref"] == "foo:latest" for i in v["images"]))
    base = next(e["digest"] for e in volume["expects"] if "foo" in e["repositories"])
    victim = tampered / ".regcarve" / "blobs" / "sha256" / base.removeprefix("sha256:")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    run = regcarve("convert", deliveries.b / volume["file"], "-o", tmp_path / "out", "--blobs-from", tampered)
    assert run.code == 1
    assert f"{victim} does not hash to its name; passed over" in run.stderr
    assert f"failed  foo:latest: layer {base} is not in this input: expected from delivery deliv-a (" in run.stderr


def test_list_knows_expected_blobs_from_the_pack_json_beside_or_named(deliveries, tmp_path):
    volume = volumes(deliveries.b)[0]
    beside = regcarve("list", deliveries.b / volume["file"])
    assert beside.code == 1 and "expected-blob" in beside.stderr and "deliv-a" in beside.stderr
    assert "delivery deliv-b (" in beside.stderr and "missing-blob" not in beside.stderr
    moved = tmp_path / "moved.tar"
    os.link(deliveries.b / volume["file"], moved)
    alone = regcarve("list", moved)
    assert alone.code == 1 and "missing-blob" in alone.stderr and "expected-blob" not in alone.stderr
    named = regcarve("list", moved, "--pack-json", deliveries.b / "pack.json")
    assert named.code == 1 and "expected-blob" in named.stderr and "missing-blob" not in named.stderr
    bad = regcarve("list", moved, "--pack-json", MAIN_ARCHIVE)
    assert bad.code == 2 and f"--pack-json {MAIN_ARCHIVE}: " in bad.stderr
    (tmp_path / "other.json").write_text('{"schema": "regcarve.inventory/v1"}')
    bad = regcarve("list", moved, "--pack-json", tmp_path / "other.json")
    assert bad.code == 2 and "--pack-json " in bad.stderr and "not a regcarve pack index" in bad.stderr
    bad = regcarve("convert", moved, "-o", tmp_path / "o", "--blobs-from", tmp_path)
    assert bad.code == 2 and "not an OUT that `regcarve convert --format dir` wrote" in bad.stderr


def test_push_a_then_b_with_bearer_tokens(deliveries, tmp_path):
    """With a token service, B's expected layers are still found and mounted across repositories (a mount
    needs a token with pull on the repository it comes from)."""
    from tokenissuer import TokenIssuer

    with TokenIssuer(tmp_path / "tokens", {"alice": "secret"}) as issuer, LiveRegistry(token=issuer) as reg:
        for run in _push_volumes(deliveries.a, reg.host, "--creds", "alice:secret"):
            assert run.code == 0, run.stderr
        runs = _push_volumes(deliveries.b, reg.host, "--creds", "alice:secret")
        assert all(r.code == 0 for r in runs), [r.stderr for r in runs]
        assert sum(int(m.group(1)) for r in runs for m in re.finditer(r"\((\d+) mounted from another", r.stderr)) > 0
        _assert_every_tag_served(reg, deliveries.digests)


def test_a_and_b_given_together_are_one_storage_with_no_expected_blob_missing(deliveries, tmp_path):
    """A's MEDIA then B's, read as one storage: what B expects, A holds; nothing is missing or expected."""
    out = tmp_path / "out"
    run = regcarve("convert", deliveries.a, deliveries.b, "-o", out, "-q")
    assert run.code == 0, run.stderr
    assert "expected-blob" not in run.stderr and "is not in this input" not in run.stderr
    expected = {e["digest"] for v in volumes(deliveries.b) for e in v["expects"]}
    assert f"{len(expected)} blob(s) expected from earlier deliveries: deliv-a" in run.stderr
    assert f"; {len(expected)} of them are in the input itself" in run.stderr
    full, written = _image_files(deliveries.full), _image_files(out)
    assert set(written) == set(full)
    assert all(filecmp.cmp(path, full[rel], shallow=False) for rel, path in written.items())
    listed = json.loads(regcarve("list", "--json", deliveries.a, deliveries.b).stdout)
    assert {t["ref"]: t["digest"] for t in listed["tags"]} == deliveries.digests
    assert all(t["status"] == "ok" for t in listed["tags"])
    files = [d / v["file"] for d in (deliveries.a, deliveries.b) for v in volumes(d)]
    with LiveRegistry() as reg:  # every volume of both deliveries, in one push
        run = regcarve("push", *files, reg.host, "--plain-http", "-q")
        assert run.code == 0, run.stderr
        _assert_every_tag_served(reg, deliveries.digests)
    alone = regcarve("list", deliveries.b)  # B's MEDIA alone: its pack.json says what is expected, and from whom
    assert alone.code == 1 and "expected-blob" in alone.stderr and "missing-blob" not in alone.stderr

"""Storage read as an extracted folder: the committed fixtures, extracted with real `tar`, give what their
tarballs give; blobs are hardlinked, the storage is never written, and hostile or damaged trees fail only
the images they touch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import GC_ARCHIVE, MAIN_ARCHIVE, regcarve
from test_golden import FIXTURES, GOLDEN, VARIANTS, tree

ROOT = "docker/registry/v2"


def extract(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(into)], check=True)
    return into


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> dict[str, Path]:
    """Each fixture extracted once, for the tests that only read it (they prove they do)."""
    base = tmp_path_factory.mktemp("extracted")
    return {name: extract(archive, base / name) for name, archive in FIXTURES.items()}


@pytest.fixture
def storage(tmp_path) -> Path:
    """A fresh extraction of the main fixture, for a test that damages it."""
    return extract(MAIN_ARCHIVE, tmp_path / "storage")


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every name below `folder` with its kind, size, mode, mtime and content (or link target)."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                content = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                content = ""
            listing[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, content)
    return listing


def inventory(*args) -> tuple[int, dict]:
    run = regcarve("list", "--json", "--untagged", *args)
    assert run.code in (0, 1), run.stderr
    return run.code, json.loads(run.stdout)


def without_input(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "input"}


def blob_data(storage_root: Path, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    return storage_root / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"


# --- one model --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_list_json_equals_the_tarballs(fixture, extracted):
    before = snapshot(extracted[fixture])
    tar_code, from_tar = inventory(FIXTURES[fixture])
    tree_code, from_tree = inventory(extracted[fixture])
    assert tree_code == tar_code
    assert without_input(from_tree) == without_input(from_tar)
    assert from_tree["tags"] and from_tree["blobs"]["verified"] == from_tar["blobs"]["verified"] > 0
    facts = from_tree["input"]
    assert facts["compression"] == "directory" and facts["verification"] == "sha256"
    assert facts["storage_root"] == str((extracted[fixture] / ROOT).resolve())
    assert facts["storage_prefixes"] == from_tar["input"]["storage_prefixes"]
    assert snapshot(extracted[fixture]) == before


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_convert_gives_the_tarballs_files(fixture, variant, extracted, tmp_path):
    """The recorded trees of test_golden were made from the tarballs: the folder must give the same files,
    the same contents, the same report (but for how the input was read) and the same exit code."""
    before = snapshot(extracted[fixture])
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = [a.replace("{out}", str(out)) for a in VARIANTS[variant]]
    run = regcarve("convert", extracted[fixture], "-o", out, "--report", report, "-q", *args)
    got = tree(out, report)
    want = json.loads((GOLDEN / f"{fixture}.{variant}.json").read_text())
    assert run.code == want["exit"], run.stderr
    assert got["report"]["input"]["compression"] == "directory"
    for doc in (got, want):
        doc["report"].pop("input")
        doc["report"]["problems"].sort(key=lambda p: json.dumps(p, sort_keys=True))  # in the order the input met them: a walk's, a tar's
    assert got["report"] == want["report"]
    assert got["files"] == want["files"]
    assert snapshot(extracted[fixture]) == before


@pytest.mark.parametrize("spelling", ["", "docker", "docker/registry", "docker/registry/v2"])
def test_every_root_spelling_is_found_and_said(spelling, extracted):
    given = extracted["registry"] / spelling
    run = regcarve("list", "--json", "--untagged", given)
    _, from_tar = inventory(MAIN_ARCHIVE)
    assert without_input(json.loads(run.stdout)) == without_input(from_tar)
    assert f"storage folder: {(extracted['registry'] / ROOT).resolve()}" in run.stderr


@pytest.mark.parametrize("inside,member", [("docker", "registry"), ("docker/registry", "v2")])
def test_a_tar_rooted_lower_is_storage_too(inside, member, extracted, tmp_path):
    archive = tmp_path / "lower.tar"
    subprocess.run(["tar", "-C", str(extracted["registry"] / inside), "-cf", str(archive), member], check=True)
    _, from_tar = inventory(MAIN_ARCHIVE)
    code, lower = inventory(archive)
    assert without_input(lower) == without_input(from_tar)
    assert lower["input"]["storage_prefixes"] == [""]


def test_a_folder_without_storage_is_refused_with_where_it_looked(tmp_path):
    (tmp_path / "v2" / "blobs").mkdir(parents=True)  # no repositories/ beside it
    run = regcarve("list", tmp_path)
    assert run.code == 3
    assert "no registry storage found" in run.stderr and str(tmp_path / "docker/registry/v2") in run.stderr


# --- no copy, no write ------------------------------------------------------------------------------------
def test_dir_output_hardlinks_every_blob_and_leaves_the_storage_unchanged(extracted, tmp_path):
    folder = extracted["registry"]
    before = snapshot(folder)
    out = tmp_path / "out"
    run = regcarve("convert", folder, "-o", out, "-q")
    assert run.code == 1, run.stderr  # the nested index is skipped, as from the tarball
    root = folder / ROOT
    checked = 0
    for image in out.rglob("version"):
        if ".regcarve" in image.parts:
            continue
        for f in image.parent.iterdir():
            if f.name == "version":
                continue
            digest = "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
            data = blob_data(root, digest)
            if f.name == "manifest.json" and not data.exists():
                continue  # a manifest made by the run (a schema1 signed afresh), not a stored blob
            assert os.stat(f).st_ino == os.stat(data).st_ino, f
            checked += 1
    assert checked > 40
    assert "blobs were copied" not in run.stderr and "blobs were reflinked" not in run.stderr
    # a rerun replaces what OUT holds: each linked file is unlinked and linked again, never written through
    again = regcarve("convert", folder, "-o", out, "-q")
    assert again.code == 1, again.stderr
    assert snapshot(folder) == before


def test_out_on_another_filesystem_is_copied_and_said_once(extracted):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(extracted["registry"]).st_dev:
        pytest.skip("no second filesystem here")
    out = shm / f"regcarve-test-{os.getpid()}"
    try:
        run = regcarve("convert", extracted["registry"], "-o", out)
        assert run.code == 1
        notes = [line for line in run.stderr.splitlines() if "blobs were copied" in line]
        assert notes == ["note: blobs were copied: OUT is on another filesystem than the blobs, and reflinks too"], \
            run.stderr
        layer = next(p for p in out.rglob("*") if p.is_file() and len(p.name) == 64)
        assert os.stat(layer).st_nlink <= 2  # the store's copy and this one, never the storage's file
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_an_output_inside_the_storage_is_refused(option, storage, tmp_path):
    before = snapshot(storage)
    inside = storage / "docker" / "registry" / "v2" / "out"
    args = ["-o", inside] if option == "-o" else ["-o", tmp_path / "out", "--report", inside]
    run = regcarve("convert", storage / "docker", *args)
    assert run.code == 2 and "never writes into the storage" in run.stderr
    assert snapshot(storage) == before


def test_verify_size_is_for_folders_only():
    run = regcarve("list", "--verify", "size", MAIN_ARCHIVE)
    assert run.code == 2 and "applies to a storage folder" in run.stderr


# --- damaged and hostile trees ----------------------------------------------------------------------------
def _node_digests(node: dict) -> set[str]:
    found = {node["digest"]}
    if node.get("config"):
        found.add(node["config"]["digest"])
    found |= {layer["digest"] for layer in node.get("layers", [])}
    for child in node.get("children", []):
        found |= _node_digests(child)
    return found


def users(doc: dict) -> dict[str, set[str]]:
    """Blob digest → the refs of the tags whose images use it."""
    found: dict[str, set[str]] = {}
    for tag in doc["tags"]:
        if tag["manifest"]:
            for digest in _node_digests(tag["manifest"]):
                found.setdefault(digest, set()).add(tag["ref"])
    return found


def layer_users(doc: dict) -> dict[str, set[str]]:
    layers = {layer["digest"] for tag in doc["tags"] if tag["manifest"] for layer in tag["manifest"].get("layers", [])}
    return {digest: refs for digest, refs in users(doc).items() if digest in layers}


def a_layer_few_tags_use(doc: dict) -> tuple[str, set[str]]:
    digest, refs = min(layer_users(doc).items(), key=lambda item: (len(item[1]), item[0]))
    assert 0 < len(refs) < len(doc["tags"]) - 1
    return digest, refs


def failed(run) -> set[str]:
    return {line.split()[1].rstrip(":") for line in run.stderr.splitlines() if line.startswith("failed ")}


def test_a_flipped_byte_fails_exactly_its_images(storage, tmp_path):
    _, whole = inventory(MAIN_ARCHIVE)
    digest, refs = a_layer_few_tags_use(whole)
    data = blob_data(storage / ROOT, digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(raw)
    code, doc = inventory(storage)
    assert code == 1 and doc["blobs"]["corrupt"] == [digest]
    assert {t["ref"] for t in doc["tags"] if t["status"] == "broken"} == refs
    run = regcarve("convert", storage, "-o", tmp_path / "out")
    assert failed(run) == refs
    assert all("is corrupt (its bytes hash to" in line for line in run.stderr.splitlines() if line.startswith("failed"))
    # with sizes only, a byte flipped in place is taken for the right bytes: that is the trade, said plainly
    run = regcarve("convert", storage, "-o", tmp_path / "out-size", "--verify", "size")
    assert failed(run) == set() and "blobs NOT hashed" in run.stderr


def test_verify_size_catches_a_truncated_blob_and_says_nothing_was_hashed(storage, tmp_path):
    _, whole = inventory(MAIN_ARCHIVE)
    digest, refs = a_layer_few_tags_use(whole)
    data = blob_data(storage / ROOT, digest)
    os.truncate(data, data.stat().st_size - 100)
    report = tmp_path / "report.json"
    run = regcarve("convert", storage, "-o", tmp_path / "out", "--verify", "size", "--report", report)
    assert failed(run) == refs, run.stderr
    assert f"{data.stat().st_size} bytes in the storage" in run.stderr
    assert "--verify size:" in run.stderr and "NOT hashed" in run.stderr
    assert json.loads(report.read_text())["input"]["verification"] == "size"
    code, doc = inventory("--verify", "size", storage)
    assert doc["input"]["verification"] == "size" and doc["blobs"]["not_hashed"] > 0
    assert {t["ref"] for t in doc["tags"] if t["status"] == "broken"} == refs


def test_a_symlink_out_of_the_storage_is_not_followed(storage, tmp_path):
    _, whole = inventory(MAIN_ARCHIVE)
    digest, refs = a_layer_few_tags_use(whole)
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:SECRET-HASH:19000:0:99999:7:::\n")
    data = blob_data(storage / ROOT, digest)
    data.unlink()
    data.symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"  # a whole repository planted behind a symlinked folder
    shutil.copytree(storage / ROOT / "repositories" / "app", elsewhere)
    (storage / ROOT / "repositories" / "planted").symlink_to(elsewhere)
    out = tmp_path / "out"
    run = regcarve("convert", storage, "-o", out, "--format", "oci")
    assert failed(run) == refs
    listed = regcarve("list", storage)
    assert f"{ROOT}/blobs/sha256/{digest[7:9]}/{digest[7:]}/data: symlink ignored" in listed.stderr
    assert f"{ROOT}/repositories/planted: symlink ignored" in listed.stderr
    assert "planted" not in listed.stdout
    written = {line.split()[1] for line in run.stdout.splitlines() if line.startswith("written ")}
    ok = {t["ref"] for t in whole["tags"] if t["status"] == "ok"}
    assert written == ok - refs - {"team/nested:1"}  # a nested index is skipped whatever the source
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(b"SECRET" not in p.read_bytes() for p in files)


def test_a_fifo_is_refused_without_blocking(storage):
    link = storage / ROOT / "repositories" / "app" / "_manifests" / "tags" / "v1" / "current" / "link"
    link.unlink()
    os.mkfifo(link)
    run = regcarve("list", storage)
    assert run.code == 0  # as a FIFO member of a tarball: a warning, the link is not there
    assert f"{ROOT}/repositories/app/_manifests/tags/v1/current/link: FIFO ignored (never opened)" in run.stderr
    assert "app:v1" not in run.stdout and "team/web:1.0" in run.stdout
    assert regcarve("list", "--strict", storage).code == 1


# --- a live storage ---------------------------------------------------------------------------------------
def test_a_blob_gone_or_replaced_after_verification_fails_exactly_its_images(storage, tmp_path):
    """The run's own steps, with the storage changed between the read and the writing, as a running
    registry (or its garbage collector) could change it."""
    from regcarve.run import Selection, convert, read_catalog
    from regcarve.sinks import sink_class
    from regcarve.sinks.base import Options, Status
    from regcarve.sinks.fsout import OutFolder, prepare_out
    from regcarve.sources import open_source

    _, whole = inventory(MAIN_ARCHIVE)
    gone, gone_refs = a_layer_few_tags_use(whole)
    replaced, replaced_refs = next((d, r) for d, r in sorted(layer_users(whole).items(), key=lambda i: len(i[1]))
                                   if not r & gone_refs)
    out = tmp_path / "out"
    store = prepare_out(out, force=False)
    source = open_source(str(storage))
    catalog = read_catalog(source, store)
    blobs = source.blobs(catalog.inventory, store)
    blob_data(storage / ROOT, gone).unlink()  # garbage-collected
    data = blob_data(storage / ROOT, replaced)  # rewritten: a new file renamed over the old one
    fresh = data.with_name("fresh")
    fresh.write_bytes(data.read_bytes())
    fresh.replace(data)
    outcome = convert(catalog, store, blobs, sink_class("dir")(OutFolder(out), blobs, Options()), Selection())
    failures = {r.ref: r.reason for r in outcome.results if r.status.value == "failed"}
    assert set(failures) == gone_refs | replaced_refs
    assert all("vanished after it was verified" in failures[ref] for ref in gone_refs)
    assert all("changed after it was verified" in failures[ref] for ref in replaced_refs)
    assert outcome.count(Status.WRITTEN) == len(whole["tags"]) - len(failures) - 1  # the nested index is skipped


def test_push_reads_the_folder_in_place(extracted, tmp_path):
    from conftest import load_truth
    from registry import LiveRegistry

    truth = load_truth(MAIN_ARCHIVE)
    before = snapshot(extracted["registry"])
    with LiveRegistry() as reg:
        report = tmp_path / "r.json"
        run = regcarve("push", extracted["registry"] / "docker", reg.host, "--plain-http", "--report", report, "-q")
        assert run.code == 0, run.stderr
        assert "storage folder" in run.stderr and "hashed in place" in run.stderr
        for t in truth["tags"]:
            assert reg.manifest(t["repo"], t["tag"])[0] == t["digest"], t
        assert json.loads(report.read_text())["summary"]["pushed"] == len(truth["tags"])
    assert snapshot(extracted["registry"]) == before

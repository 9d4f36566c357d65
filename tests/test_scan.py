"""The one-pass scanner on crafted tars: whatever the member order, prefix, header format or
hardlinking, the same storage gives the same inventory; `list` reads its input exactly once."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
import threading

import pytest
import zstandard

from conftest import MAIN_ARCHIVE, regcarve
from regcarve.sources.tarball import open_input
from regcarve.blobs.store import BlobStore
from regcarve.model.catalog import resolve
from regcarve.report import catalog_json
from regcarve.sources.tarball.scan import scan
from storagetar import ROOT, Entry, Storage, build_tar, fixture_entries, sha256, tag_path


def build() -> Storage:
    """A bit of everything: nested repositories, an index, an untagged revision, uploads, OCI and Docker."""
    s = Storage()
    s.image("app", "v1", seed=1, layers=2)
    s.image("foo", "latest", seed=2)
    s.image("foo/latest", "1", seed=3, oci=True)
    s.image("team/web", None, seed=4)  # pushed by digest only
    s.index("team/multi", "latest", [s.image("x", None, seed=5, push=False),
                                     s.image("x", None, seed=5, arch="arm64", push=False)], oci=True)
    s.upload("team/web", "5e3a8c1e-0000-4000-8000-000000000001", b"half an upload")
    return s


def inventory(data: bytes, store: BlobStore | None = None) -> dict:
    with open_input(io.BytesIO(data)) as inp:
        return catalog_json(resolve(scan(inp, store)), untagged=True)


def without_input(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "input"}


@pytest.fixture(scope="module")
def storage() -> Storage:
    return build()


@pytest.fixture(scope="module")
def reference(storage) -> dict:
    doc = inventory(storage.tar())
    assert {t["ref"]: t["status"] for t in doc["tags"]} == {
        "app:v1": "ok", "foo:latest": "ok", "foo/latest:1": "ok", "team/multi:latest": "ok"}
    assert len(doc["untagged"]) == 1 and doc["problems"] == []
    return doc


@pytest.mark.parametrize("order", ["reversed", "blobs-first", "repos-first", 1, 2, 3])
def test_member_order_does_not_matter(storage, reference, order):
    data = storage.tar(order=random.Random(order) if isinstance(order, int) else order)
    assert without_input(inventory(data)) == without_input(reference)


def test_directories_are_optional(storage, reference):
    assert without_input(inventory(storage.tar(dirs=False))) == without_input(reference)


@pytest.mark.parametrize("prefix", ["./", "var/lib/registry/", "./data/registry/", "/", "/srv/backup/2026/"])
def test_leading_prefixes(storage, reference, prefix):
    doc = inventory(storage.tar(prefix=prefix))
    assert doc["input"]["storage_prefixes"] == [prefix]
    assert without_input(doc) == without_input(reference)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_header_formats(storage, reference, fmt):
    data = storage.tar(fmt=fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert max(len(n) for n in tf.getnames()) > 100  # GNU long names, PAX paths, ustar prefixes
    assert without_input(inventory(data)) == without_input(reference)


def test_pax_records_and_global_headers(storage, reference):
    entries = storage.entries()
    for i, e in enumerate(entries):
        e.extra = {"mtime": f"1700000000.{i}", "comment": "ünïcödé", "SCHILY.xattr.user.x": "1"}
    data = build_tar(entries, fmt=tarfile.PAX_FORMAT, global_pax={"comment": "made by a test", "uname": "someone"})
    assert data[156:157] == b"g"
    assert without_input(inventory(data)) == without_input(reference)


def test_pax_path_overrides_the_header_name(storage, reference):
    entries = storage.entries()
    renamed = [Entry(f"x/{i}", e.kind, e.data, e.linkname, {"path": e.name}) for i, e in enumerate(entries)]
    data = build_tar(renamed, fmt=tarfile.PAX_FORMAT)
    assert without_input(inventory(data)) == without_input(reference)


def test_hardlinked_link_files_are_replayed(storage, reference):
    data = storage.tar(hardlink_dups=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        links = [ti for ti in tf if ti.islnk()]
    assert len(links) >= 8 and all(ti.name.endswith("/link") for ti in links)
    assert without_input(inventory(data)) == without_input(reference)
    # and behind a prefix, the link targets carrying it too
    assert without_input(inventory(storage.tar(hardlink_dups=True, prefix="./"))) == without_input(reference)


def test_a_blob_repeated_as_a_hardlink_to_itself(storage, reference):
    """`tar cf x.tar docker docker/registry/v2/blobs` stores the second copy of each file as a hard link."""
    entries = storage.entries()
    again = [Entry(e.name, "hardlink", linkname=e.name) for e in entries if e.kind == "file"]
    assert without_input(inventory(build_tar(entries + again))) == without_input(reference)
    # blobs first, then everything again: the same
    blobs = [e for e in entries if e.is_blob]
    repeat = [Entry(e.name, "hardlink", linkname=e.name) for e in blobs]
    assert without_input(inventory(build_tar(blobs + repeat + entries))) == without_input(reference)


def test_uploads_are_counted_and_never_stored(tmp_path, storage, reference):
    web = next(r for r in reference["repositories"] if r["name"] == "team/web")
    assert web["uploads"] == 3  # data, startedat, one hash state
    store = BlobStore(tmp_path / "store")
    doc = inventory(storage.tar(), store)
    assert store.digests() == {d for d in (sha256(v) for k, v in storage.files.items() if k.startswith("blobs/"))}
    assert sha256(b"half an upload") not in store.digests()
    assert not list(store.tmp.iterdir())
    assert doc["blobs"]["count"] == len(store.digests()) == doc["blobs"]["verified"]


def test_nested_repositories(reference):
    assert [r["name"] for r in reference["repositories"]] == ["app", "foo", "foo/latest", "team/multi", "team/web"]
    tags = {r["name"]: r["tags"] for r in reference["repositories"]}
    assert tags["foo"] == ["latest"] and tags["foo/latest"] == ["1"]


def test_scanning_the_fixture_in_any_order_gives_the_same_inventory(plain_tar):
    entries = fixture_entries(plain_tar.read_bytes())
    reference = without_input(inventory(plain_tar.read_bytes()))
    for seed in range(2):
        shuffled = build_tar(entries, order=random.Random(seed))
        assert without_input(inventory(shuffled)) == reference


def test_duplicate_link_paths_last_wins_and_earlier_problems_go(storage):
    entries = storage.entries()
    app = next(e for e in entries if e.name == f"{ROOT}/{tag_path('app', 'v1')}")
    other = sha256(b"other")
    doc = inventory(build_tar([Entry(app.name, data=b"garbage")] + entries))
    assert doc["problems"] == [] and next(t for t in doc["tags"] if t["ref"] == "app:v1")["status"] == "ok"
    doc = inventory(build_tar(entries + [Entry(app.name, data=other.encode())]))
    broken = next(t for t in doc["tags"] if t["ref"] == "app:v1")
    assert broken["digest"] == other and broken["problems"] == ["dangling-tag"]


def test_member_and_storage_counts(storage):
    doc = inventory(storage.tar(prefix="./"))
    entries = storage.entries()
    assert doc["input"]["members"] == len(entries)
    extra = [Entry("README", data=b"hi"), Entry("docker/other/", "dir")]
    doc = inventory(build_tar(extra + entries))
    assert doc["input"]["members"] == len(entries) + 2


# --------------------------------------------------------------------------- one read


def list_json(*args, input: bytes | None = None) -> tuple[int, dict]:
    run = regcarve("list", "--json", "-q", *args, input=input)
    assert "Traceback" not in run.stderr
    return run.code, json.loads(run.stdout)


@pytest.mark.parametrize("compression", ["tar", "gzip", "zstd"])
def test_list_reads_the_input_once(tmp_path, storage, compression):
    data = storage.tar()
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "in"
    path.write_bytes(data)
    code, doc = list_json(path)
    assert code == 0 and doc["input"]["bytes"] == len(data) and doc["input"]["compression"] == compression
    code, from_stdin = list_json("-", input=data)
    assert code == 0 and from_stdin == doc
    # a FIFO can be read once only: a second open or a seek would hang or fail
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    code, from_fifo = list_json(fifo)
    writer.join(timeout=30)
    assert code == 0 and from_fifo == doc


def test_list_of_the_fixture_reads_every_byte_once():
    code, doc = list_json(MAIN_ARCHIVE)
    assert doc["input"]["bytes"] == MAIN_ARCHIVE.stat().st_size
    assert doc["input"]["truncated"] is None

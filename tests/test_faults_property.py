"""Property test (issue 7): random registry-storage tarballs, with random member order, prefixes,
hardlinks, valid and invalid names, missing and corrupt pieces and hostile members. Whatever comes:
no unhandled exception, nothing written outside OUT, every valid complete image converted, every
broken one reported with a reason, and no file under a final name whose bytes are not its digest's."""

from __future__ import annotations

import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcheck import bad_files, image_dirs, snapshot
from regcarve.cli import main
from storagetar import (
    ROOT,
    Entry,
    Image,
    Storage,
    blob_path,
    build_tar,
    hardlink_duplicates,
    order_entries,
    sha256,
    tag_path,
)

VALID_REPOS = ["app", "team/web", "a/b/c", "foo", "foo/latest", "x-y.z__w"]
INVALID_REPOS = ["Upper", "a//b", "-lead", "trail-", "sp ace", "dot/./x"]
VALID_TAGS = ["v1", "latest", "1.0", "A_b-c.d"]
INVALID_TAGS = ["-x", ".hidden", "a" * 129, "sp ace"]

# what can go wrong with one image, and whether it is still written
FAULTS = {
    "none": True,
    "missing-layer": False,
    "corrupt-layer": False,
    "missing-config": False,
    "corrupt-config": False,
    "missing-manifest": False,
    "corrupt-manifest": False,
    "manifest-not-json": False,
    "garbage-tag-link": False,
    "no-revision-link": False,
    "symlinked-layer": False,
    "tag-link-hardlinked-outside": False,
    "duplicate-corrupt-layer-first": True,  # a corrupt copy, then the good one: the good one is kept
}

NOISE = [
    Entry(f"../{ROOT}/repositories/app/_manifests/tags/evil/current/link", data=b"sha256:" + b"0" * 64),
    Entry(f"{ROOT}/blobs/../../../../../escaped", data=b"nope"),
    Entry("/etc/regcarve-fuzz-should-not-exist", data=b"nope"),
    Entry(f"{ROOT}/repositories/linked", "symlink", linkname="/"),
    Entry(f"{ROOT}/{blob_path(sha256(b'dev'))}", "chr"),
    Entry(f"{ROOT}/repositories/app/_manifests/tags/fifo/current/link", "fifo"),
    Entry(f"{ROOT}/repositories/app/_uploads/u/data", data=b"upload"),
    Entry("README", data=b"not storage"),
]


@dataclass
class Spec:
    repo: str
    tag: str
    fault: str
    oci: bool
    layers: int

    @property
    def named(self) -> bool:
        return self.repo in VALID_REPOS and self.tag in VALID_TAGS


specs = st.lists(
    st.builds(Spec,
              repo=st.sampled_from(VALID_REPOS + INVALID_REPOS[:3]) | st.sampled_from(INVALID_REPOS),
              tag=st.sampled_from(VALID_TAGS) | st.sampled_from(INVALID_TAGS),
              fault=st.sampled_from(sorted(FAULTS)),
              oci=st.booleans(),
              layers=st.integers(1, 2)),
    min_size=1, max_size=4, unique_by=lambda s: (s.repo, s.tag))


def damage(s: Storage, img: Image, fault: str, extra: list[Entry]) -> None:
    layer, config = img.layer_digests[0], img.config_digest
    link = f"{ROOT}/{tag_path(img.repo, img.tag)}"
    if fault == "missing-layer":
        s.drop_blob(layer)
    elif fault == "corrupt-layer":
        s.corrupt_blob(layer)
    elif fault == "missing-config":
        s.drop_blob(config)
    elif fault == "corrupt-config":
        s.corrupt_blob(config)
    elif fault == "missing-manifest":
        s.drop_blob(img.digest)
    elif fault == "corrupt-manifest":
        s.corrupt_blob(img.digest)
    elif fault == "manifest-not-json":
        text = s.blob(f"not json {img.repo} {img.tag}".encode())
        s.revision(img.repo, text)
        s.tag_link(img.repo, img.tag, text)
    elif fault == "garbage-tag-link":
        s.tag_link(img.repo, img.tag, b"garbage\n")
    elif fault == "no-revision-link":
        del s.files[f"repositories/{img.repo}/_manifests/revisions/sha256/{img.digest[7:]}/link"]
    elif fault == "symlinked-layer":
        s.drop_blob(layer)
        extra.append(Entry(f"{ROOT}/{blob_path(layer)}", "symlink", linkname="/etc/passwd"))
    elif fault == "tag-link-hardlinked-outside":
        del s.files[tag_path(img.repo, img.tag)]
        extra.append(Entry(link, "hardlink", linkname="/etc/passwd"))
    elif fault == "duplicate-corrupt-layer-first":
        good = s.files[blob_path(layer)]
        extra.append(Entry(f"{ROOT}/{blob_path(layer)}", data=good[::-1]))  # put before the good copy below


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(specs=specs, index=st.sampled_from(["none", "whole", "missing-child"]), seed=st.integers(0, 2**16),
       prefix=st.sampled_from(["", "./", "var/lib/registry/", "/"]), hardlinks=st.booleans(),
       fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]), noise=st.sets(st.integers(0, len(NOISE) - 1)),
       repeat=st.integers(0, 3), compression=st.sampled_from([None, "gzip", "zstd"]))
def test_random_storage(tmp_path_factory, specs, index, seed, prefix, hardlinks, fmt, noise, repeat, compression):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    s = Storage()
    extra: list[Entry] = []
    expected: dict[str, bool] = {}  # ref → written
    for i, spec in enumerate(specs):
        img = s.image(spec.repo, spec.tag, seed=i, layers=spec.layers, oci=spec.oci)
        damage(s, img, spec.fault, extra)
        if spec.named:
            expected[img.ref] = FAULTS[spec.fault]
    if index != "none":
        children = [s.image("x", None, seed=100, push=False), s.image("x", None, seed=100, arch="arm64", push=False)]
        multi = s.index("team/multi", "latest", children)
        if index == "missing-child":
            s.drop_blob(children[1].digest)
        expected[multi.ref] = index == "whole"

    rnd = random.Random(seed)
    entries = order_entries(s.entries(dirs=rnd.random() < 0.5), rnd)
    if hardlinks:
        entries = hardlink_duplicates(entries)
    for e in extra:  # a corrupt copy goes before the good one; the rest anywhere
        good = next((j for j, x in enumerate(entries) if x.name == e.name), None)
        entries.insert(good if good is not None and e.kind == "file" else rnd.randrange(len(entries) + 1), e)
    for j in sorted(noise):
        entries.insert(rnd.randrange(len(entries) + 1), NOISE[j])
    for _ in range(repeat):  # the same member again, later: the same content changes nothing
        k = rnd.randrange(len(entries))
        if entries[k].kind == "file" and entries[k] not in extra:
            entries.insert(rnd.randrange(k, len(entries)) + 1, entries[k])
    data = build_tar(entries, prefix=prefix, fmt=fmt, compression=compression)

    src = tmp_path / "in.tar"
    src.write_bytes(data)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "-q", "--report", str(report)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info  # none unhandled
    assert snapshot(tmp_path, skip=out).keys() - {"report.json"} == before.keys()
    assert not Path("/etc/regcarve-fuzz-should-not-exist").exists()
    assert bad_files(out) == []

    written = {ref for ref, ok in expected.items() if ok}
    assert set(image_dirs(out)) == written
    doc = json.loads(report.read_text())
    status = {e["ref"]: e for e in doc["images"]}
    for ref, ok in expected.items():
        assert status[ref]["status"] == ("written" if ok else "failed"), (ref, status[ref])
        if not ok:
            assert status[ref]["reason"] and "\n" not in status[ref]["reason"]
    assert set(status) == set(expected)
    unnamed = any(not spec.named for spec in specs)
    assert result.exit_code == (0 if all(expected.values()) and not unnamed else 1), result.stderr
    for line in result.stderr.splitlines():
        assert line.isprintable()


KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "platform", "os",
        "architecture", "variant", "urls", "annotations", "fsLayers", "blobSum", "signatures", "artifactType"]
VALUES = [2, 1, -1, 0, True, None, 1.5, 10**30, "", "sha256:" + "a" * 64, "sha256:short",
          "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
          "application/vnd.docker.distribution.manifest.list.v2+json",
          "application/vnd.docker.distribution.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"]
documents = st.recursive(
    st.sampled_from(VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, with_blobs=st.booleans())
def test_random_manifest_documents(tmp_path_factory, doc, with_blobs):
    """Whatever JSON a tag's manifest blob holds: written when it resolves, else failed with a reason."""
    tmp_path = tmp_path_factory.mktemp("doc")
    s = Storage()
    good = s.image("app", "v1", seed=1)
    raw = json.dumps(doc).encode()
    digest = s.blob(raw)
    s.revision("x/doc", digest)
    s.tag("x/doc", "1", digest)
    if with_blobs:  # a blob at the path of the one digest the documents name, with other bytes
        s.files[blob_path("sha256:" + "a" * 64)] = b"not these bytes"
    src = tmp_path / "in.tar"
    src.write_bytes(s.tar())
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "-q", "--report", str(report)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code in (0, 1)
    assert bad_files(out) == []
    entries = {e["ref"]: e for e in json.loads(report.read_text())["images"]}
    assert entries[good.ref]["status"] == "written"
    mine = entries["x/doc:1"]
    assert mine["status"] in ("written", "skipped", "failed")
    assert (mine["status"] == "written") == (out / "x/doc:1" / "manifest.json").exists()
    if mine["status"] != "written":
        assert mine["reason"] and "\n" not in mine["reason"]

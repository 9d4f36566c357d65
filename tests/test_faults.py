"""Bad input and hostile archives (issue 7), through the real CLI: each fault's message, exit code,
and what is on disk afterwards. docs/faults.md is the table of what regcarve does for each.

Every run goes through `carve`, which also checks what no fault may ever do: raise an unhandled
exception, create or change anything outside OUT, or leave under OUT a file whose bytes do not
match its digest name, a temporary file, or a `dir:` image that lacks a file its manifest names.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from conftest import regcarve
from outcheck import bad_files, image_dirs, snapshot, store_digests
from storagetar import ROOT, Entry, Image, Storage, blob_path, build_tar, sha256, tag_path

EXIT_OK, EXIT_PROBLEMS, EXIT_INPUT = 0, 1, 3


@dataclass
class Carved:
    code: int
    lines: list[str]  # stderr
    out: Path
    report: dict | None

    @property
    def written(self) -> set[str]:
        return set(image_dirs(self.out)) if self.out.exists() else set()

    def line(self, start: str) -> str:
        """The one stderr line that starts so."""
        found = [x for x in self.lines if x.startswith(start)]
        assert len(found) == 1, (start, self.lines)
        return found[0]

    def status(self, ref: str) -> dict:
        return next(e for e in self.report["images"] if e["ref"] == ref)


def carve(tmp_path: Path, data: bytes, *args: str, out: str = "out", command: str = "convert") -> Carved:
    """Run `regcarve convert` on `data` into tmp_path/out, and check the promises every fault keeps."""
    src = tmp_path / "in.tar"
    src.write_bytes(data)
    out = tmp_path / out
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    before = snapshot(tmp_path, skip=out)
    if command == "convert":
        run = regcarve("convert", src, "-o", out, "-q", "--report", report, *args)
    else:
        run = regcarve(command, "-q", *args, src)
    assert "Traceback" not in run.stderr, run.stderr
    after = snapshot(tmp_path, skip=out)
    after.pop("report.json", None)
    assert after == before, "something outside OUT was created or changed"
    if out.exists():
        assert bad_files(out) == []
    doc = json.loads(report.read_text()) if report.exists() else None
    return Carved(run.code, run.stderr.splitlines(), out, doc)


def refs(*images: Image) -> set[str]:
    return {i.ref for i in images}


# --------------------------------------------------------------------------- input

def staged() -> tuple[list[Image], list[Entry]]:
    """Three images; the repositories first, then each image's blobs in turn, the middle one large."""
    s = Storage()
    imgs = [s.image("app", "v1", seed=1), s.image("team/big", "1", seed=2, layer_size=600_000),
            s.image("team/c", "1", seed=3)]
    entries = s.entries()
    blobs = {sha256(e.data): e for e in entries if e.is_blob}
    order = [e for e in entries if not e.is_blob]
    for img in imgs:
        order += [blobs[d] for d in [img.digest, img.config_digest, *img.layer_digests]]
    return imgs, order


def members(tar: bytes) -> dict[str, tuple[int, int, int]]:
    """member name → (header offset, data offset, end of its data)."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {ti.name: (ti.offset, ti.offset_data, ti.offset_data + (ti.size if ti.isfile() else 0)) for ti in tf}


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "lz4":
        return lz4.frame.compress(data, content_checksum=True)  # as the lz4 command writes by default
    return data


def decompressed_len(prefix: bytes, compression: str) -> int:
    if compression == "gzip":
        return len(zlib.decompressobj(31).decompress(prefix))
    return len(zstandard.ZstdDecompressor().decompressobj().decompress(prefix))


def cut_at(data: bytes, compression: str, offset: int) -> bytes:
    """`data` compressed, then cut where its decompressed stream reaches `offset`."""
    if compression == "tar":
        return data[:offset]
    comp = compress(data, compression)
    lo, hi = 0, len(comp)
    while lo < hi:
        mid = (lo + hi) // 2
        if decompressed_len(comp[:mid], compression) < offset:
            lo = mid + 1
        else:
            hi = mid
    return comp[:lo]


COMPRESSIONS = ["tar", "gzip", "zstd"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_truncated_inside_a_layer_writes_what_came_before(tmp_path, compression):
    (a, big, c), order = staged()
    tar = build_tar(order)
    layer = f"{ROOT}/{blob_path(big.layer_digests[0])}"
    cut = cut_at(tar, compression, members(tar)[layer][1] + 300_000)
    r = carve(tmp_path, cut)
    assert r.code == EXIT_PROBLEMS
    line = r.line("regcarve: input truncated:")
    assert f"inside member '{layer}'" in line
    assert r.written == refs(a)
    assert store_digests(r.out) == set(a.blobs)
    assert r.line(f"failed  {big.ref}: ") == (f"failed  {big.ref}: layer {big.layer_digests[0]} is not in the "
                                              "archive (the input is truncated)")
    assert r.line(f"failed  {c.ref}: ") == (f"failed  {c.ref}: manifest {c.digest} is not in the archive "
                                            "(the input is truncated)")
    assert r.report["summary"] == {"written": 1, "skipped": 0, "failed": 2}
    # the rest arrives: a rerun into the same OUT finishes the job
    r = carve(tmp_path, compress(tar, compression))
    assert r.code == EXIT_OK and r.written == refs(a, big, c)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_truncated_at_many_points(tmp_path, compression):
    """Whatever the cut, the images whose every member came before it are written; each other tag
    that was seen fails, saying the input is truncated; one line says where the input ended."""
    imgs, order = staged()
    tar = build_tar(order)
    spans = members(tar)
    links = [n for n in spans if n.endswith("/current/link")]
    blob_members = [n for n in spans if n.endswith("/data")]
    points = [spans[links[1]][0] + 700, spans[blob_members[0]][2] - 5, spans[blob_members[3]][0] + 512,
              spans[blob_members[5]][1] + 100_000, spans[blob_members[-2]][2] + 10, spans[blob_members[-1]][2]]
    for point in points:
        cut = cut_at(tar, compression, point)
        if len(cut) == len(compress(tar, compression)):
            continue  # zstd decodes whole blocks: this cut kept every one
        got = len(cut) if compression == "tar" else decompressed_len(cut, compression)  # zstd: whole blocks

        def before(name: str) -> bool:
            return spans[name][2] <= got

        r = carve(tmp_path, cut)
        assert r.code == EXIT_PROBLEMS, point
        r.line("regcarve: input truncated:")
        seen = [i for i in imgs if before(f"{ROOT}/{tag_path(i.repo, i.tag)}")]
        whole = [i for i in seen if all(before(f"{ROOT}/{blob_path(d)}") for d in i.blobs)]
        assert r.written == refs(*whole), point
        for i in seen:
            if i not in whole:
                assert r.line(f"failed  {i.ref}: ").endswith("is not in the archive (the input is truncated)")
        assert {e["ref"] for e in r.report["images"]} == refs(*seen)


@pytest.mark.parametrize("compression,size", [("tar", 300), ("tar", 511), ("gzip", 20), ("zstd", 20),
                                              ("tar", 1024)])
def test_truncated_before_any_storage_member_is_unusable_input(tmp_path, compression, size):
    _, order = staged()
    r = carve(tmp_path, compress(build_tar(order), compression)[:size])
    assert r.code == EXIT_INPUT
    assert r.lines == [r.line("regcarve: input truncated:")]
    assert r.written == set() and store_digests(r.out) == set()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_cut_on_a_member_boundary_is_truncation(tmp_path, compression):
    """No end-of-archive marker: the cut fell between members, and what followed is missing."""
    (a, big, c), order = staged()
    tar = build_tar(order)
    at = members(tar)[f"{ROOT}/{blob_path(c.digest)}"][0]
    r = carve(tmp_path, compress(tar[:at], compression))
    assert r.code == EXIT_PROBLEMS
    assert r.line("regcarve: input truncated:").startswith(
        "regcarve: input truncated: the tar ends without its end-of-archive marker")
    assert r.written == refs(a, big)
    assert r.line(f"failed  {c.ref}: ") == (f"failed  {c.ref}: manifest {c.digest} is not in the archive "
                                            "(the input is truncated)")


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_garbage_after_the_end_is_ignored_with_a_warning(tmp_path, compression):
    imgs, order = staged()
    tar = build_tar(order)
    data = compress(tar, compression) + b"this is not part of the archive\n" * 10
    r = carve(tmp_path, data)
    assert r.code == EXIT_OK
    assert r.line("regcarve: warning: ") == "regcarve: warning: 320 bytes of data after the end of the tar (ignored)"
    assert r.written == refs(*imgs)


@pytest.mark.parametrize("data,message", [
    (b"", "regcarve: input is empty"),
    (b"hello, this is a text file\n" * 40, "regcarve: input is not a tar archive (first bytes: 68 65 6c 6c 6f 2c 20 74)"),
    (b"PK\x03\x04" + bytes(600), "regcarve: input is not a tar archive (first bytes: 50 4b 03 04 = zip)"),
    (compress(b"just text, no tar\n" * 40, "gzip"),
     "regcarve: gzip-compressed input is not a tar archive (first bytes after decompression: 6a 75 73 74 20 74 65 78)"),
    (b"\x02\x21\x4c\x18" + bytes(600), "regcarve: input is lz4-compressed in the legacy format (lz4 -l); regcarve "
                                     "reads .tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2, .tar.lz4 — use: lz4 -dc FILE | regcarve … -"),
    (b"\xfd7zXZ\x00" + bytes(600), "regcarve: input corrupt: xz stream header fails its CRC32 check or names what xz "
                                   "does not know (Corrupt input data; at byte 0 of the input), before the first member "
                                   "(at byte 0 of the tar stream)"),
])
def test_input_that_is_not_a_tar(tmp_path, data, message):
    r = carve(tmp_path, data)
    assert r.code == EXIT_INPUT
    assert r.lines == [message]
    assert not r.out.exists()  # a run that cannot read its input leaves OUT as it found it
    r.out.mkdir()
    assert carve(tmp_path, data).code == EXIT_INPUT and list(r.out.iterdir()) == []


def test_a_tar_that_is_not_registry_storage(tmp_path):
    entries = [Entry("etc/", "dir"), Entry("etc/hosts", data=b"127.0.0.1 localhost\n"),
               Entry("var/lib/registry/", "dir")]
    for compression in COMPRESSIONS:
        r = carve(tmp_path, build_tar(entries, compression=None if compression == "tar" else compression))
        assert r.code == EXIT_INPUT
        assert r.lines == ["regcarve: no docker/registry/v2 found in 3 tar members: not registry storage"]
        r = carve(tmp_path, build_tar(entries), command="list")
        assert r.code == EXIT_INPUT and r.lines == [
            "regcarve: no docker/registry/v2 found in 3 tar members: not registry storage"]


def test_missing_input_file(tmp_path):
    run = regcarve("convert", tmp_path / "nope.tar", "-o", tmp_path / "out")
    assert run.code == EXIT_INPUT and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    assert run.stderr.startswith("regcarve: ") and len(run.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- storage


def two_good() -> tuple[Storage, list[Image]]:
    s = Storage()
    return s, [s.image("app", "v1", seed=1, layers=2), s.image("team/web", "1.0", seed=2, oci=True)]


def test_corrupt_blob_is_never_written_under_its_digest(tmp_path):
    s, good = two_good()
    bad = s.image("team/bad", "1", seed=3)
    s.corrupt_blob(bad.layer_digests[0])
    actual = sha256(s.files[blob_path(bad.layer_digests[0])])
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS
    assert r.line("failed  team/bad:1: ") == (
        f"failed  team/bad:1: layer {bad.layer_digests[0]} is corrupt (its bytes hash to {actual})")
    assert r.written == refs(*good)
    assert not list(r.out.rglob(bad.layer_digests[0][7:])) and not list(r.out.rglob(actual[7:]))
    assert r.status("team/bad:1")["status"] == "failed"


def test_corrupt_manifest_and_config(tmp_path):
    s, good = two_good()
    m = s.image("x/manifest", "1", seed=3)
    s.corrupt_blob(m.digest)
    cfg = s.image("x/config", "1", seed=4)
    s.corrupt_blob(cfg.config_digest)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  x/manifest:1: ").startswith(f"failed  x/manifest:1: manifest {m.digest} is corrupt")
    assert r.line("failed  x/config:1: ").startswith(f"failed  x/config:1: config {cfg.config_digest} is corrupt")


def test_missing_blob(tmp_path):
    s, good = two_good()
    bad = s.image("team/bad", "1", seed=3)
    s.drop_blob(bad.config_digest)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  team/bad:1: ") == f"failed  team/bad:1: config {bad.config_digest} is not in the archive"


def test_tag_naming_a_missing_revision(tmp_path):
    s, good = two_good()
    ghost = sha256(b"never pushed")
    s.tag_link("team/web", "ghost", ghost)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  team/web:ghost: ") == (
        f"failed  team/web:ghost: tag names {ghost}, which has no revision link in team/web")


@pytest.mark.parametrize("content,shown", [
    (b"garbage\n", "link does not hold a sha256 digest: 'garbage'"),
    (b"sha256:1234", "link does not hold a sha256 digest: 'sha256:1234'"),
    (b"\xff\xfe\x00", "link is not text (3 bytes)"),
    (b"", "link does not hold a sha256 digest: ''"),
    (b"x" * 5000, "link file of 5000 bytes is not a link"),
])
def test_link_file_with_garbage(tmp_path, content, shown):
    s, good = two_good()
    path = s.tag_link("app", "junk", content)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  app:junk: ") == f"failed  app:junk: {ROOT}/{path}: {shown}"


def test_manifest_that_is_not_json_or_too_large(tmp_path):
    s, good = two_good()
    not_json = s.blob(b"this is no manifest " * 10)
    s.revision("x/text", not_json)
    s.tag("x/text", "1", not_json)
    big = s.image("x/big", "1", seed=5, push=False)
    huge = big.manifest[:-1] + b" " * (4 * 1024 * 1024) + b"}"  # valid JSON, over the 4 MiB limit
    for d, data in big.blobs.items():
        if d != big.digest:
            s.blob(data)
    s.blob(huge)
    s.revision("x/big", sha256(huge))
    s.tag("x/big", "1", sha256(huge))
    r = carve(tmp_path, s.tar(compression="gzip"))
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  x/text:1: ") == f"failed  x/text:1: manifest {not_json} is not JSON"
    assert r.line("failed  x/big:1: ") == (f"failed  x/big:1: manifest {sha256(huge)} is {len(huge)} bytes, "
                                           "over the 4 MiB limit for manifests")


@pytest.mark.parametrize("doc,why", [
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": 7}',
     "config: descriptor is not an object"),
    (b'{"schemaVersion": 3}', "unknown schemaVersion 3"),
    (b'[' * 50000 + b']' * 50000, "not usable JSON (maximum recursion depth exceeded"),
    (b'{"schemaVersion": ' + b"9" * 5000 + b"}", "not usable JSON (Exceeds the limit"),
])
def test_manifest_json_of_the_wrong_shape(tmp_path, doc, why):
    s, good = two_good()
    d = s.blob(doc)
    s.revision("x/odd", d)
    s.tag("x/odd", "1", d)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  x/odd:1: ").startswith(f"failed  x/odd:1: manifest {d}: {why}")


def test_index_with_missing_children(tmp_path):
    s, good = two_good()
    amd = s.image("x", None, seed=6, push=False)
    arm = s.image("x", None, seed=6, arch="arm64", push=False)
    index = s.index("team/multi", "latest", [amd, arm])
    s.drop_blob(arm.digest)
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  team/multi:latest: ") == (
        f"failed  team/multi:latest: index child {arm.digest} is not in the archive (linux/arm64)")
    # the child that is there can still be had on its own
    r = carve(tmp_path, s.tar(), "--platform", "linux/amd64", "--image", "team/multi", out="out2")
    assert r.code == EXIT_OK and r.written == {index.ref}
    assert (r.out / index.ref / "manifest.json").read_bytes() == amd.manifest


# --------------------------------------------------------------------------- hostile members


def test_dotdot_members_are_ignored_and_never_extracted(tmp_path):
    s, good = two_good()
    evil = s.image("evil", "1", seed=7, push=False)
    entries = s.entries()
    escape = [Entry(f"../{ROOT}/{tag_path('app', 'v1')}", data=evil.digest.encode()),  # would retarget app:v1
              Entry(f"{ROOT}/repositories/app/../../../../../outside/_manifests/tags/x/current/link",
                    data=good[0].digest.encode()),
              Entry(f"{ROOT}/blobs/../../../../../../tmp/pwned", data=b"pwned")]
    r = carve(tmp_path, build_tar(entries + escape))
    assert r.code == EXIT_OK and r.written == refs(*good)
    assert (r.out / "app:v1" / "manifest.json").read_bytes() == good[0].manifest
    ignored = {p["subject"] for p in r.report["problems"] if p["code"] == "member-ignored"}
    assert ignored == {e.name for e in escape}
    listed = carve(tmp_path, build_tar(entries + escape), command="list")
    assert sum("name has a '..' component; ignored, as tar extraction would" in x for x in listed.lines) == 3
    assert not (tmp_path.parent / "outside").exists()


def test_only_dotdot_members_is_not_storage(tmp_path):
    s, _ = two_good()
    r = carve(tmp_path, s.tar(prefix="../"))
    assert r.code == EXIT_INPUT
    assert r.lines == [f"regcarve: no docker/registry/v2 found in {len(s.entries())} tar members "
                       f"({len([e for e in s.entries() if e.name.startswith(ROOT + '/')])} members with '..' in "
                       "their names ignored): not registry storage"]


def test_absolute_member_names_read_as_relative(tmp_path):
    """GNU tar strips the leading '/'; regcarve never extracts, so the names only say what a file is."""
    s, good = two_good()
    outside = tmp_path / "abs"
    r = carve(tmp_path, s.tar(prefix=f"{outside}/"))
    assert r.code == EXIT_OK and r.written == refs(*good)
    assert not outside.exists()
    r = carve(tmp_path, s.tar(prefix="/"))
    assert r.code == EXIT_OK and r.written == refs(*good)


def test_invalid_repository_and_tag_names(tmp_path):
    s, good = two_good()
    s.tag_link("Upper/case", "v1", good[0].digest)
    s.revision("Upper/case", good[0].digest)
    s.tag_link("app", "-dash", good[0].digest)
    s.tag_link("app", "a" * 129, good[0].digest)
    s.files["repositories/we ird/_manifests/tags/1/current/link"] = good[0].digest.encode()
    r = carve(tmp_path, s.tar())
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("skipped docker/registry/v2/repositories/Upper/case/").endswith(
        "invalid repository name component 'Upper' in 'Upper/case'; repository skipped")
    assert r.line("skipped docker/registry/v2/repositories/we ird/").endswith(
        "invalid repository name component 'we ird' in 'we ird'; repository skipped")
    assert r.line(f"skipped {ROOT}/{tag_path('app', '-dash')}: ") == (
        f"skipped {ROOT}/{tag_path('app', '-dash')}: invalid tag '-dash' in app; tag skipped")
    r.line(f"skipped {ROOT}/{tag_path('app', 'a' * 129)}: ")
    # --image selects by name: what has no valid name cannot be selected, so it is not counted
    r = carve(tmp_path, s.tar(), "--image", "app", out="out2")
    assert r.code == EXIT_OK and r.written == {"app:v1"}


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    s, good = two_good()
    s.tag_link("evil\nname", "1", good[0].digest)
    s.tag_link("app", "new\nline", good[0].digest)
    r = carve(tmp_path, s.tar(fmt=tarfile.PAX_FORMAT))
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert len([x for x in r.lines if x.startswith("skipped")]) == 2
    assert all(x.startswith(("skipped", "regcarve", "1 warning", "2 written", "Push", "  skopeo", "warning",
                             "note")) for x in r.lines), r.lines


def test_symlink_device_and_fifo_members_are_never_followed(tmp_path):
    s, good = two_good()
    victim = s.image("team/victim", "1", seed=8)
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read me")
    entries = [e for e in s.entries() if e.name != f"{ROOT}/{blob_path(victim.layer_digests[0])}"]
    entries += [
        Entry(f"{ROOT}/{blob_path(victim.layer_digests[0])}", "symlink", linkname=str(secret)),
        Entry(f"{ROOT}/repositories/team/linked", "symlink", linkname="/"),
        Entry(f"{ROOT}/{tag_path('app', 'fifo')}", "fifo"),
        Entry(f"{ROOT}/{tag_path('app', 'dev')}", "chr"),
        Entry(f"{ROOT}/{blob_path(sha256(b'x'))}", "blk"),
    ]
    r = carve(tmp_path, build_tar(entries))
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  team/victim:1: ") == (
        f"failed  team/victim:1: layer {victim.layer_digests[0]} is not in the archive")
    warnings = [p for p in r.report["problems"] if p["code"] == "member-ignored"]
    assert sorted(p["message"] for p in warnings) == sorted([
        f"{ROOT}/{blob_path(victim.layer_digests[0])}: symlink member ignored (never followed)",
        f"{ROOT}/repositories/team/linked: symlink member ignored (never followed)",
        f"{ROOT}/{tag_path('app', 'fifo')}: device, FIFO or sparse member ignored (never followed)",
        f"{ROOT}/{tag_path('app', 'dev')}: device, FIFO or sparse member ignored (never followed)",
        f"{ROOT}/{blob_path(sha256(b'x'))}: device, FIFO or sparse member ignored (never followed)",
    ])
    assert all(p["severity"] == "warning" for p in warnings)
    assert not [p for p in r.out.rglob("*") if p.is_file() and p.read_bytes() == b"do not read me"]


def test_hardlink_members_replay_earlier_members_only(tmp_path):
    s, good = two_good()
    extra = s.image("team/extra", "1", seed=9)
    entries = s.entries()
    entries = [e for e in entries if e.name != f"{ROOT}/{tag_path('team/extra', '1')}"]
    entries += [
        # a tag link hardlinked to the revision link holding the same digest: replayed
        Entry(f"{ROOT}/{tag_path('team/extra', '1')}", "hardlink",
              linkname=f"{ROOT}/repositories/team/extra/_manifests/revisions/sha256/{extra.digest[7:]}/link"),
        # to a file outside the storage, and to a later member: never followed
        Entry(f"{ROOT}/{tag_path('app', 'passwd')}", "hardlink", linkname="/etc/passwd"),
        Entry(f"{ROOT}/{tag_path('app', 'later')}", "hardlink", linkname=f"{ROOT}/not/yet"),
        Entry(f"{ROOT}/not/yet", data=good[0].digest.encode()),
        # a link file hardlinked to a blob
        Entry(f"{ROOT}/{tag_path('app', 'blob')}", "hardlink", linkname=f"{ROOT}/{blob_path(good[0].digest)}"),
    ]
    r = carve(tmp_path, build_tar(entries))
    assert r.code == EXIT_PROBLEMS
    assert r.written == refs(*good, extra)
    assert r.line("failed  app:passwd: ") == (
        f"failed  app:passwd: {ROOT}/{tag_path('app', 'passwd')}: hard link to '/etc/passwd', which is not "
        "an earlier storage member")
    assert r.line("failed  app:later: ").endswith(f"hard link to '{ROOT}/not/yet', which is not an earlier storage "
                                                  "member")
    assert r.line("failed  app:blob: ").endswith(f"hard link to '{ROOT}/{blob_path(good[0].digest)}', a blob")


def test_hardlinked_blob_to_another_digest_is_corrupt(tmp_path):
    s, good = two_good()
    victim = s.image("team/victim", "1", seed=10)
    path = f"{ROOT}/{blob_path(victim.config_digest)}"
    entries = [e for e in s.entries() if e.name != path]
    entries.append(Entry(path, "hardlink", linkname=f"{ROOT}/{blob_path(good[0].config_digest)}"))
    r = carve(tmp_path, build_tar(entries))
    assert r.code == EXIT_PROBLEMS and r.written == refs(*good)
    assert r.line("failed  team/victim:1: ") == (
        f"failed  team/victim:1: config {victim.config_digest} is corrupt (its bytes hash to "
        f"{good[0].config_digest})")


def test_same_path_twice_link_files_last_wins(tmp_path):
    s, (a, web) = two_good()
    other = s.image("app", "v2", seed=11)
    link = f"{ROOT}/{tag_path('app', 'v1')}"
    entries = s.entries()
    r = carve(tmp_path, build_tar(entries + [Entry(link, data=other.digest.encode())]))
    assert r.code == EXIT_OK
    assert (r.out / "app:v1" / "manifest.json").read_bytes() == other.manifest
    # a garbage copy after a good one breaks the tag, as extraction would leave the garbage
    r = carve(tmp_path, build_tar(entries + [Entry(link, data=b"oops")]))
    assert r.code == EXIT_PROBLEMS
    assert r.line("failed  app:v1: ") == f"failed  app:v1: {link}: link does not hold a sha256 digest: 'oops'"
    # a good copy after a garbage one: written, and the earlier copy's problem is gone
    garbage_first = [Entry(link, data=b"oops")] + entries
    r = carve(tmp_path, build_tar(garbage_first))
    assert r.code == EXIT_OK and "app:v1" in r.written
    listed = carve(tmp_path, build_tar(garbage_first), "--json", command="list")
    assert listed.code == EXIT_OK


@pytest.mark.parametrize("corrupt_first", [True, False])
def test_same_blob_twice_the_copy_that_verifies_is_kept(tmp_path, corrupt_first):
    s, (a, web) = two_good()
    path = f"{ROOT}/{blob_path(a.layer_digests[1])}"
    good = s.files[blob_path(a.layer_digests[1])]
    bad = Entry(path, data=good[:-1] + bytes([good[-1] ^ 1]))
    entries = [e for e in s.entries() if e.name != path]
    copies = [bad, Entry(path, data=good)] if corrupt_first else [Entry(path, data=good), bad]
    r = carve(tmp_path, build_tar(entries + copies))
    assert r.code == EXIT_OK and r.written == refs(a, web)


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", ["oci", "docker-archive"])
def test_broken_images_fail_alone_in_every_format(tmp_path, fmt):
    s, good = two_good()
    corrupt = s.image("x/corrupt", "1", seed=3)
    s.corrupt_blob(corrupt.layer_digests[0])
    missing = s.image("x/missing", "1", seed=4)
    s.drop_blob(missing.config_digest)
    s.tag_link("x/garbage", "1", b"garbage")
    s.tag_link("Bad", "1", good[0].digest)
    r = carve(tmp_path, s.tar(), "--format", fmt)
    assert r.code == EXIT_PROBLEMS
    assert {e["ref"]: e["status"] for e in r.report["images"]} == {
        "app:v1": "written", "team/web:1.0": "written",
        "x/corrupt:1": "failed", "x/missing:1": "failed", "x/garbage:1": "failed"}
    actual = sha256(s.files[blob_path(corrupt.layer_digests[0])])
    assert r.line("failed  x/corrupt:1: ") == (
        f"failed  x/corrupt:1: layer {corrupt.layer_digests[0]} is corrupt (its bytes hash to {actual})")
    assert r.line("failed  x/missing:1: ") == f"failed  x/missing:1: config {missing.config_digest} is not in the archive"
    r.line(f"skipped {ROOT}/repositories/Bad/")
    assert not list(r.out.rglob(corrupt.layer_digests[0][7:])) and not list(r.out.rglob(actual[7:]))


@pytest.mark.parametrize("fmt", ["oci", "docker-archive"])
def test_truncated_input_in_every_format(tmp_path, fmt):
    (a, big, c), order = staged()
    tar = build_tar(order)
    layer = f"{ROOT}/{blob_path(big.layer_digests[0])}"
    r = carve(tmp_path, gzip.compress(tar[:members(tar)[layer][1] + 1000], mtime=0), "--format", fmt)
    assert r.code == EXIT_PROBLEMS
    r.line(f"regcarve: input truncated: ended inside member '{layer}'")
    assert {e["ref"]: e["status"] for e in r.report["images"]} == {
        a.ref: "written", big.ref: "failed", c.ref: "failed"}


@pytest.mark.parametrize("compression", ["gzip", "zstd", "lz4"])
@pytest.mark.parametrize("where", [0.3, 0.7, -6])
def test_damaged_compressed_data(tmp_path, compression, where):
    """A flipped byte in the compressed stream: deflate may decode garbage up to the gzip CRC, zstd
    without checksums may not notice at all; whatever happens, no garbage is written, nothing
    unhandled, and every image is either written whole or failed with a reason."""
    imgs, order = staged()
    data = bytearray(compress(build_tar(order), compression))
    at = int(len(data) * where) if where > 0 else len(data) + where
    data[at] ^= 0xFF
    r = carve(tmp_path, bytes(data))
    assert r.code in (EXIT_PROBLEMS, EXIT_INPUT)
    said = [x for x in r.lines if x.startswith("regcarve: input ")]
    assert len(said) <= 1 and all(x.startswith(("regcarve: input corrupt: ", "regcarve: input truncated: "))
                                  for x in said)
    if r.report is not None:
        assert all(e["status"] in ("written", "failed") for e in r.report["images"])
        assert r.written == {e["ref"] for e in r.report["images"] if e["status"] == "written"}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_damage_at_the_end_keeps_what_came_before(tmp_path, compression):
    """The gzip trailer and the zstd frame checksum are checked after every byte they cover is out."""
    imgs, order = staged()
    tar = build_tar(order)
    data = bytearray(compress(tar, compression) if compression == "gzip" else
                     zstandard.ZstdCompressor(write_checksum=True).compress(tar))
    data[-2] ^= 0xFF  # the gzip length / zstd checksum: every byte of the tar decodes right
    r = carve(tmp_path, bytes(data))
    assert r.code == EXIT_PROBLEMS
    r.line("regcarve: input corrupt: ")
    assert r.written == refs(*imgs)


# --------------------------------------------------------------------------- xz, bzip2 and lz4 damage (issue 16)


def _compressed_by(tool: list[str], data: bytes) -> bytes:
    return subprocess.run(tool, input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("tool,message,after_written", [
    (["xz", "-c"], r"xz block 1 \(at byte 12 of the input\) fails its CRC64 check \(stored at byte \d+\)", True),
    (["pixz", "-p", "1"], r"xz block 1 \(at byte 12 of the input\) fails its CRC32 check \(stored at byte \d+\)",
     True),
    (["bzip2", "-c", "-1"], r"bzip2 block fails its CRC check \(at byte \d+ of the input\)", False),
])
def test_a_flipped_byte_inside_an_xz_or_bzip2_block(tmp_path, tool, message, after_written):
    """The big layer is random bytes: xz stores them, so the flip passes into the data and the block's
    check finds it; bzip2 holds each block back until its CRC passes. What came before is written."""
    (a, big, c), order = staged()
    data = bytearray(_compressed_by(tool, build_tar(order)))
    data[len(data) // 2] ^= 0x04
    r = carve(tmp_path, bytes(data))
    assert r.code == EXIT_PROBLEMS  # as for damaged gzip
    line = r.line("regcarve: input corrupt: ")
    assert re.match(rf"regcarve: input corrupt: {message}, ", line), line
    assert a.ref in r.written and big.ref not in r.written
    assert (c.ref in r.written) == after_written  # one xz data block: found at its end, after c was read
    assert r.status(big.ref)["status"] == "failed"


@pytest.mark.parametrize("tool,message", [
    (["lz4", "-c", "-BX", "-B4"], r"lz4 frame 1 is damaged \(a block's checksum does not match; found by byte \d+ of "
                                  r"the input\)"),
    (["lz4", "-c", "-B4"], r"lz4 frame 1 is damaged \(the frame's content checksum does not match; found by byte \d+"
                           r" of the input\)"),
])
def test_a_flipped_byte_inside_an_lz4_frame(tmp_path, tool, message):
    """lz4 stores random bytes as literals, so the flip passes into the data; a block checksum
    (-BX) names it at its block (64 KiB blocks: -B4), the default content checksum at the frame's end."""
    (a, big, c), order = staged()
    data = bytearray(_compressed_by(tool, build_tar(order)))
    data[len(data) // 2] ^= 0x04
    r = carve(tmp_path, bytes(data))
    assert r.code == EXIT_PROBLEMS
    line = r.line("regcarve: input corrupt: ")
    assert re.match(rf"regcarve: input corrupt: {message}", line), line
    assert a.ref in r.written and big.ref not in r.written
    assert r.status(big.ref)["status"] == "failed"


@pytest.mark.parametrize("tool", [["xz", "-c"], ["bzip2", "-c", "-1"], ["gzip", "-c"], ["lz4", "-c", "-BX"]])
def test_damage_before_any_storage_member_is_unusable_input(tmp_path, tool):
    _, order = staged()
    data = bytearray(_compressed_by(tool, build_tar(order)))
    data[200] ^= 0x55
    r = carve(tmp_path, bytes(data))
    assert r.code == EXIT_INPUT
    assert len(r.lines) == 1 and r.lines[0].startswith(("regcarve: input corrupt: ", "regcarve: input truncated: "))


@pytest.mark.parametrize("data,message", [
    (gzip.compress(gzip.compress(b"x" * 2000)), "regcarve: gzip-compressed input holds gzip-compressed data again: "
     "it was compressed twice, and regcarve takes one layer of compression — use: … | gzip -dc | regcarve … -"),
    (b"070707" + bytes(600), "regcarve: input is a cpio archive (portable ASCII cpio, 070707), not a tar — convert it: "
                             "… | bsdtar -cf - @- | regcarve … -"),
    (b"\x02\x21\x4c\x18" + bytes(600), "regcarve: input is lz4-compressed in the legacy format (lz4 -l); regcarve "
                                       "reads .tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2, .tar.lz4 — use: … | lz4 -dc | "
                                       "regcarve … -"),
])
def test_hints_for_stdin_name_no_file(data, message):
    for command in ("list", "convert"):
        args = ["list", "-q", "-"] if command == "list" else ["convert", "-q", "-o", "/nonexistent/out", "-"]
        run = regcarve(*args, input=data)
        assert run.code == EXIT_INPUT and run.stderr.splitlines() == [message]
        assert "FILE" not in run.stderr


def test_a_double_gzipped_storage_and_a_cpio_of_it_are_named(tmp_path):
    _, order = staged()
    tar = build_tar(order)
    r = carve(tmp_path, gzip.compress(gzip.compress(tar)))
    assert r.code == EXIT_INPUT and r.lines == [
        "regcarve: gzip-compressed input holds gzip-compressed data again: it was compressed twice, and regcarve "
        "takes one layer of compression — use: gzip -dc FILE | regcarve … -"]
    tree = tmp_path / "tree"
    tree.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(tree)], input=tar, check=True)
    names = b"\n".join(p.relative_to(tree).as_posix().encode() for p in sorted(tree.rglob("*")))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=names, cwd=tree, capture_output=True,
                          check=True).stdout
    r = carve(tmp_path, cpio)
    assert r.code == EXIT_INPUT and r.lines == [
        "regcarve: input is a cpio archive (new ASCII cpio, 070701), not a tar — convert it: "
        "bsdtar -cf - @FILE | regcarve … -"]
    (tmp_path / "x.cpio").write_bytes(cpio)
    converted = subprocess.run(["bsdtar", "-cf", "-", "@" + str(tmp_path / "x.cpio")], capture_output=True,
                               check=True).stdout
    r = carve(tmp_path, converted)
    assert r.code == EXIT_OK and r.written == refs(*staged()[0])

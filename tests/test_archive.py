"""The one-pass tar walker: compression by magic, ustar/GNU/PAX headers, truncation, garbage, pipes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcarve.blobs import inflate
from regcarve.sources.tarball import decoders as archive  # BUFFER_SIZE lives there
from regcarve.sources.tarball import pieces
from regcarve.sources.tarball import (
    Input,
    ArchiveError,
    CorruptInput,
    MemberKind,
    NotATar,
    TruncatedInput,
    open_input,
)
from regcarve.sources.tarball.errors import SourceError
from regcarve.sources.tarball.bzip2 import BLOCK_MAGIC, END_MAGIC, bit_offsets
from regcarve.sources.tarball.source import RawSource
from regcarve.sources.tarball.xz import XzDecoder
from tarmaker import DEEP, END, LONG, as_oracle, gnu_tar, header, make_tree, member, oracle, run, spans

SKIPPABLE = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"notes"


def walk(source) -> tuple[list[tuple], Input]:
    """Every member as oracle() reports it, reading all content through chunks()."""
    with open_input(source) as inp:
        got = [as_oracle(m, b"".join(bytes(c) for c in inp.chunks())) for m in inp.members()]
    return got, inp


def walk_bytes(data: bytes) -> tuple[list[tuple], Input]:
    return walk(io.BytesIO(data))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "root")


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("small") / "root", big=False)


@pytest.fixture(scope="module")
def pax_tar(tree) -> bytes:
    return gnu_tar(tree, "pax")


@pytest.fixture(params=[512, 1000, 1 << 20], ids=["buf512", "buf1000", "buf1M"])
def bufsize(request, monkeypatch) -> int:
    """Block sizes that put headers and content across block edges."""
    monkeypatch.setattr(archive, "BUFFER_SIZE", request.param)
    return request.param


# --------------------------------------------------------------------------- tar formats


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("gnu", ()),
        ("oldgnu", ()),
        ("pax", ()),
        ("ustar", (f"--exclude=./{LONG}",)),
        ("v7", (f"--exclude=./{LONG}", f"--exclude=./{DEEP.split('/')[0]}")),  # files have typeflag NUL
    ],
)
def test_gnu_tar_formats_match_tarfile(tree, bufsize, fmt, options):
    data = gnu_tar(tree, fmt, *options)
    got, inp = walk_bytes(data)
    assert got == oracle(data)
    names = {g[0] for g in got}
    kinds = {g[1] for g in got}
    assert {"./small.txt", "./hard", "./link", "./d", "./big.bin"} <= names
    assert {MemberKind.FILE, MemberKind.DIRECTORY, MemberKind.SYMLINK, MemberKind.HARDLINK} <= kinds
    if fmt != "v7":
        assert f"./{DEEP}/file.txt" in names
    if fmt in ("gnu", "oldgnu", "pax"):
        assert f"./{LONG}/{'x' * 150}.txt" in names
        assert ("../" + "t" * 120) in {g[3] for g in got}
    assert inp.compression == "tar"
    assert inp.end_marker_seen and inp.trailing_bytes == 0
    assert inp.source_bytes == len(data)


def test_names_are_not_normalized(tree):
    with open_input(io.BytesIO(gnu_tar(tree, "gnu"))) as inp:
        names = [m.name for m in inp.members()]
    assert "./" in names and "./d/" in names  # the trailing slash tar wrote is kept
    assert all(n.startswith("./") for n in names)


def test_hardlink_and_symlink_fields(tree):
    with open_input(io.BytesIO(gnu_tar(tree, "pax"))) as inp:
        found = {m.name: m for m in inp.members()}
    hard, link = found["./small.txt"], found["./link"]  # sorted by name, ./hard comes first
    assert (hard.kind, hard.linkname, hard.size, hard.typeflag) == (MemberKind.HARDLINK, "./hard", 0, "1")
    assert (link.kind, link.linkname, link.size, link.typeflag) == (MemberKind.SYMLINK, "small.txt", 0, "2")
    assert found["./hard"].mtime == pytest.approx(os.stat(tree / "hard").st_mtime, abs=1)


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_gnu_sparse_files_are_other_and_skipped(tmp_path, fmt):
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "a-sparse", "wb") as f:  # 12 data regions: GNU needs extension headers
        for i in range(12):
            f.seek(i * 65536)
            f.write(b"x" * 100)
        f.truncate(2 << 20)
    (root / "b-after").write_bytes(b"after\n")
    data = gnu_tar(root, fmt, "--sparse")
    got, inp = walk_bytes(data)
    by_name = {g[0]: g for g in got}
    assert by_name["./a-sparse"][1] is MemberKind.OTHER
    assert by_name["./b-after"][4] == b"after\n"
    assert [g[0] for g in got] == [o[0] for o in oracle(data)]
    assert inp.end_marker_seen


def test_ustar_prefix_and_v7_directory():
    data = (
        member(b"file.txt", b"in prefix", prefix=b"some/deep/dir")
        + member(b"gnu-magic-ignores-prefix", b"x", magic=b"ustar  \0", prefix=b"junk")
        + header(b"olddir/", b"\0", magic=b"")
        + member(b"oldfile", b"v7", b"\0", magic=b"")
        + END
    )
    got, _ = walk_bytes(data)
    assert [(g[0], g[1]) for g in got] == [
        ("some/deep/dir/file.txt", MemberKind.FILE),
        ("gnu-magic-ignores-prefix", MemberKind.FILE),
        ("olddir", MemberKind.DIRECTORY),
        ("oldfile", MemberKind.FILE),
    ]
    assert got[3][4] == b"v7"


def test_base256_fields_and_signed_checksum():
    content = b"z" * 700
    size256 = b"\x80" + len(content).to_bytes(11, "big")
    negative_mtime = (-1).to_bytes(12, "big", signed=True)
    data = (
        header(b"b256", b"0", size256, mtime=negative_mtime) + content + bytes(-700 % 512)
        + member("signed-\u00e9".encode(), b"s", signed_checksum=True)
        + END
    )
    with open_input(io.BytesIO(data)) as inp:
        first = next(inp.members())
        assert (first.size, first.mtime) == (700, -1.0)
        assert inp.read_content(1000) == content
        second = next(inp.members())
        assert second.name == "signed-é"
    assert oracle(data)[0][4] == content  # tarfile agrees on the base-256 size


def test_bad_header_checksum_is_corrupt():
    data = member(b"good", b"1") + header(b"bad", b"0", 0, checksum_delta=1) + END
    with pytest.raises(CorruptInput, match=r"bad tar header checksum at byte 1024 .*after member 'good'"):
        walk_bytes(data)


def test_pax_global_header_and_typeflags(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"mtime": "1234.5"}) as tf:
        ti = tarfile.TarInfo("plain")
        ti.size, ti.mtime = 2, 99
        tf.addfile(ti, io.BytesIO(b"ok"))
        for name, kind in (("fifo", tarfile.FIFOTYPE), ("chr", tarfile.CHRTYPE), ("blk", tarfile.BLKTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            tf.addfile(ti)
    data = buf.getvalue()
    assert data[156:157] == b"g"
    with open_input(io.BytesIO(data)) as inp:
        members = list(inp.members())
    assert [m.mtime for m in members] == [1234.5] * 4  # the global record applies to every later member
    assert [m.kind for m in members[1:]] == [MemberKind.OTHER] * 3
    assert [m.typeflag for m in members] == ["0", "6", "3", "4"]


def test_unknown_typeflag_content_is_skipped_by_size():
    data = member(b"volume", b"v" * 600, b"V") + member(b"next", b"n") + END
    got, _ = walk_bytes(data)
    assert [(g[0], g[1], g[4]) for g in got] == [("volume", MemberKind.OTHER, b"v" * 600), ("next", MemberKind.FILE, b"n")]


def test_link_and_device_size_fields_carry_no_content():
    """Like tarfile: a size in a hardlink/symlink/device header is not followed by content."""
    data = header(b"hl", b"1", 5, linkname=b"target") + header(b"dev", b"3", 700) + member(b"next", b"n") + END
    got, _ = walk_bytes(data)
    assert [(g[0], g[2]) for g in got] == [("hl", 0), ("dev", 0), ("next", 1)]
    assert [g[0] for g in oracle(data)] == ["hl", "dev", "next"]


@pytest.mark.parametrize(
    "data, message",
    [
        (member(b"././@PaxHeader", b"99 path=x\n", b"x") + member(b"f", b""), "malformed PAX header at byte 0 "),
        (member(b"ok", b"") + header(b"neg", b"0", (-5).to_bytes(12, "big", signed=True)),
         "negative size in the tar header at byte 512 "),
        (header(b"././@LongLink", b"L", 1 << 30), "extended header of 1073741824 bytes at byte 0 "),
        (member(b"././@LongLink", b"name\0", b"L"), "end-of-archive marker right after an extended header"),
        (member(b"ok", b"") + header(b"bad", b"0", b"12345678901x"), "bad size or mtime in the tar header at byte 512 "),
    ],
    ids=["pax", "negative-size", "huge-longname", "longname-then-end", "bad-octal"],
)
def test_corrupt_headers(data, message):
    with pytest.raises(CorruptInput, match=message):
        walk_bytes(data + END)


# --------------------------------------------------------------------------- hypothesis

_name_part = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0/"), min_size=1, max_size=45)
_names = st.lists(_name_part, min_size=1, max_size=6).map("/".join)
_big = st.builds(lambda seed, n: random.Random(seed).randbytes(n), st.integers(0, 2**32), st.integers(60_000, 70_000))
_contents = st.one_of(st.binary(max_size=1500), _big)  # big ones span several blocks
_members = st.lists(
    st.tuples(
        st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "fifo", "chr"]),
        _names,
        _contents,
        _names,
        st.integers(-(2**40), 2**40),
    ),
    max_size=8,
)


def _write_tar(spec, fmt: int) -> tuple[bytes, list[tuple]]:
    buf = io.BytesIO()
    expected = []
    kinds = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, content, linkname, mtime in spec:
            ti = tarfile.TarInfo(name)
            ti.mtime = mtime
            if kind == "file":
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
                expected.append((name, MemberKind.FILE, len(content), "", content, mtime))
                continue
            ti.type = kinds[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = linkname
            tf.addfile(ti)
            mk = {"dir": MemberKind.DIRECTORY, "symlink": MemberKind.SYMLINK,
                  "hardlink": MemberKind.HARDLINK}.get(kind, MemberKind.OTHER)
            expected.append((name + "/" if kind == "dir" else name, mk, 0, ti.linkname, b"", mtime))
    return buf.getvalue(), expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=_members,
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    compression=st.sampled_from(["tar", "gzip", "zstd"]),
    bufsize=st.sampled_from([512, 700, 4096, 1 << 20]),
)
def test_walker_matches_what_tarfile_wrote(spec, fmt, compression, bufsize):
    data, expected = _write_tar(spec, fmt)
    packed = {"tar": data, "gzip": gzip.compress(data, 1), "zstd": zstandard.compress(data, 1)}[compression]
    saved = archive.BUFFER_SIZE
    archive.BUFFER_SIZE = bufsize
    try:
        with open_input(io.BytesIO(packed)) as inp:
            got = [
                (m.name, m.kind, m.size, m.linkname, b"".join(bytes(c) for c in inp.chunks()), m.mtime)
                for m in inp.members()
            ]
    finally:
        archive.BUFFER_SIZE = saved
    assert got == expected
    assert inp.compression == compression
    assert inp.end_marker_seen and inp.trailing_bytes == 0
    assert inp.source_bytes == len(packed)


# --------------------------------------------------------------------------- compression


def _split(data: bytes) -> tuple[bytes, bytes]:
    cut = len(data) // 2 + 77  # inside big.bin: the frames/members do not align with tar blocks
    return data[:cut], data[cut:]


COMPRESSORS = {
    "gzip": lambda d: run("gzip", "-c", data=d),
    "pigz": lambda d: run("pigz", "-c", "-p", "2", data=d),
    "pigz-i": lambda d: run("pigz", "-c", "-i", "-b", "128", data=d),
    "gzip-multimember": lambda d: b"".join(run("gzip", "-c", data=p) for p in _split(d)),
    "gzip-empty-last-member": lambda d: run("gzip", "-c", data=d) + gzip.compress(b""),
    "gzip-zero-padded": lambda d: run("gzip", "-c", data=d) + bytes(4096),
    "zstd": lambda d: run("zstd", "-c", "-q", data=d),
    "zstd-long31": lambda d: run("zstd", "-c", "-q", "--long=31", "-T2", data=d),
    "zstd-no-check": lambda d: run("zstd", "-c", "-q", "--no-check", data=d),
    "zstd-multiframe": lambda d: b"".join(run("zstd", "-c", "-q", data=p) for p in _split(d)),
    "zstd-skippable-first": lambda d: SKIPPABLE + run("zstd", "-c", "-q", data=d),
    "zstd-skippable-between": lambda d: SKIPPABLE.join(run("zstd", "-c", "-q", data=p) for p in _split(d)),
    "xz": lambda d: run("xz", "-c", data=d),
    "xz-multiblock": lambda d: run("xz", "-c", "-T2", "--block-size=100KiB", data=d),
    "xz-crc32": lambda d: run("xz", "-c", "--check=crc32", data=d),
    "xz-sha256": lambda d: run("xz", "-c", "--check=sha256", data=d),
    "xz-no-check": lambda d: run("xz", "-c", "--check=none", data=d),
    "xz-multistream-padded": lambda d: (bytes(8)).join(run("xz", "-c", data=p) for p in _split(d)) + bytes(4),
    "xz-empty-last-stream": lambda d: run("xz", "-c", data=d) + run("xz", "-c", data=b""),
    "pixz": lambda d: run("pixz", data=d),
    "bzip2": lambda d: run("bzip2", "-c", data=d),
    "bzip2-small-blocks": lambda d: run("bzip2", "-c", "-1", data=d),
    "bzip2-multistream": lambda d: b"".join(run("bzip2", "-c", data=p) for p in _split(d)) + bytes(3),
    "pbzip2": lambda d: run("pbzip2", "-c", "-p2", "-b1", data=d),
    "lbzip2": lambda d: run("lbzip2", "-c", "-n", "2", "-1", data=d),
}
COMPRESSION_OF = {"pigz": "gzip", "pixz": "xz", "pbzip2": "bzip2", "lbzip2": "bzip2"}


@pytest.fixture(scope="module")
def compressed(pax_tar) -> dict[str, bytes]:
    return {name: make(pax_tar) for name, make in COMPRESSORS.items()}


@pytest.mark.parametrize("variant", list(COMPRESSORS))
def test_compressed_inputs_match_plain(pax_tar, compressed, variant, tmp_path):
    path = tmp_path / "input.tar"  # the name says plain tar: detection must ignore it
    path.write_bytes(compressed[variant])
    got, inp = walk(path)
    assert got == oracle(pax_tar)
    family = variant.split("-")[0]
    assert inp.compression == COMPRESSION_OF.get(family, family)
    assert inp.source_bytes == inp.total_bytes == path.stat().st_size
    assert inp.end_marker_seen and inp.trailing_bytes == 0


@pytest.mark.parametrize("variant", ["gzip", "gzip-multimember", "gzip-zero-padded"])
def test_stdlib_zlib_fallback(pax_tar, compressed, variant, monkeypatch):
    monkeypatch.setattr(inflate, "_zlib_ng", None)
    monkeypatch.setattr(archive, "BUFFER_SIZE", 700)  # output limit hit on nearly every call
    got, inp = walk_bytes(compressed[variant] + b"junk")
    assert got == oracle(pax_tar) and inp.trailing_bytes == 4
    with pytest.raises(TruncatedInput, match="gzip stream ended early"):
        walk_bytes(compressed["gzip"][:-3])


def test_zstd_long31_needs_the_big_window(compressed):
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed["zstd-long31"])).read()


def test_pigz_multimember_really_has_members(compressed):
    d = zlib.decompressobj(31)
    d.decompress(compressed["gzip-multimember"])
    assert d.eof and d.unused_data[:2] == b"\x1f\x8b"


def test_plain_tar_named_zst_is_read_as_tar(small_tree, tmp_path):
    path = tmp_path / "input.tar.zst"
    path.write_bytes(gnu_tar(small_tree, "gnu"))
    assert walk(path)[1].compression == "tar"


# --------------------------------------------------------------------------- not a tar


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "input is empty"),
        (b"\x02\x21\x4c\x18" + bytes(100), r"input is lz4-compressed in the legacy format \(lz4 -l\); .* use: lz4 -dc FILE"),
        (b"LZIP\x01" + bytes(100), r"input is lzip-compressed; regcarve reads .tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2, .tar.lz4"),
        (b"070701" + bytes(100), r"^input is a cpio archive \(new ASCII cpio, 070701\), not a tar — convert it: "
                                 r"bsdtar -cf - @FILE \| regcarve … -$"),
        (b"PK\x03\x04" + bytes(100), r"input is not a tar archive \(first bytes: 50 4b 03 04 = zip\)"),
        (b"7z\xbc\xaf\x27\x1c" + bytes(100), r"\(first bytes: 37 7a bc af = 7z\)"),
        (b"hello world\n" * 100, r"input is not a tar archive \(first bytes: 68 65 6c 6c 6f 20 77 6f\)"),
        (b"short", r"input is not a tar archive"),
        (gzip.compress(b"just text\n" * 100), r"gzip-compressed input is not a tar archive \(first bytes after"),
        (gzip.compress(b""), r"gzip-compressed input holds no data"),
        (zstandard.compress(b"x" * 2000), r"zstd-compressed input is not a tar archive"),
        (SKIPPABLE, r"zstd-compressed input holds no data"),
    ],
    ids=["empty", "lz4-legacy", "lzip", "cpio", "zip", "7z", "text", "short", "gzip-text", "gzip-empty", "zstd-text", "zstd-skip-only"],
)
def test_not_a_tar(data, message):
    with pytest.raises(NotATar, match=message):
        walk_bytes(data)


def _cpio(tree: Path, fmt: str) -> bytes:
    names = "\n".join(sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))).encode()
    return subprocess.run(["cpio", "-o", "-H", fmt, "--quiet"], input=names, cwd=tree, capture_output=True,
                          check=True).stdout


def test_what_real_tools_write_that_regcarve_does_not_read(small_tree, tmp_path):
    tar = gnu_tar(small_tree, "gnu")
    cases = [
        (run("xz", "-c", "--format=lzma", data=tar), r"^input is lzma-compressed \(.lzma, the format before .xz\);"
                                                      r" .* use: xz -dc FILE \| regcarve … -$"),
        (run("lz4", "-c", "-l", data=tar), r"^input is lz4-compressed in the legacy format"),
        (_cpio(small_tree, "odc"), r"^input is a cpio archive \(portable ASCII cpio, 070707\), not a tar"),
        (_cpio(small_tree, "newc"), r"^input is a cpio archive \(new ASCII cpio, 070701\), not a tar"),
        (_cpio(small_tree, "crc"), r"^input is a cpio archive \(new ASCII cpio with CRCs, 070702\), not a tar"),
        (_cpio(small_tree, "bin"), r"^input is a cpio archive \(binary cpio\), not a tar"),
        (gzip.compress(_cpio(small_tree, "newc")), r"^gzip-compressed input is a cpio archive \(new ASCII cpio, "
                                                    r"070701\), not a tar — convert it: bsdtar -cf - @FILE \| regcarve … -$"),
        (gzip.compress(gzip.compress(tar)), r"^gzip-compressed input holds gzip-compressed data again: it was "
                                            r"compressed twice, and regcarve takes one layer of compression — use: "
                                            r"gzip -dc FILE \| regcarve … -$"),
        (run("xz", "-c", data=zstandard.compress(tar)), r"^xz-compressed input holds zstd-compressed data again.* "
                                                         r"use: xz -dc FILE \| regcarve … -$"),
        (run("bzip2", "-c", data=run("xz", "-c", data=tar)), r"^bzip2-compressed input holds xz-compressed data again"),
    ]
    for data, message in cases:
        with pytest.raises(NotATar, match=message):
            walk_bytes(data)
    (tmp_path / "f").write_bytes(tar)
    subprocess.run(["zip", "-q", str(tmp_path / "x.zip"), "f"], cwd=tmp_path, check=True)
    with pytest.raises(NotATar, match="= zip"):
        open_input(tmp_path / "x.zip")


def test_bsdtar_turns_cpio_into_a_tar_as_the_hint_says(small_tree, tmp_path):
    (tmp_path / "x.cpio").write_bytes(_cpio(small_tree, "newc"))
    tar = subprocess.run(["bsdtar", "-cf", "-", "@" + str(tmp_path / "x.cpio")], capture_output=True, check=True).stdout
    got, inp = walk_bytes(tar)
    assert inp.compression == "tar" and inp.end_marker_seen
    assert {name.removeprefix("./").rstrip("/") for name, *_ in got} == {
        str(p.relative_to(small_tree)) for p in small_tree.rglob("*")}


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_input(tmp_path / "nope.tar")


# --------------------------------------------------------------------------- truncation


def _expected_cut(data: bytes, k: int) -> tuple[str, int]:
    """('ok', members kept) or ('truncated', 0) for the tar `data` cut after k bytes."""
    sp = spans(data)
    for start, end in sp:
        if start < k < end:
            return "truncated", 0
    return "ok", sum(1 for _, end in sp if end <= k)


def test_truncated_plain_tar_at_every_block_and_boundary(small_tree, bufsize):
    data = gnu_tar(small_tree, "gnu")
    full = oracle(data)
    last_end = spans(data)[-1][1]
    cuts = set(range(262, len(data), 512)) | set(range(512, len(data), 512))
    cuts |= {e + d for _, e in spans(data) for d in (-1, 0, 1)} | {last_end + 511, last_end + 512, last_end + 700}
    for k in sorted(c for c in cuts if 262 <= c < len(data)):
        outcome, kept = _expected_cut(data, k)
        if outcome == "truncated":
            with pytest.raises(TruncatedInput, match=r"^input truncated: ended .*\(at byte \d+ of the tar stream\)$"):
                walk_bytes(data[:k])
            continue
        got, inp = walk_bytes(data[:k])
        assert got == full[:kept], k
        assert inp.end_marker_seen == (k >= last_end + 512), k
        assert inp.source_bytes == k


def test_truncated_names_the_member(tree):
    data = gnu_tar(tree, "gnu")
    start, end = next(s for s, o in zip(spans(data), oracle(data)) if o[0] == "./big.bin")
    with pytest.raises(TruncatedInput) as e:
        walk_bytes(data[: start + 100_000])
    assert str(e.value) == f"input truncated: ended inside member './big.bin' (at byte {start + 100_000} of the tar stream)"
    with pytest.raises(TruncatedInput, match="inside a tar header, after member"):
        walk_bytes(data[: end + 100])


def test_truncated_after_extended_header(tree):
    data = gnu_tar(tree, "gnu")
    start = next(sp[0] for sp, o in zip(spans(data), oracle(data)) if o[0].startswith(f"./{LONG}/xxx"))
    with pytest.raises(TruncatedInput, match="after an extended header"):
        walk_bytes(data[: start + 1024])  # the 'L' header and its name block, then nothing
    with pytest.raises(TruncatedInput, match="inside an extended header"):
        walk_bytes(data[: start + 600])


@pytest.mark.parametrize("variant", ["gzip", "zstd", "zstd-no-check", "xz", "xz-multiblock", "bzip2-small-blocks"])
def test_truncated_compressed_stream_always_raises(small_tree, variant):
    packed = COMPRESSORS[variant](gnu_tar(small_tree, "gnu"))
    cuts = set(range(1, len(packed), max(1, len(packed) // 150))) | set(range(len(packed) - 40, len(packed)))
    for k in sorted(cuts):
        with pytest.raises(ArchiveError) as e:
            walk_bytes(packed[:k])
        if k >= 4:
            assert isinstance(e.value, (TruncatedInput, CorruptInput)), (k, e.value)
        assert "\n" not in str(e.value)
    with pytest.raises(TruncatedInput, match=f"input truncated: {variant.split('-')[0][:4]}2? stream end"):
        walk_bytes(packed[:-1])


@pytest.mark.parametrize("at,check", [(-8, "CRC"), (-1, "length")])
def test_corrupt_gzip_trailer_is_reported_after_every_member(small_tree, at, check):
    """The trailer is checked here, not by zlib, which would drop the output of the call that meets it."""
    plain = gnu_tar(small_tree, "gnu")
    packed = bytearray(COMPRESSORS["gzip"](plain))
    packed[at] ^= 0xFF
    seen = []
    with pytest.raises(CorruptInput, match=rf"^input corrupt: gzip member 1 fails its {check} check, after the end"):
        with open_input(io.BytesIO(bytes(packed))) as inp:
            for m in inp.members():
                seen.append(m.name)
    assert [n.rstrip("/") or n for n in seen] == [name for name, *_ in oracle(plain)]


def test_corrupt_zstd_checksum(small_tree):
    packed = bytearray(COMPRESSORS["zstd"](gnu_tar(small_tree, "gnu")))
    packed[-1] ^= 0xFF  # XXH64 content checksum
    with pytest.raises(CorruptInput, match=r"^input corrupt: zstd data is damaged"):
        walk_bytes(bytes(packed))


@pytest.mark.parametrize("variant", ["gzip", "zstd", "xz", "pixz", "bzip2-small-blocks", "pbzip2"])
def test_flipped_bytes_give_archive_errors_only(small_tree, variant):
    packed = COMPRESSORS[variant](gnu_tar(small_tree, "gnu"))
    for pos in range(20, len(packed), max(1, len(packed) // 60)):
        damaged = bytearray(packed)
        damaged[pos] ^= 0x55
        try:
            walk_bytes(bytes(damaged))
        except (TruncatedInput, CorruptInput, NotATar) as e:
            assert "\n" not in str(e)


# --------------------------------------------------------------------------- end marker and garbage


def test_eof_on_member_boundary_without_marker(small_tree):
    data = gnu_tar(small_tree, "gnu")
    _, end = spans(data)[-1]
    got, inp = walk_bytes(data[:end])
    assert got == oracle(data) and not inp.end_marker_seen and inp.trailing_bytes == 0


def test_single_zero_block_then_eof_is_an_end(small_tree):
    data = gnu_tar(small_tree, "gnu")
    _, end = spans(data)[-1]
    got, inp = walk_bytes(data[: end + 512])
    assert got == oracle(data) and inp.end_marker_seen


def test_lone_zero_block_followed_by_data_ends_archive():
    data = member(b"one", b"1") + bytes(512) + member(b"two", b"2") + END
    got, inp = walk_bytes(data)
    assert [g[0] for g in got] == ["one"]
    assert inp.end_marker_seen and inp.trailing_bytes > 0


def test_empty_tar(tmp_path):
    data = run("tar", "-cf", "-", "-T", "/dev/null")
    got, inp = walk_bytes(data)
    assert got == [] and inp.end_marker_seen and inp.source_bytes == len(data) == 10240


@pytest.mark.parametrize("variant", ["tar", "gzip", "zstd", "xz", "pixz", "bzip2", "pbzip2"])
def test_trailing_garbage_is_counted(small_tree, variant):
    data = gnu_tar(small_tree, "gnu")
    packed = data if variant == "tar" else COMPRESSORS[variant](data)
    got, inp = walk_bytes(packed + bytes(100) + b"garbage!" + bytes(10) + b"more")
    assert got == oracle(data)
    assert inp.end_marker_seen and inp.trailing_bytes == 12
    assert inp.source_bytes == len(packed) + 122


@pytest.mark.parametrize("variant", ["gzip", "zstd"])
def test_garbage_split_like_a_magic(small_tree, variant):
    """Junk that starts like a gzip/zstd magic, and junk shorter than a magic."""
    data = gnu_tar(small_tree, "gnu")
    packed = COMPRESSORS[variant](data)
    for junk in (b"\x1f", b"\x28\xb5", b"\x1f\x8bXY", b"\x28\xb5\x2f\xfd\x00"):
        try:
            got, inp = walk_bytes(packed + junk)
        except (TruncatedInput, CorruptInput):
            assert junk[:2] == {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5"}[variant] and len(junk) >= 4
            continue
        assert got == oracle(data) and inp.trailing_bytes == len(junk.replace(b"\0", b"")) > 0


def test_garbage_inside_the_archive_is_reported(small_tree):
    data = gnu_tar(small_tree, "gnu")
    packed = gzip.compress(data[:5000]) + b"junk" + gzip.compress(data[5000:])
    with pytest.raises(TruncatedInput, match=r"at byte 5000 of the tar stream\); \d+ bytes that are not gzip follow"):
        walk_bytes(packed)


# --------------------------------------------------------------------------- sources


class NoSeek(io.RawIOBase):
    """A stream that counts what is read from it and refuses to seek."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(memoryview(b)[:1000])  # short reads, like a pipe
        self.read_bytes += n
        return n

    def seekable(self) -> bool:
        return False

    def seek(self, *a):
        raise AssertionError("the walker must not seek")

    def tell(self):
        raise AssertionError("the walker must not tell")


@pytest.mark.parametrize("variant", ["tar", "gzip", "zstd-multiframe", "xz-multistream-padded", "bzip2-multistream"])
def test_reads_input_exactly_once(tree, variant):
    data = gnu_tar(tree, "gnu")
    packed = data if variant == "tar" else COMPRESSORS[variant](data)
    src = NoSeek(packed)
    with open_input(src) as inp:
        for i, m in enumerate(inp.members()):
            if i % 2:  # half the members read, half skipped
                for _ in inp.chunks():
                    pass
        assert inp.total_bytes is None
    assert src.read_bytes == inp.source_bytes == len(packed)


def test_os_pipe_source(pax_tar, compressed):
    for packed in (pax_tar, compressed["zstd"], compressed["gzip"]):
        r, w = os.pipe()
        writer = threading.Thread(target=_write_all, args=(w, packed))
        writer.start()
        with os.fdopen(r, "rb", buffering=0) as f:
            got, inp = walk(f)
        writer.join()
        assert got == oracle(pax_tar)
        assert inp.total_bytes is None and inp.source_bytes == len(packed)


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)


CHILD = """
import hashlib, json
from regcarve.sources.tarball import open_input
with open_input("-") as inp:
    members = [[m.name, hashlib.sha256(b"".join(bytes(c) for c in inp.chunks())).hexdigest()] for m in inp.members()]
print(json.dumps({"members": members, "compression": inp.compression, "total": inp.total_bytes,
                  "source": inp.source_bytes, "end": inp.end_marker_seen}))
"""


@pytest.mark.parametrize("variant", ["tar", "zstd", "gzip", "xz", "bzip2"])
def test_stdin_dash_through_a_pipe(pax_tar, compressed, variant):
    packed = pax_tar if variant == "tar" else compressed[variant]
    p = subprocess.run([sys.executable, "-c", CHILD], input=packed, capture_output=True, check=True)
    out = json.loads(p.stdout)
    expected = [[o[0] + ("/" if o[1] is MemberKind.DIRECTORY else ""), hashlib.sha256(o[4]).hexdigest()]
                for o in oracle(pax_tar)]
    assert out == {"members": expected, "compression": variant, "total": None, "source": len(packed), "end": True}


# --------------------------------------------------------------------------- content API


def test_content_api(tree):
    data = gnu_tar(tree, "gnu")
    with open_input(io.BytesIO(data)) as inp:
        seen = {}
        for m in inp.members():
            if m.name == "./big.bin":
                with pytest.raises(ValueError, match="more than the limit"):
                    inp.read_content(1 << 20)
                first = next(iter(inp.chunks()))
                assert isinstance(first, memoryview)
                with pytest.raises(ValueError, match="already consumed"):
                    inp.read_content(1 << 30)
            elif m.kind is MemberKind.FILE:
                seen[m.name] = inp.read_content(1 << 20)
        assert inp.source_bytes == len(data)
    assert seen["./hard"] == b"hello\n" and seen["./empty"] == b""
    assert seen["./b513"] == (tree / "b513").read_bytes()


@pytest.mark.parametrize("variant", ["gzip", "zstd", "xz", "bzip2"])
def test_close_midway_stops_the_thread(tree, variant):
    packed = COMPRESSORS[variant](gnu_tar(tree, "gnu"))
    before = threading.active_count()
    with open_input(io.BytesIO(packed)) as inp:
        next(inp.members())
        assert threading.active_count() == before + 1
    assert threading.active_count() == before


# --------------------------------------------------------------------------- zstd pieces


def _zstd_decode_all(packed: bytes, n: int) -> tuple[bytes, int]:
    """Everything ZstdDecoder hands out in reads of n; also the most it kept decoded between reads."""
    dec = archive.ZstdDecoder(RawSource(io.BytesIO(packed)))
    out, held = [], 0
    while True:
        chunk = dec.read(n)
        held = max(held, len(dec._out))
        assert len(chunk) <= n
        if not chunk:
            return b"".join(out), held
        out.append(chunk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.tuples(st.binary(max_size=3000), st.integers(0, 300_000), st.booleans(),
                             st.sampled_from([b"", b"toc", bytes(40)])), min_size=1, max_size=4),
    read_size=st.sampled_from([1, 3, 7, 4096, 1 << 20]),
    n=st.sampled_from([1, 1000, 1 << 20]),
)
def test_zstd_frames_decode_whole_in_bounded_pieces_whatever_the_reads(parts, read_size, n):
    """Frames (with and without checksums, each after an optional skippable frame) read in any sizes:
    the output is the data, and no more than one block (128 KiB) is ever kept decoded beyond a read."""
    packed, data = b"", b""
    for random_part, zeros, checksum, skippable in parts:
        payload = random_part + bytes(zeros)  # long runs of zeros become RLE blocks: 4 bytes -> 128 KiB
        if skippable:
            packed += struct.pack("<II", 0x184D2A50, len(skippable)) + skippable
        packed += zstandard.ZstdCompressor(write_checksum=checksum).compress(payload)
        data += payload
    saved, pieces.READ_SIZE = pieces.READ_SIZE, read_size
    try:
        got, held = _zstd_decode_all(packed, n)
    finally:
        pieces.READ_SIZE = saved
    assert got == data
    assert held <= 128 * 1024


def test_zstd_damage_is_raised_after_the_data_before_it():
    data = os.urandom(50_000) + bytes(3_000_000)
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    frame[-2] ^= 0xFF
    dec = archive.ZstdDecoder(RawSource(io.BytesIO(bytes(frame))))
    out = []
    with pytest.raises(SourceError, match="doesn't match checksum") as raised:
        while chunk := dec.read(1 << 20):
            out.append(chunk)
    assert raised.value.cls is CorruptInput
    assert b"".join(out) == data
    with pytest.raises(SourceError):  # and again, should anyone read on
        dec.read(1 << 20)


# --------------------------------------------------------------------------- xz and bzip2 (issue 16)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.tuples(st.binary(max_size=3000), st.integers(0, 200_000),
                             st.sampled_from([lzma.CHECK_NONE, lzma.CHECK_CRC32, lzma.CHECK_CRC64, lzma.CHECK_SHA256]),
                             st.sampled_from([0, 4, 12])), min_size=1, max_size=4),
    read_size=st.sampled_from([1, 3, 7, 4096, 1 << 20]),
    n=st.sampled_from([1, 1000, 1 << 20]),
)
def test_xz_streams_decode_whole_whatever_the_reads(parts, read_size, n):
    """Streams of every check, with stream padding between them, read in any sizes: the output is the data,
    and the walker follows each one to its end (a wrong cut would feed liblzma bytes it cannot take)."""
    packed, data = b"", b""
    for random_part, zeros, check, padding in parts:
        payload = random_part + bytes(zeros)  # zeros make LZMA chunks; random bytes, stored ones
        packed += lzma.compress(payload, check=check) + bytes(padding)
        data += payload
    saved, pieces.READ_SIZE = pieces.READ_SIZE, read_size
    try:
        dec = XzDecoder(RawSource(io.BytesIO(packed)))
        out = []
        while chunk := dec.read(n):
            assert len(chunk) <= n
            out.append(chunk)
    finally:
        pieces.READ_SIZE = saved
    assert b"".join(out) == data and dec.garbage == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=200), at=st.integers(0, 1600), magic=st.sampled_from([BLOCK_MAGIC, END_MAGIC]))
def test_bzip2_magics_are_found_at_any_bit(data, at, magic):
    bits = int.from_bytes(data, "big") if data else 0
    total = len(data) * 8
    at = min(at, total)
    head, tail = bits >> (total - at), bits & ((1 << (total - at)) - 1)
    joined = ((head << 48 | magic) << (total - at)) | tail
    packed = joined.to_bytes((total + 48 + 7) // 8, "big")  # 48 more bits, right-aligned in whole bytes
    shift = -(total + 48) % 8
    assert at + shift in bit_offsets(packed, magic)


def test_bzip2_damage_is_named_by_decoding_each_block_again(tree):
    data = gnu_tar(tree, "gnu")
    packed = bytearray(run("bzip2", "-c", "-1", data=data))
    starts = bit_offsets(bytes(packed), BLOCK_MAGIC)
    assert len(starts) > 1
    second = starts[1] // 8
    packed[second + 40] ^= 0x10  # inside the second block's Huffman-coded data
    with pytest.raises(CorruptInput, match=rf"^input corrupt: bzip2 block (fails its CRC check|is damaged: it does "
                                           rf"not decode \(.*\)) \(at byte {second} of the input\)"):
        walk_bytes(bytes(packed))


def test_pixz_index_after_the_tar_is_not_trailing_data(pax_tar):
    packed = run("pixz", data=pax_tar)
    tail = lzma.decompress(packed)[len(pax_tar):]
    assert tail[:8] == bytes.fromhex("a64c322ed614aedb")  # pixz's index: it is there, and it is skipped
    got, inp = walk_bytes(packed)
    assert got == oracle(pax_tar) and inp.trailing_bytes == 0

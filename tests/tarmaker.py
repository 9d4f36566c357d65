"""Test inputs for the tar walker: trees archived by GNU tar, hand-made headers, a tarfile oracle."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

from regcarve.sources.tarball import Member, MemberKind

DEEP = "a" * 60 + "/" + "b" * 60  # a path > 100 bytes whose parts fit ustar's name + prefix
LONG = "longnames"  # only GNU and PAX can store what is in here


def make_tree(root: Path, big: bool = True) -> Path:
    """A tree with every kind of member regcarve meets, sized to cross 512-byte and buffer edges."""
    rnd = random.Random(1234)
    root.mkdir(parents=True)
    (root / "small.txt").write_bytes(b"hello\n")
    (root / "empty").write_bytes(b"")
    for n in (511, 512, 513, 3000):
        (root / f"b{n}").write_bytes(rnd.randbytes(n))
    if big:
        (root / "big.bin").write_bytes(rnd.randbytes(3 * 1024 * 1024 + 7))
    (root / "d").mkdir()
    (root / "ünïcödé-名前.txt").write_bytes("ü\n".encode())
    (root / "link").symlink_to("small.txt")
    os.link(root / "small.txt", root / "hard")
    (root / DEEP).mkdir(parents=True)
    (root / DEEP / "file.txt").write_bytes(b"deep\n")
    (root / LONG).mkdir()
    (root / LONG / ("x" * 150 + ".txt")).write_bytes(b"long name\n")
    (root / LONG / "far").symlink_to("../" + "t" * 120)
    return root


def gnu_tar(root: Path, fmt: str, *options: str) -> bytes:
    return subprocess.run(
        ["tar", "-c", f"--format={fmt}", "--sort=name", *options, "-C", str(root), "."],
        capture_output=True, check=True,
    ).stdout


def run(*cmd: str, data: bytes | None = None) -> bytes:
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


def kind_of(ti: tarfile.TarInfo) -> MemberKind:
    if ti.issym():
        return MemberKind.SYMLINK
    if ti.islnk():
        return MemberKind.HARDLINK
    if ti.isdir():
        return MemberKind.DIRECTORY
    if ti.isreg() and not ti.issparse():
        return MemberKind.FILE
    return MemberKind.OTHER


def oracle(data: bytes) -> list[tuple[str, MemberKind, int, str, bytes]]:
    """What tarfile finds: (name, kind, size, linkname, content); tarfile strips a dir's '/'."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            kind = kind_of(ti)
            content = tf.extractfile(ti).read() if kind is MemberKind.FILE else b""
            out.append((ti.name, kind, len(content), ti.linkname, content))
    return out


def as_oracle(m: Member, content: bytes) -> tuple[str, MemberKind, int, str, bytes]:
    name = m.name.rstrip("/") if m.kind is MemberKind.DIRECTORY and m.name != "/" else m.name
    return (name, m.kind, m.size, m.linkname, content)


def spans(data: bytes) -> list[tuple[int, int]]:
    """(first header, end of padded content) of each member, from tarfile's offsets."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            has_data = ti.isreg() or ti.type not in tarfile.SUPPORTED_TYPES
            size = ti.size if has_data else 0
            out.append((ti.offset, ti.offset_data + -(-size // 512) * 512))
    return out


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: bytes | int = 0,
    *,
    mtime: bytes | int = 0,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    signed_checksum: bool = False,
    checksum_delta: int = 0,
) -> bytes:
    """One raw 512-byte header; size and mtime may be given as raw field bytes (base-256)."""
    size_field = size if isinstance(size, bytes) else octal(size, 12)
    mtime_field = mtime if isinstance(mtime, bytes) else octal(mtime, 12)
    h = bytearray(512)
    h[0:100] = name.ljust(100, b"\0")
    h[100:108] = octal(0o644, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = size_field
    h[136:148] = mtime_field
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:257] = linkname.ljust(100, b"\0")
    h[257:265] = magic.ljust(8, b"\0")
    h[345:500] = prefix.ljust(155, b"\0")
    total = sum(h)
    if signed_checksum:
        total -= 256 * sum(1 for b in h if b & 0x80)
    h[148:156] = b"%06o\0 " % (total + checksum_delta)
    return bytes(h)


def member(name: bytes, content: bytes, typeflag: bytes = b"0", **kw) -> bytes:
    return header(name, typeflag, len(content), **kw) + content + bytes(-len(content) % 512)


END = bytes(1024)

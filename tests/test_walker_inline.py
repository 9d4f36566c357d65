"""The walker reads the common headers (plain directories, GNU long names, plain files) inline; every
other header goes through its general loop. Both ways must see the same members, skip the same
directories and fail with the same message, at any block size and on damaged headers."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcarve.sources.tarball import decoders, open_input
from tarmaker import END, header, member
from regcarve.sources.tarball.errors import ArchiveError
from regcarve.sources.tarball.walker import Input

_part = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0/"), min_size=1, max_size=40)
_tail = st.sampled_from(["", ".", "..", "a..", "_manifests", "link"])
_names = st.tuples(st.lists(_part, min_size=1, max_size=5), _tail).map(
    lambda t: "/".join(t[0] + ([t[1]] if t[1] else [])))
_members = st.lists(
    st.tuples(st.sampled_from(["dir", "dir", "file", "file", "symlink", "file+linkname"]), _names, st.binary(max_size=700)),
    min_size=1, max_size=12)


def _tar(spec, fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, content in spec:
            ti = tarfile.TarInfo(name)
            if kind.startswith("file"):
                ti.size = len(content)
                ti.linkname = "odd" if kind == "file+linkname" else ""  # a link name on a file: kept, not used
                tf.addfile(ti, io.BytesIO(content))
                continue
            ti.type = tarfile.DIRTYPE if kind == "dir" else tarfile.SYMTYPE
            ti.linkname = "target" if kind == "symlink" else ""
            tf.addfile(ti)
    return buf.getvalue()


def _walk(data: bytes, bufsize: int, skip_from: int) -> tuple[list[tuple], int, str]:
    """Members (name, kind, size, linkname, mtime, content), directories skipped, and the error met."""
    saved = decoders.BUFFER_SIZE
    decoders.BUFFER_SIZE = bufsize
    got: list[tuple] = []
    skipped = 0
    try:
        with open_input(io.BytesIO(data)) as inp:
            for i, m in enumerate(inp.members()):
                if i == skip_from:
                    inp.skip_directories = True
                content = inp.read_content(1 << 20) if i % 2 else b"".join(bytes(c) for c in inp.chunks())
                got.append((m.name, m.kind, m.size, m.linkname, m.mtime, m.typeflag, content))
                skipped = inp.directories_skipped
            return got, inp.directories_skipped, ""
    except ArchiveError as e:
        return got, skipped, str(e)
    finally:
        decoders.BUFFER_SIZE = saved


def _both(data: bytes, bufsize: int, skip_from: int, monkeypatch: pytest.MonkeyPatch):
    inline = _walk(data, bufsize, skip_from)
    with monkeypatch.context() as m:
        m.setattr(Input, "_common_headers", lambda self: None)
        general = _walk(data, bufsize, skip_from)
    return inline, general


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(spec=_members, fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
       bufsize=st.sampled_from([512, 700, 1536, 4096, 1 << 20]), skip_from=st.integers(0, 4),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 1 << 16), st.integers(1, 255))))
def test_inline_headers_read_as_the_general_loop_does(spec, fmt, bufsize, skip_from, damage, monkeypatch):
    try:
        data = bytearray(_tar(spec, fmt))
    except ValueError:  # a name ustar cannot hold
        return
    if damage is not None:
        at, xor = damage
        data[at % len(data)] ^= xor
    inline, general = _both(bytes(data), bufsize, skip_from, monkeypatch)
    assert inline == general


def test_the_inline_path_is_taken_and_skips_plain_directories(monkeypatch):
    spec = [("dir", "docker/registry/v2/repositories/" + "r" * 120 + f"/d{i}", b"") for i in range(50)]
    spec += [("file", "docker/registry/v2/repositories/" + "r" * 120 + "/link", b"x" * 71)]
    data = _tar(spec, tarfile.GNU_FORMAT)
    calls = 0
    original = Input._common_headers

    def counted(self):
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(Input, "_common_headers", counted)
    got, skipped, error = _walk(data, 1 << 20, 0)
    assert (len(got), skipped, error) == (2, 49, "")  # the first directory is read before skipping starts
    assert got[-1][6] == b"x" * 71
    assert calls == 3  # the first member, the file, then the end: one call each, inline in between


def test_a_bad_checksum_among_skipped_directories_is_still_found():
    spec = [("dir", f"docker/registry/v2/repositories/r/d{i}", b"") for i in range(20)]
    data = bytearray(_tar(spec, tarfile.GNU_FORMAT))
    data[512 * 10 + 5] ^= 1  # a name byte of the eleventh directory
    got, skipped, error = _walk(bytes(data), 1 << 20, 0)
    assert len(got) == 1 and "bad tar header checksum at byte 5120" in error


def test_random_bytes_after_headers(monkeypatch):
    rng = random.Random(7)
    spec = [("dir" if i % 3 else "file", f"docker/registry/v2/repositories/r/{'x' * (i * 7)}", b"c" * i)
            for i in range(40)]
    data = _tar(spec, tarfile.GNU_FORMAT)
    for _ in range(60):
        broken = bytearray(data)
        broken[rng.randrange(len(data))] = rng.randrange(256)
        inline, general = _both(bytes(broken), rng.choice([512, 1000, 1 << 20]), rng.randrange(3), monkeypatch)
        assert inline == general


@pytest.mark.parametrize("fmt, name", [
    (tarfile.GNU_FORMAT, "docker/" + "r" * 120 + "/../up"),  # a long name with '..'
    (tarfile.GNU_FORMAT, "docker/r/../up"),  # in the name field
    (tarfile.USTAR_FORMAT, "a/../" + "n" * 99),  # in the ustar prefix field
    (None, ".p/" + "n" * 99 + "."),  # across the name and prefix fields (no '/' ends it): not plain
])
def test_directories_with_dotdot_are_never_skipped(fmt, name, monkeypatch):
    spec = [("dir", "docker/registry/v2/repositories/r", b""), ("dir", name, b""), ("file", "docker/f", b"x")]
    if fmt is None:  # tarfile ends a directory's name with '/': the header is made by hand
        prefix, _, last = name.encode().partition(b"/")
        data = (header(b"docker/registry/v2/repositories/r/", b"5") + header(last, b"5", prefix=prefix)
                + member(b"docker/f", b"x") + END)
        assert data[512 + 99] == data[512 + 345] == ord(".")
    else:
        data = _tar(spec, fmt)
    inline, general = _both(data, 1 << 20, 0, monkeypatch)
    assert inline == general
    got, skipped, error = inline
    assert [g[0].rstrip("/") for g in got] == [spec[0][1], name, "docker/f"] and skipped == 0 and not error

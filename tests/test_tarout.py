"""Tar files written in place (sinks.tarout): headers, patched entries, kernel copies, rollback."""

import errno
import os
import tarfile

import pytest

from regcarve.sinks.tarout import TarOut, tar_header


@pytest.mark.parametrize("kernel", [True, False])
def test_headers_and_patched_entries(tmp_path, kernel, monkeypatch):
    if not kernel:  # a filesystem (or kernel) without copy_file_range between these files: read and written
        def refuse(*args):
            raise OSError(errno.EXDEV, "cross-device")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    big = tar_header("a" * 64 + ".tar", 9 << 30)
    assert len(big) == 512 and big[124] & 0x80  # base-256
    assert tarfile.TarInfo.frombuf(big, "utf-8", "strict").size == 9 << 30
    assert tarfile.TarInfo.frombuf(tar_header("x", 8**11 - 1), "utf-8", "strict").size == 8**11 - 1
    path = tmp_path / "t.tar"
    out = TarOut(os.open(path, os.O_RDWR | os.O_CREAT), path)
    out.add("first", b"1")
    mark = out.pos
    start = out.begin()
    out.write(b"abc" * 1000)
    out.end(start, "gone")
    out.rollback(mark)
    start = out.begin()
    out.write(b"z" * 777)
    out.end(start, "second")
    src = tmp_path / "src"
    src.write_bytes(b"-" * 100 + b"copied" * 50_000 + b"-" * 100)
    fd = os.open(src, os.O_RDONLY)
    start = out.begin()
    out.copy(fd, 100, 300_000)
    out.end(start, "third")
    mark = out.pos
    with pytest.raises(OSError, match="ended 50 bytes early"):
        out.copy(fd, 300_150, 100)
    out.rollback(mark)
    os.close(fd)
    out.close()
    with tarfile.open(path) as t:
        assert [(m.name, m.size) for m in t] == [("first", 1), ("second", 777), ("third", 300_000)]
        assert t.extractfile("second").read() == b"z" * 777
        assert t.extractfile("third").read() == b"copied" * 50_000

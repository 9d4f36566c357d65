"""Blob placement: hardlink, else reflink, else copy — said once — and one file past the link limit."""

import errno
import os

import pytest

from regcarve.sinks import fsout
from regcarve.sinks.fsout import BlobPlacer


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "blob"
    p.write_bytes(b"layer bytes" * 1000)
    return p


def refuse(code):
    def link(a, b):
        raise OSError(code, os.strerror(code))
    return link


def test_hardlink_when_the_filesystem_allows(tmp_path, src):
    notes = []
    BlobPlacer(notes).place(src, tmp_path / "a")
    assert (tmp_path / "a").stat().st_ino == src.stat().st_ino and notes == []


def test_refused_hardlinks_fall_back_to_copies_and_say_so_once(tmp_path, src, monkeypatch):
    monkeypatch.setattr(fsout.os, "link", refuse(errno.EPERM))
    notes = []
    placer = BlobPlacer(notes)
    for name in "abc":
        placer.place(src, tmp_path / name)
        assert (tmp_path / name).read_bytes() == src.read_bytes()
        assert (tmp_path / name).stat().st_ino != src.stat().st_ino
    assert notes == ["blobs were copied: the output filesystem refused hardlinks, and reflinks too"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_link_limit_copies_that_file_only(tmp_path, src, monkeypatch):
    real = os.link
    monkeypatch.setattr(fsout.os, "link", refuse(errno.EMLINK))
    notes = []
    placer = BlobPlacer(notes)
    placer.place(src, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == src.read_bytes()
    monkeypatch.setattr(fsout.os, "link", real)
    placer.place(src, tmp_path / "b")
    assert placer.mode == "hardlink" and (tmp_path / "b").stat().st_ino == src.stat().st_ino

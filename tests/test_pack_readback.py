"""A volume's sha256 read back behind its writer (sinks.pack.readback), and the volume writer that uses it:
what is hashed is exactly what the file holds, however the writes were cut."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcarve.blobs.store import StoreBlobs
from regcarve.model.inventory import Inventory
from regcarve.sinks.pack.layout import BlobFile
from regcarve.sinks.pack.readback import ReadBackHash
from regcarve.sinks.pack.volume import VolumeWriter


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.integers(min_value=0, max_value=3 << 20), max_size=12), seed=st.binary(min_size=1, max_size=64),
       part_size=st.sampled_from([0, 1, 511, 1 << 20, 5 << 20]))
def test_the_hash_is_the_files_whatever_the_writes(tmp_path, pieces, seed, part_size):
    """The whole file's sha256, and with a part size each part's (the byte parts of --split-oversize)."""
    path = tmp_path / "volume"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        follower = ReadBackHash(fd, "volume", part_size)
        written = 0
        for i, n in enumerate(pieces):
            data = (seed * (n // len(seed) + 1))[:n] + bytes([i % 256])
            os.write(fd, data)
            written += len(data)
            follower.advance(written)
        follower.close(written)
        whole = path.read_bytes()
        assert follower.hexdigest() == hashlib.sha256(whole).hexdigest()
        parts = [whole[i:i + part_size] for i in range(0, len(whole), part_size)] if part_size else []
        assert follower.part_hexdigests() == [hashlib.sha256(p).hexdigest() for p in parts]
    finally:
        os.close(fd)


def test_a_file_cut_under_the_hash_is_an_error(tmp_path):
    path = tmp_path / "volume"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"x" * 5000)
        os.ftruncate(fd, 3000)  # what another process could do to the file
        follower = ReadBackHash(fd, "volume")
        follower.close(5000)
        with pytest.raises(OSError, match="read back 3,000 of 5,000 bytes"):
            follower.hexdigest()
    finally:
        os.close(fd)


def test_an_abandoned_hash_stops(tmp_path):
    fd = os.open(tmp_path / "volume", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        follower = ReadBackHash(fd, "volume")
        follower.advance(10 << 20)  # announced, never written: the thread would wait for it
        follower.abandon()
        assert not follower._thread.is_alive()
    finally:
        os.close(fd)


def stored(folder: Path, data: bytes) -> tuple[str, StoreBlobs]:
    """A verified store holding `data`, as the scan leaves it."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (folder / digest[7:]).write_bytes(data)
    return digest, StoreBlobs(folder, Inventory())


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_volume_sha256_and_contents(tmp_path, compression):
    data = os.urandom(9 << 20) + b"tail"  # more than one copied slice, and not a whole tar block
    store = tmp_path / "store"
    store.mkdir()
    digest, blobs = stored(store, data)
    final = tmp_path / "v.tar"
    writer = VolumeWriter(final, compression)
    writer.add_blob(BlobFile("docker/registry/v2/blobs/x/data", digest, len(data)), blobs)
    writer.complete()
    sha256 = writer.settle()
    assert sha256 == hashlib.sha256(final.read_bytes()).hexdigest() and writer.size == final.stat().st_size
    raw = final.read_bytes()
    if compression == "zstd":  # tarfile reads gzip itself
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.extractfile("docker/registry/v2/blobs/x/data").read() == data
    assert sorted(os.listdir(tmp_path)) == ["store", "v.tar"]


def test_a_blob_cut_short_fails_and_leaves_no_file(tmp_path):
    digest, blobs = stored(tmp_path, b"y" * 5000)
    os.truncate(tmp_path / digest[7:], 100)  # cut after it was verified
    final = tmp_path / "v.tar"
    writer = VolumeWriter(final, "none")
    with pytest.raises(OSError, match="ended 4900 bytes early"):
        writer.add_blob(BlobFile("b/data", digest, 5000), blobs)
    writer.discard()
    assert os.listdir(tmp_path) == [digest[7:]]

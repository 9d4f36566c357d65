"""Layer decoding (blobs.codecs): every gzip member and zstd frame, bzip2, xz, in bounded chunks, by each inflater."""

import bz2
import gzip
import io
import lzma
import os
import struct

import pytest
import zstandard

from regcarve.blobs import codecs
from regcarve.blobs.codecs import CHUNK, LayerError, MultiGzip, compression_of, decoder


def drain(reader, n: int = CHUNK) -> bytes:
    out = []
    while chunk := reader.read(n):
        assert len(chunk) <= n
        out.append(chunk)
    return b"".join(out)


def zstd_skippable(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A5E, len(payload)) + payload


@pytest.fixture(params=["isal", "_ZlibDecompressor", "decompressobj"])
def inflater(request, monkeypatch):
    """Each way a gzip member is decoded: ISA-L's, zlib-ng's (or 3.12's) decompressor, or decompressobj
    behind it."""
    if request.param == "isal":
        if codecs._isal is None:
            pytest.skip("no isal here")
        monkeypatch.setattr(codecs, "_new_inflater", codecs._isal_inflater)
    elif request.param == "decompressobj":
        monkeypatch.setattr(codecs, "_new_inflater", codecs._stdlib_inflater)
    else:
        monkeypatch.setattr(codecs, "_new_inflater", codecs._zlib_inflater)
        if isinstance(codecs._new_inflater(), codecs.StdlibInflater):
            pytest.skip("no _ZlibDecompressor here")


def test_decoders_read_every_member_and_frame(inflater):
    a, b = os.urandom(300_000), b"x" * 2_000_000
    multi = gzip.compress(a) + gzip.compress(b) + gzip.compress(b"")
    assert compression_of(multi) == "gzip" and drain(decoder("gzip", io.BytesIO(multi))) == a + b
    padded = MultiGzip(io.BytesIO(gzip.compress(a) + bytes(1000) + gzip.compress(b) + bytes(10)))
    assert drain(padded) == a + b and padded.padded and padded.members == 2
    with pytest.raises(LayerError, match="truncated"):
        drain(decoder("gzip", io.BytesIO(multi[:1000])))
    with pytest.raises(LayerError, match="corrupt gzip"):
        drain(decoder("gzip", io.BytesIO(gzip.compress(a) + b"junk after the stream")))
    zc = zstandard.ZstdCompressor()
    chunked = zstd_skippable(b"toc") + zc.compress(a) + zstd_skippable(b"x" * 100) + zc.compress(b) + zstd_skippable(b"")
    assert compression_of(chunked) == "zstd" and drain(decoder("zstd", io.BytesIO(chunked))) == a + b
    assert drain(decoder("bzip2", io.BytesIO(bz2.compress(a) + bz2.compress(b)))) == a + b
    assert compression_of(lzma.compress(a)) == "xz" and drain(decoder("xz", io.BytesIO(lzma.compress(a)))) == a
    assert compression_of(b"plain tar data") == "none"


def test_a_bomb_is_read_in_bounded_chunks(inflater):
    bomb = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 kB
    assert len(drain(decoder("gzip", io.BytesIO(bomb)), 1 << 16)) == 64 << 20

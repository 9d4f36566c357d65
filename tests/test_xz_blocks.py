"""xz files of many blocks (`xz -T`, pixz): blocks whose headers give their sizes are decoded by worker threads,
handed out in input order; the output, the errors and what comes before an error are those of decoding one
block after the other (issue 16)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regcarve.sources.tarball import pieces, xz
from regcarve.sources.tarball.errors import CorruptInput, SourceError, TruncatedInput
from regcarve.sources.tarball.source import RawSource
from regcarve.sources.tarball.xz import XzDecoder
from storagetar import build_tar
from test_faults import EXIT_PROBLEMS, carve, staged


def _xz(data: bytes, *args: str) -> bytes:
    return subprocess.run(["xz", "-c", *args], input=data, capture_output=True, check=True).stdout


@dataclass(frozen=True)
class Block:
    number: int
    at: int  # input offset of its header
    packed_end: int  # input offset after its check
    start: int  # offset of its first decoded byte
    size: int  # decoded bytes
    check_size: int


def _blocks(packed: bytes) -> list[Block]:
    """The blocks as `xz --robot -lvv` lists them."""
    with tempfile.NamedTemporaryFile(suffix=".xz") as f:  # xz lists files only
        f.write(packed)
        f.flush()
        listing = subprocess.run(["xz", "--robot", "-lvv", f.name], capture_output=True, check=True).stdout
    found = []
    for line in listing.decode().splitlines():
        f = line.split("\t")
        if f[0] == "block":
            check_size = {"None": 0, "CRC32": 4, "CRC64": 8, "SHA-256": 32}[f[9]]
            found.append(Block(int(f[3]), int(f[4]), int(f[4]) + int(f[6]), int(f[5]), int(f[7]), check_size))
    return found


def _decode(packed: bytes, workers: int, n: int = 1 << 20) -> tuple[bytes, SourceError | None]:
    return _decode_counting_garbage(packed, workers, n)[:2]


def _decode_counting_garbage(packed: bytes, workers: int, n: int) -> tuple[bytes, SourceError | None, int]:
    dec = XzDecoder(RawSource(io.BytesIO(packed)), workers=workers)
    out = []
    try:
        while chunk := dec.read(n):
            assert len(chunk) <= n
            out.append(chunk)
    except SourceError as e:
        return b"".join(out), e, dec.garbage
    finally:
        dec.close()
    return b"".join(out), None, dec.garbage


def _random(size: int, seed: int) -> bytes:
    return bytes((i * 7919 + seed) * 2654435761 >> 13 & 0xFF for i in range(size))


DATA = os.urandom(300_000) + bytes(200_000) + os.urandom(100_000)  # stored chunks, LZMA chunks, stored again


def test_many_blocks_are_decoded_by_workers_in_input_order():
    packed = _xz(DATA, "-T2", "--block-size=40KiB")
    assert all(b.size == 40 * 1024 for b in _blocks(packed)[:-1]) and len(_blocks(packed)) == 15
    seen: set[str] = set()
    original = xz.OneBlock.decode_to

    def noting_the_thread(self, output):
        seen.add(threading.current_thread().name)
        original(self, output)

    xz.OneBlock.decode_to = noting_the_thread  # type: ignore[method-assign]
    try:
        got, error = _decode(packed, workers=2, n=10_000)
    finally:
        xz.OneBlock.decode_to = original  # type: ignore[method-assign]
    assert error is None and got == DATA
    assert seen and all(name.startswith("regcarve-xz") for name in seen)


def test_one_block_and_blocks_without_sizes_are_decoded_in_the_reading_thread():
    for packed in (_xz(DATA), _xz(DATA, "-T1", "--block-size=40KiB")):  # -T1: no sizes in the block headers
        before = threading.active_count()
        dec = XzDecoder(RawSource(io.BytesIO(packed)), workers=2)
        assert dec.read(1 << 30) == DATA and dec.read(1) == b""
        assert threading.active_count() == before


def test_blocks_larger_than_a_job_stream_in(monkeypatch):
    monkeypatch.setattr(xz, "MAX_JOB", 50_000)
    packed = _xz(DATA, "-T2", "--block-size=100KiB")
    assert _decode(packed, workers=2) == (DATA, None)


def test_the_blocks_in_flight_are_bounded(monkeypatch):
    """A reader that stops after one byte: four workers, but room for two blocks of 20 KiB only; what is read
    ahead is those two blocks (random bytes: stored), and the pieces of at most two reads more."""
    monkeypatch.setattr(xz, "IN_FLIGHT", 50_000)
    monkeypatch.setattr(pieces, "READ_SIZE", 4096)
    packed = _xz(os.urandom(1_000_000), "-T2", "--block-size=20KiB")
    source = RawSource(io.BytesIO(packed))
    dec = XzDecoder(source, workers=4)
    assert len(dec.read(1)) == 1
    assert source.count <= 2 * 20_600 + 2 * 4096 + 12
    dec.close()


def test_a_reader_that_stops_early_leaves_no_thread_behind(monkeypatch):
    """Workers wait while their blocks' output waits (HELD); closing the decoder ends them all."""
    monkeypatch.setattr(xz, "HELD", xz.BATCH)
    packed = _xz(DATA, "-T2", "--block-size=40KiB")
    before = threading.active_count()
    dec = XzDecoder(RawSource(io.BytesIO(packed)), workers=2)
    assert dec.read(1000) == DATA[:1000]
    assert threading.active_count() == before + 2
    dec.close()
    assert threading.active_count() == before


@pytest.mark.parametrize("workers", [1, 2])
def test_damage_in_a_middle_block_is_named_after_every_block_before_it(workers):
    packed = bytearray(_xz(DATA, "-T2", "--block-size=40KiB"))
    blocks = _blocks(bytes(packed))
    middle = blocks[5]
    packed[middle.at + 1000] ^= 0x04  # random data is stored: the flip reaches the output, the check finds it
    got, error = _decode(bytes(packed), workers)
    assert error is not None and error.cls is CorruptInput
    assert error.message == (f"input corrupt: xz block 6 (at byte {middle.at} of the input) fails its CRC64 check "
                             f"(stored at byte {middle.packed_end - 8})")
    assert got[:middle.start] == DATA[:middle.start] and len(got) == middle.start + middle.size


def test_a_damaged_block_header_and_index_are_named():
    packed = _xz(DATA, "-T2", "--block-size=40KiB")
    blocks = _blocks(packed)
    header = bytearray(packed)
    header[blocks[3].at + 2] ^= 0x01
    got, error = _decode(bytes(header), 2)
    assert error is not None and error.message.startswith(
        f"input corrupt: xz block 4 (at byte {blocks[3].at} of the input) has a damaged header: ")
    assert got == DATA[:blocks[3].start]
    index = bytearray(packed)
    index[blocks[-1].packed_end + 3] ^= 0x01  # a record of the index
    got, error = _decode(bytes(index), 2)
    assert error is not None and error.message == (
        f"input corrupt: xz index fails its CRC32 check or does not match the blocks (its CRC32 does not match; "
        f"at byte {blocks[-1].packed_end} of the input)")
    assert got == DATA


def test_a_cut_inside_a_later_block_keeps_the_blocks_before_it():
    packed = _xz(DATA, "-T2", "--block-size=40KiB")
    blocks = _blocks(packed)
    got, error = _decode(packed[: blocks[7].at + 500], 2)
    assert error is not None and error.cls is TruncatedInput
    assert error.message == "input truncated: xz stream ends inside its block data"
    assert got[: blocks[7].start] == DATA[: blocks[7].start]


def test_damage_in_a_middle_block_through_the_cli(tmp_path):
    """The big image's layer spans many blocks: the damaged one is named, the image before it written."""
    (a, big, c), order = staged()
    packed = bytearray(_xz(build_tar(order), "-T2", "--block-size=64KiB"))
    blocks = _blocks(bytes(packed))
    assert len(blocks) > 6
    k = len(blocks) // 2
    packed[blocks[k].at + 2000] ^= 0x04
    r = carve(tmp_path, bytes(packed))
    assert r.code == EXIT_PROBLEMS
    line = r.line("regcarve: input corrupt: ")
    assert re.match(rf"regcarve: input corrupt: xz block {k + 1} \(at byte {blocks[k].at} of the input\) fails its "
                    rf"CRC64 check \(stored at byte {blocks[k].packed_end - 8}\), inside member ", line), line
    assert a.ref in r.written and big.ref not in r.written and c.ref not in r.written
    assert r.status(big.ref)["status"] == "failed"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 50_000)), min_size=1, max_size=3),
    block_size=st.sampled_from([1024, 5000, 16384]),
    check=st.sampled_from(["crc32", "crc64", "sha256"]),
    flip=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
    read_size=st.sampled_from([7, 4096, 1 << 20]),
    n=st.sampled_from([1, 1000, 1 << 20]),
)
def test_workers_give_what_one_thread_gives(parts, block_size, check, flip, read_size, n):
    """Any stream of many blocks, whole or with one byte flipped, read in any sizes: the workers hand out
    the same bytes and raise the same error as decoding in the reading thread (a failing decoder call may
    take up to STEP bytes before the damage with it, in either); every block before a damaged one is out
    whole, and no flipped byte goes unnoticed (an error, or no longer an xz magic: garbage)."""
    data = b"".join(_random(r, i) + bytes(z) for i, (r, z) in enumerate(parts))
    packed = bytearray(_xz(data, "-T2", f"--block-size={block_size}", f"--check={check}"))
    blocks = _blocks(bytes(packed))
    if flip is not None:
        at = int(flip * len(packed))
        packed[at] ^= 0x10
    saved, pieces.READ_SIZE = pieces.READ_SIZE, read_size
    try:
        alone, alone_error, alone_garbage = _decode_counting_garbage(bytes(packed), 1, n)
        both, both_error, both_garbage = _decode_counting_garbage(bytes(packed), 2, n)
    finally:
        pieces.READ_SIZE = saved
    assert (both_error and both_error.message) == (alone_error and alone_error.message)
    assert both_garbage == alone_garbage
    shorter, longer = sorted((both, alone), key=len)
    assert longer.startswith(shorter) and len(longer) - len(shorter) <= xz.STEP
    if flip is None:
        assert both_error is None and both == data and both_garbage == 0
        return
    assert both_error is not None and "\n" not in both_error.message or both_garbage > 0
    damaged = next((b for b in blocks if b.at <= at < b.packed_end), None)
    after_the_blocks = not blocks or at >= blocks[-1].packed_end
    whole = damaged.start if damaged is not None else len(data) if after_the_blocks and at >= 12 else 0
    assert shorter[:whole] == data[:whole] and len(shorter) >= whole

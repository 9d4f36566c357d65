"""Faults on the output side (issue 7): a disk that fills up for real (a small tmpfs), SIGINT in the
middle of a conversion, and links planted inside OUT. None may leave a file under a final name whose
bytes are not what that name promises, and none may touch anything outside OUT."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import regcarve
from outcheck import bad_files, image_dirs, snapshot, store_digests
from storagetar import ROOT, Image, Storage, blob_path, build_tar, sha256

INTERRUPTED = "regcarve: interrupted; files under final names are complete and verified, rerun to finish"


def refs(*images: Image) -> set[str]:
    return {i.ref for i in images}


def no_traceback(run) -> None:
    assert "Traceback" not in run.stderr, run.stderr


# --------------------------------------------------------------------------- disk full


def mount_small(tmp_path, options: str):
    """A tiny tmpfs mounted for the test (we are root in CI); skipped, saying why, where mounting is refused."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs for a real full disk (needs root and mount rights): "
                    f"{p.stderr.strip()}")
    return mnt


@pytest.fixture
def small_disk(tmp_path):
    """1 MiB of space."""
    mnt = mount_small(tmp_path, "size=1m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def few_inodes(tmp_path):
    """Space enough, but room for only 64 files and folders: image folders cost an inode each, while
    their blob files are hardlinks that cost none."""
    mnt = mount_small(tmp_path, "size=64m,nr_inodes=64")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def convert_onto(disk: Path, s: Storage):
    """`regcarve convert` of the storage into disk/out (the input lies elsewhere)."""
    src = disk.parent / "in.tar"
    src.write_bytes(s.tar())
    out = disk / "out"
    run = regcarve("convert", src, "-o", out, "-q")
    no_traceback(run)
    return run, out


def test_disk_full_while_storing_blobs(small_disk):
    s = Storage()
    small = s.image("app", "v1", seed=1)
    big = s.image("team/big", "1", seed=2, layer_size=2 * 1024 * 1024)
    run, out = convert_onto(small_disk, s)
    assert run.code == 1
    assert run.stderr.splitlines() == [f"regcarve: output disk full while writing blob {big.layer_digests[0]}"]
    assert bad_files(out) == []  # no temporary file left, nothing half-written under a final name
    assert not (out / ".regcarve" / "blobs" / "tmp").exists()
    assert store_digests(out) <= set(small.blobs) | set(big.blobs) - {big.layer_digests[0]}
    assert image_dirs(out) == {}


def test_disk_full_while_writing_images(few_inodes):
    """The blobs fit; the folders of the images do not, past some tag."""
    s = Storage()
    img = s.image("app", "t000", seed=3, layer_size=700 * 1024)
    tags = [f"t{i:03}" for i in range(120)]
    for tag in tags[1:]:
        s.tag("app", tag, img.digest)
    run, out = convert_onto(few_inodes, s)
    assert run.code == 1
    [line] = run.stderr.splitlines()
    assert line.startswith(f"regcarve: output disk full while writing {out}/app:t")
    full_at = line.split("/app:")[1].split("/")[0]
    assert bad_files(out) == []
    written = image_dirs(out)
    assert written and set(written) == {f"app:{t}" for t in tags if t < full_at}
    for folder in written.values():
        assert (folder / "manifest.json").read_bytes() == img.manifest
    assert not (out / f"app:{full_at}" / "manifest.json").exists()


def test_disk_full_while_writing_oci_layouts(few_inodes):
    """A per-tag layout costs three folders and its index.json; whichever of them meets the full
    disk, no layout is left with an index.json it cannot back."""
    s = Storage()
    img = s.image("app", "t000", seed=3, layer_size=700 * 1024)
    tags = [f"t{i:03}" for i in range(40)]
    for tag in tags[1:]:
        s.tag("app", tag, img.digest)
    src = few_inodes.parent / "in.tar"
    src.write_bytes(s.tar())
    out = few_inodes / "out"
    run = regcarve("convert", "--format", "oci", src, "-o", out, "-q")
    no_traceback(run)
    assert run.code == 1
    [line] = run.stderr.splitlines()
    assert line.startswith(f"regcarve: output disk full while writing {out}/app/_tags/t")
    assert bad_files(out) == []
    done = sorted(p.parent.name for p in (out / "app" / "_tags").glob("*/index.json"))
    assert done and done == tags[:len(done)]


# --------------------------------------------------------------------------- SIGINT


def inodes(out: Path) -> dict[str, int]:
    folder = out / ".regcarve" / "blobs" / "sha256"
    return {p.name: p.stat().st_ino for p in folder.iterdir()}


@pytest.mark.parametrize("source,compression", [
    ("fifo", "tar"),
    ("stdin", "tar"),
    ("fifo", "gzip"),
])
def test_sigint_while_reading_then_rerun_reuses_verified_blobs(tmp_path, source, compression):
    """A real SIGINT while a layer streams in from a pipe whose writer has stalled: exit 130, the
    partial blob gone, the blobs already verified kept; the rerun into the same OUT completes and
    does not write them again."""
    s = Storage()
    imgs = [s.image("app", "v1", seed=1, layer_size=1_500_000), s.image("team/b", "1", seed=2, layer_size=1_500_000),
            s.image("team/c", "1", seed=3, layer_size=6_000_000)]
    entries = s.entries()
    blobs = {sha256(e.data): e for e in entries if e.is_blob}
    order = [e for e in entries if not e.is_blob]
    for img in imgs:
        order += [blobs[d] for d in [img.digest, img.config_digest, *img.layer_digests]]
    tar = build_tar(order)
    data = gzip.compress(tar, compresslevel=1) if compression == "gzip" else tar
    last_layer = tar.index(f"{ROOT}/{blob_path(imgs[2].layer_digests[0])}".encode())
    stop = len(data) * (last_layer + 3 * 1024 * 1024) // len(tar)  # about 3 MiB into the last layer
    out = tmp_path / "out"
    tmp = out / ".regcarve" / "blobs" / "tmp"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "regcarve", "convert", "-" if source == "stdin" else str(fifo),
                             "-o", str(out), "-q"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONFAULTHANDLER="1"))  # SIGABRT shows where it hangs
    before = set(imgs[0].blobs) | set(imgs[1].blobs) | {imgs[2].digest, imgs[2].config_digest}
    pipe = proc.stdin if source == "stdin" else open(fifo, "wb")
    try:
        pipe.write(data[:stop])
        pipe.flush()
        deadline = time.monotonic() + 60
        while not (before <= store_digests(out) and tmp.is_dir()
                   and any(p.stat().st_size for p in tmp.glob(".*.tmp"))):
            assert time.monotonic() < deadline and proc.poll() is None, "the conversion never got there"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait()
            pytest.fail("no exit after SIGINT:\n" + proc.stderr.read().decode())
    finally:
        proc.kill()
        proc.wait()
        pipe.close()
        proc.stdin.close()
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr, stderr
    assert code == 130
    assert stderr.splitlines() == [INTERRUPTED]
    assert bad_files(out) == [] and not tmp.exists()
    assert store_digests(out) == before
    assert image_dirs(out) == {}
    kept = inodes(out)

    src = tmp_path / "in.tar"
    src.write_bytes(data)
    run = regcarve("convert", src, "-o", out, "-q")
    no_traceback(run)
    assert run.code == 0
    assert set(image_dirs(out)) == refs(*imgs)
    assert bad_files(out) == []
    again = inodes(out)
    assert {d: again[d] for d in kept} == kept  # reused, not written again


# Runs regcarve with a hook that sends this very process a real SIGINT at a chosen point of the writing.
HOOKED = """
import os, signal, sys
from regcarve import cli
from regcarve.sinks import fsout

what, at = os.environ["SIGINT_ON"], int(os.environ["SIGINT_AT"])
calls = 0

def interrupt_at_call(real, counts=lambda *args: True):
    def wrapper(*args, **kwargs):
        global calls
        if counts(*args):
            calls += 1
            if calls == at:
                os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt comes at the next bytecode
        return real(*args, **kwargs)
    return wrapper

if what == "place":
    fsout.BlobPlacer.place = interrupt_at_call(fsout.BlobPlacer.place)
else:  # the rename that ends writing the shared `version` file: its temporary file exists, its final name not yet
    os.replace = interrupt_at_call(os.replace, lambda src, dst: os.path.basename(dst) == "version")
sys.argv[0] = "regcarve"
cli.main()
"""


def four_images(tmp_path: Path) -> tuple[Path, Path, list[Image]]:
    """An archive of four images in three repositories, where OUT goes, and the images."""
    s = Storage()
    imgs = [s.image("app", "v1", seed=1, layers=2), s.image("team/web", "1.0", seed=2),
            s.image("team/web", "2.0", seed=3, layers=3), s.image("x", "1", seed=4)]
    src = tmp_path / "in.tar"
    src.write_bytes(s.tar())
    return src, tmp_path / "out", imgs


@pytest.mark.parametrize("where,at", [("place", 1), ("place", 9), ("place", 14), ("replace", 1)])
def test_sigint_while_writing_images(tmp_path, where, at):
    src, out, imgs = four_images(tmp_path)
    env = dict(os.environ, SIGINT_ON=where, SIGINT_AT=str(at))
    p = subprocess.run([sys.executable, "-c", HOOKED, "convert", str(src), "-o", str(out), "-q"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 130
    assert p.stderr.splitlines() == [INTERRUPTED]
    assert bad_files(out) == []  # no temporary file; every image folder with a manifest.json is complete
    assert set(image_dirs(out)) < refs(*imgs)
    assert set(imgs[0].blobs) | set(imgs[3].blobs) <= store_digests(out)  # the whole read was verified and kept
    run = regcarve("convert", src, "-o", out, "-q")
    no_traceback(run)
    assert run.code == 0 and set(image_dirs(out)) == refs(*imgs)
    assert bad_files(out) == []


OCI_HOOKED = """
import os, signal, sys
from regcarve import cli

at, calls, real = int(os.environ["SIGINT_AT"]), 0, os.open

def opened(path, *args, **kwargs):
    global calls
    fd = real(path, *args, **kwargs)
    if os.path.basename(path) == "index.json":
        calls += 1
        if calls == at:  # the file exists, empty; KeyboardInterrupt comes before its writer has `fd`
            os.kill(os.getpid(), signal.SIGINT)
    return fd

os.open = opened
sys.argv[0] = "regcarve"
cli.main()
"""


@pytest.mark.parametrize("at", [1, 3])
def test_sigint_as_an_oci_index_is_made_leaves_no_empty_index(tmp_path, at):
    src, out, imgs = four_images(tmp_path)
    env = dict(os.environ, SIGINT_AT=str(at))
    p = subprocess.run([sys.executable, "-c", OCI_HOOKED, "convert", "--format", "oci", str(src), "-o", str(out),
                        "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 130 and p.stderr.splitlines() == [INTERRUPTED]
    assert bad_files(out) == []
    layouts = sorted(str(i.parent.relative_to(out)) for i in out.rglob("_tags/*/index.json"))
    assert len(layouts) == at - 1
    run = regcarve("convert", "--format", "oci", src, "-o", out, "-q")
    no_traceback(run)
    assert run.code == 0 and bad_files(out) == []
    assert len(list(out.rglob("_tags/*/index.json"))) == len(imgs)


# --------------------------------------------------------------------------- links inside OUT


@pytest.fixture
def planted(tmp_path):
    """An earlier output, a folder outside it with a file, and the archive again."""
    s = Storage()
    imgs = [s.image("app", "v1", seed=1), s.image("team/web", "1.0", seed=2)]
    src = tmp_path / "in.tar"
    src.write_bytes(s.tar())
    out = tmp_path / "out"
    assert regcarve("convert", src, "-o", out, "-q").code == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"x" * len(imgs[0].layers[0]))
    return src, out, outside, imgs


def rerun(src: Path, out: Path, outside: Path):
    before = snapshot(outside)
    run = regcarve("convert", src, "-o", out, "-q")
    no_traceback(run)
    assert snapshot(outside) == before, "something outside OUT was written"
    return run


def test_symlinked_store_files_are_replaced_not_followed(planted):
    src, out, outside, (app, web) = planted
    store = out / ".regcarve"
    (store / "README").unlink()
    (store / "README").symlink_to(outside / "precious")
    layer = store / "blobs" / "sha256" / app.layer_digests[0][7:]
    layer.unlink()
    layer.symlink_to(outside / "precious")  # same size as the layer: only lstat tells
    for name in (app.layer_digests[0][7:], "manifest.json"):
        (out / "app:v1" / name).unlink()
        (out / "app:v1" / name).symlink_to(outside / "precious")
    run = rerun(src, out, outside)
    assert run.code == 0
    assert bad_files(out) == []
    assert not (store / "README").is_symlink() and not layer.is_symlink()
    assert (out / "app:v1" / "manifest.json").read_bytes() == app.manifest


@pytest.mark.parametrize("link", [".regcarve", ".regcarve/blobs", ".regcarve/blobs/sha256", ".regcarve/blobs/tmp"])
def test_symlinked_store_folders_are_refused(planted, link):
    src, out, outside, _ = planted
    path = out / link
    if path.exists():
        os.rename(path, outside / "moved")
    path.symlink_to(outside)
    run = rerun(src, out, outside)
    assert run.code == 2
    assert run.stderr.splitlines() == [f"regcarve: {path} is a symlink; regcarve does not follow links inside OUT"]


@pytest.mark.parametrize("link,ref", [("app:v1", "app:v1"), ("team", "team/web:1.0")])
def test_symlinked_image_folders_fail_that_image_only(planted, link, ref):
    src, out, outside, imgs = planted
    path = out / link
    os.rename(path, outside / "moved")
    path.symlink_to(outside)
    run = rerun(src, out, outside)
    assert run.code == 1
    [line] = [x for x in run.stderr.splitlines() if x.startswith("failed")]
    assert line == f"failed  {ref}: {path} is a symlink; regcarve does not follow links inside OUT"
    assert [b for b in bad_files(out) if b != f"symlink {path}"] == []
    other = next(i for i in imgs if i.ref != ref)
    assert (out / other.ref / "manifest.json").read_bytes() == other.manifest

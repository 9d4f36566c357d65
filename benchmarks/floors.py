"""The least work `docker-archive` and `oci` must add to `dir`, measured on this machine.

`docker-archive` (goal G6) must, beyond reading and verifying the archive as `list` does, inflate
every unique layer, hash what comes out (to check the config's diff_ids) and write it. `layers`
does the first two and nothing else: one layer after the other, with the libraries regcarve uses
(ISA-L or zlib-ng, zstandard, hashlib), and reports the CPU time it took. That time plus `list`'s,
spread perfectly over every core, is less than any program could take here: writing the 2 GB out
and copying shared layers into later archives come on top. (Writing is left out so that no
gigabytes of dirty pages from this command slow down the next one in the round.)

`oci` (goal G5) makes, per tag, three folders and an `index.json`, where `dir` makes one folder;
both make the same number of hardlinks. `folders` makes the two extra folders and the small file
for N tags on OUT's filesystem and reports the time that takes, in one thread, as both writers
work.

`convert --format dir` of a registry with many small images (goal G10, 50,000 tags) is bound by the
filesystem: a folder per tag and a hard link per file. `tree` makes N folders spread over 500 parents, each
with K hard links to K files, in one thread (threads did not make it faster on this ext4: the kernel's
work is CPU time, and parallel mkdirs contend), and reports the time that takes.

`python3 benchmarks/floors.py layers STORE OUT` (STORE: a folder of blob files, as
`OUT/.regcarve/blobs/sha256` of a `convert --format dir`), `floors.py folders N OUT` or `floors.py tree N K OUT`
does the
work (in the new folder OUT for `folders`) and leaves `OUT/floor.json`: the wall and CPU time of
that work alone, without the interpreter's start. bench.py runs both in the same rounds as the
commands they are compared with, and removes OUT afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

from regcarve.blobs.codecs import CHUNK, compression_of, decoder

INDEX_BYTES = 400  # about the size of a per-tag index.json
RESULT = "floor.json"


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def layer_work(store: Path, out: Path) -> dict:
    """Inflate and hash every compressed blob in `store` (configs and manifests are JSON: skipped)."""
    out.mkdir(parents=True)
    n = bytes_in = bytes_out = 0
    wall0, cpu0 = time.perf_counter(), _cpu()
    for blob in sorted(store.iterdir()):
        with open(blob, "rb", buffering=0) as raw:
            kind = compression_of(raw.read(8))
            if kind == "none":
                continue
            raw.seek(0)
            h = hashlib.sha256()
            reader = decoder(kind, raw)
            while chunk := reader.read(CHUNK):
                h.update(chunk)
                bytes_out += len(chunk)
            h.hexdigest()
            n += 1
            bytes_in += blob.stat().st_size
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    return {"layers": n, "bytes_in": bytes_in, "bytes_out": bytes_out, "wall": round(wall, 3), "cpu": round(cpu, 3)}


def folder_work(n: int, out: Path, repos: int = 50) -> dict:
    """What a per-tag OCI layout costs beyond a `dir:` folder: two more folders and one small file."""
    tags = []
    for i in range(n):  # the folder both formats make, not timed
        tag = out / f"r{i % repos}" / "_tags" / f"t{i}"
        tag.mkdir(parents=True)
        tags.append(str(tag))
    data = b"x" * INDEX_BYTES
    wall0, cpu0 = time.perf_counter(), _cpu()
    for tag in tags:
        os.mkdir(tag + "/blobs")
        os.mkdir(tag + "/blobs/sha256")
        fd = os.open(tag + "/index.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    return {"tags": n, "wall": round(wall, 3), "cpu": round(cpu, 3)}


def tree_work(n: int, k: int, out: Path, repos: int = 500) -> dict:
    """A dir: tree's filesystem work alone: N image folders with K hard links each."""
    sources = out / "files"
    sources.mkdir(parents=True)
    files = []
    for j in range(k):  # the verified store's files, not timed
        (sources / f"f{j}").write_bytes(b"x")
        files.append(str(sources / f"f{j}"))
    for r in range(repos):  # the repository folders: few, not timed
        (out / f"r{r}").mkdir()
    wall0, cpu0 = time.perf_counter(), _cpu()
    for i in range(n):
        folder = f"{out}/r{i % repos}/t{i}"
        os.mkdir(folder)
        for j, src in enumerate(files):
            os.link(src, f"{folder}/b{j}")
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    return {"tags": n, "links_per_tag": k, "wall": round(wall, 3), "cpu": round(cpu, 3)}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "layers":
        out, result = Path(argv[2]), layer_work(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 3 and argv[0] == "folders":
        out, result = Path(argv[2]), folder_work(int(argv[1]), Path(argv[2]))
    elif len(argv) == 4 and argv[0] == "tree":
        out, result = Path(argv[3]), tree_work(int(argv[1]), int(argv[2]), Path(argv[3]))
    else:
        print("usage: floors.py layers STORE OUT | floors.py folders N OUT | floors.py tree N K OUT", file=sys.stderr)
        return 2
    (out / RESULT).write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

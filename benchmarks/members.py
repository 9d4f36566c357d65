#!/usr/bin/env python3
"""The cost per tar member (issue 19): the walker alone, and the walker with the scan, in µs per member.

    PYTHONPATH=src python3 benchmarks/members.py benchmarks/.cache/full/tags50k.tar.gz [--rounds 3]

Each round times, in this process, one pass of the walker that only lists the members (what
`tar -t` does) and one pass of the scan that `list` makes (walker, classification, links, blobs
hashed); CPU time of the whole process, so the decompression thread counts too. Medians of the rounds.
To compare two source trees, run it with each PYTHONPATH in turn, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time

from regcarve.sources.tarball import open_input
from regcarve.sources.tarball.scan import scan


def walk_only(path: str) -> int:
    with open_input(path) as inp:
        return sum(1 for _ in inp.members())


def scan_all(path: str) -> int:
    with open_input(path) as inp:
        return scan(inp).input.members


def timed(work, path: str) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = work(path)
    return time.perf_counter() - wall, time.process_time() - cpu, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {"walk": [], "scan": []}
    for _ in range(args.rounds):
        results["walk"].append(timed(walk_only, args.archive))
        results["scan"].append(timed(scan_all, args.archive))
    for what, runs in results.items():
        members = runs[0][2]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{what}: {members} members, wall {wall:.2f} s = {wall / members * 1e6:.2f} µs/member, "
              f"CPU {cpu:.2f} s = {cpu / members * 1e6:.2f} µs/member")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The work `list` and `list --json` do after the scan (issue 19), apart from the scan: in µs per tag.

    PYTHONPATH=src python3 benchmarks/postscan.py benchmarks/.cache/full/tags50k.tar.gz [--rounds 5]
        [--baseline-src OTHER/src]

Each round reads the archive once (not timed), then times, in that process, the resolution of the
inventory into tags, the `list` table and the `list --json` document (written to memory); wall time,
medians of the rounds. With --baseline-src, every round runs the other source tree too, the two
alternating, so both are measured under the same load. `convert`'s own post-scan time is the
"… s after the read" its summary line says.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

PHASES = ("resolve", "table", "json")


def one_round(archive: str) -> dict:
    from regcarve.cli.text import table_lines
    from regcarve.model.catalog import resolve
    from regcarve.report import write_inventory
    from regcarve.sources import open_sources

    source = open_sources((archive,), "sha256")
    try:
        inventory = source.read(None, None)
    finally:
        source.close()
    started = time.perf_counter()
    catalog = resolve(inventory)
    resolved = time.perf_counter()
    "\n".join(table_lines(catalog))
    tabled = time.perf_counter()
    write_inventory(io.StringIO(), catalog)
    done = time.perf_counter()
    return {"tags": len(catalog.images), "resolve": resolved - started, "table": tabled - resolved,
            "json": done - tabled}


def measured(src: str, archive: str) -> dict:
    """One round in a fresh interpreter importing regcarve from `src`."""
    env = {**os.environ, "PYTHONPATH": src}
    run = subprocess.run([sys.executable, __file__, archive, "--one"], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(run.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-src", help="another src folder, measured in the same rounds")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_round(args.archive)))
        return
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    trees = {"this": here, **({"baseline": args.baseline_src} if args.baseline_src else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    print(f"load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for k in range(args.rounds):
        for name in (list(trees) if k % 2 == 0 else list(reversed(trees))):
            runs[name].append(measured(trees[name], args.archive))
    for name, results in runs.items():
        tags = results[0]["tags"]
        cells = [f"{p} {statistics.median(r[p] for r in results):.3f} s "
                 f"({statistics.median(r[p] for r in results) / tags * 1e6:.1f} µs/tag)" for p in PHASES]
        print(f"{name} ({trees[name]}, {tags} tags): " + ", ".join(cells))
    print(f"load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

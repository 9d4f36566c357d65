#!/usr/bin/env python3
"""Where the bytes of a read go (issue 19): the catalog `regcarve list` builds, under tracemalloc.

    PYTHONPATH=src python3 benchmarks/memory.py benchmarks/.cache/full/tags50k.tar.gz [--top 15] [--json]

Reads the archive once, as `list` does (no blob store), and reports the bytes still allocated once
the catalog is resolved, grouped by the source line that allocated them, per tag; then the peak
while the inventory JSON is written to /dev/null (`--json`). tracemalloc slows the read several
times over: the times printed are not the command's.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

from regcarve.run import read_catalog
from regcarve.sources import open_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="also measure writing the inventory JSON")
    args = ap.parse_args()
    tracemalloc.start(1)
    t0 = time.perf_counter()
    source = open_source(args.archive)
    try:
        catalog = read_catalog(source, None)
    finally:
        source.close()
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    held, peak = tracemalloc.get_traced_memory()
    tags = len(catalog.images)
    members = catalog.inventory.input.members
    print(f"{args.archive}: {tags} tags, {members} members, read in {time.perf_counter() - t0:.1f} s under tracemalloc")
    print(f"held after resolution: {held / 1e6:.1f} MB ({held / max(tags, 1):.0f} B/tag); peak while reading "
          f"{peak / 1e6:.1f} MB")
    stats = snapshot.statistics("lineno")
    print(f"\ntop {args.top} allocating lines (bytes held, B/tag, blocks):")
    for s in stats[: args.top]:
        frame = s.traceback[0]
        where = f"{os.path.relpath(frame.filename, os.getcwd()) if 'regcarve' in frame.filename else frame.filename}"
        print(f"  {s.size / 1e6:7.2f} MB {s.size / max(tags, 1):7.0f} B/tag {s.count:8d}  {where}:{frame.lineno}")
    if args.json:
        from regcarve.report import write_inventory

        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        with open(os.devnull, "w") as out:
            write_inventory(out, catalog, untagged=False)
        _, peak = tracemalloc.get_traced_memory()
        print(f"\nwriting the inventory JSON: peak {(peak - before) / 1e6:.1f} MB above the catalog")


if __name__ == "__main__":
    main()

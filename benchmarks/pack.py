"""`regcarve pack` against `regcarve convert --format dir` on bench.py's cached 1 GB archive (issue 15).

    python3 benchmarks/pack.py [--archive benchmarks/.cache/full/big.tar] [--runs 3] [--volume-size 300M]
                               [--work DIR] [--split-oversize]

Each round runs both commands on the same input, alternating (who goes first swaps each round), into
fresh output folders on --work's filesystem (default: a temporary folder), uncompressed volumes. Wall
time, CPU and peak RSS come from wait4() on each command alone. Writes results/pack.{json,md}; exits 1 when a goal fails:
pack ≤ 1.5 × dir (medians), peak RSS of pack ≤ 200 MB.

Each round also times the floor of what pack does beyond convert: writing as many bytes as the volumes
hold into a new file once more and hashing them (`head -c BYTES ARCHIVE > x; openssl dgst -sha256 x`, one
after the other). `dir + floor` is what pack would take doing that work on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def measure(argv: list[str]) -> dict:
    """Wall, CPU (user+sys) and peak RSS (MB) of one command, from wait4 on it alone."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss * 1024 / 1e6,
            "code": proc.returncode, "stderr_tail": stderr[-400:]}


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (every core, every process: /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path, default=HERE / ".cache" / "full" / "big.tar")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--volume-size", default="300M")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--split-oversize", action="store_true",
                        help="pass --split-oversize: images larger than a volume are packed too, as byte parts")
    args = parser.parse_args()
    regcarve = [sys.executable, "-m", "regcarve"]
    commands = {
        "dir": lambda out: [*regcarve, "convert", "--format", "dir", "-q", "-o", str(out), str(args.archive)],
        "pack": lambda out: [*regcarve, "pack", "-q", "--volume-size", args.volume_size, "-o", str(out),
                             *(["--split-oversize"] if args.split_oversize else []), str(args.archive)],
    }
    runs: dict[str, list[dict]] = {name: [] for name in (*commands, "floor")}
    subprocess.run(["cat", str(args.archive)], stdout=subprocess.DEVNULL, check=True)  # page cache, for both
    load_start = os.getloadavg()
    busy_start, started = busy_seconds(), time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="regcarve-packbench-", dir=args.work))
    try:
        for round_number in range(args.runs):
            # who goes first swaps each round: a command that follows one whose output was just deleted finds
            # that memory ready, and growing the page cache into other memory costs several times more
            # system time on this VM (see README, Performance)
            order = list(commands.items())
            for name, argv in order if round_number % 2 == 0 else order[::-1]:
                out = work / name
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(measure(argv(out)))
                if name == "pack":
                    runs[name][-1]["pack_json"] = json.loads((out / "pack.json").read_text())
                shutil.rmtree(out, ignore_errors=True)
            volume_bytes = sum(v["size"] for v in runs["pack"][-1]["pack_json"]["volumes"])
            runs["floor"].append(measure(["sh", "-c", 'head -c "$1" "$2" > "$3" && openssl dgst -sha256 "$3"', "floor",
                                          str(volume_bytes), str(args.archive), str(work / "floor")]))
            os.unlink(work / "floor")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = sum(r["cpu"] for rs in runs.values() for r in rs)
    others = max(0.0, busy_seconds() - busy_start - ours) / (time.monotonic() - started)
    return report(args, runs, load_start, others)


def report(args, runs: dict[str, list[dict]], load_start: tuple, others: float) -> int:
    median = {name: statistics.median(r["wall"] for r in rs) for name, rs in runs.items()}
    rss = max(r["rss_mb"] for r in runs["pack"])
    ratio = median["pack"] / median["dir"]
    floor_ratio = (median["dir"] + median["floor"]) / median["dir"]
    last = runs["pack"][-1]["pack_json"]
    goals = [("pack <= 1.5 x convert --format dir (median wall)", f"{ratio:.2f}x", ratio <= 1.5),
             ("peak RSS of pack <= 200 MB", f"{rss:.0f} MB", rss <= 200)]
    doc = {"archive": str(args.archive), "volume_size": args.volume_size, "runs": runs, "median_wall": median,
           "floor_ratio": floor_ratio,
           "load_average_start": load_start, "load_average_end": os.getloadavg(),
           "cores_busy_with_other_work": others,
           "volumes": [(v["file"], v["size"], len(v["images"])) for v in last["volumes"]],
           "not_packed": last["not_packed"], "goals": [{"goal": g, "measured": m, "pass": p} for g, m, p in goals]}
    for r in runs["pack"]:
        r.pop("pack_json", None)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pack.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"### pack (run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.runs} rounds, "
             f"{args.archive.name}, --volume-size {args.volume_size}"
             f"{', --split-oversize' if args.split_oversize else ''}, uncompressed)", "",
             f"Load average at start {' / '.join(f'{x:.2f}' for x in load_start)}, "
             f"at end {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (shared {os.cpu_count()}-core machine); "
             f"other work kept {others:.2f} core(s) busy on average during the rounds.", "",
             "| command | wall median (min–max) s | cpu median s | peak RSS MB |", "|---|---|---|---|"]
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        lines.append(f"| {name} | {median[name]:.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
                     f"{statistics.median(r['cpu'] for r in rs):.2f} | {max(r['rss_mb'] for r in rs):.0f} |")
    lines += ["", "| goal | measured | result |", "|---|---|---|"]
    lines += [f"| {g} | {m} | **{'PASS' if p else 'FAIL'}** |" for g, m, p in goals]
    lines += ["", "Volumes: " + ", ".join(f"{f} {s:,} B ({n} images)" for f, s, n in doc["volumes"])]
    lines += [f"Not packed: {n['ref']}: {n['reason']}" for n in doc["not_packed"]]
    lines += ["", f"Floor (the volumes' bytes written once more, then hashed; one core): {median['floor']:.2f} s; "
                  f"(dir + floor) / dir = {floor_ratio:.2f}x"]
    (RESULTS / "pack.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(p for _, _, p in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

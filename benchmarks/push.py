#!/usr/bin/env python3
"""Benchmark `regcarve push` against what a site would otherwise run: `regcarve convert --format dir`
then `skopeo sync --src dir --dest docker --scoped --all` of its output, into the same registry.

    python3 benchmarks/push.py               # full inputs (bench.py's cache), 3 rounds -> results/push-latest.*
    python3 benchmarks/push.py --quick       # bench.py's quick inputs, 2 rounds -> results/push-quick.*
    python3 benchmarks/push.py --only tags --runs 1 --jobs 16
    python3 benchmarks/push.py --registry-storage /dev/shm   # the registries' storage on tmpfs (diagnostic)
    python3 benchmarks/push.py --only tags50k --runs 2   # 50,000 tags: push alone -> results/push-tags50k.*

Every run pushes into a fresh registry (Debian's docker-registry, tests/registry.py, plain HTTP on
127.0.0.1, the same config for every command), started before the command and removed after it;
starting it is not timed. The subjects alternate within a round and the order rotates from round to
round. Measured per command: wall time, CPU (the command and its children), peak RSS, and the CPU the
registry process spent (from /proc). For `regcarve push`, the requests it counted (its summary line);
`push again` is a second push into the registry the first one filled: nothing to send.

The 50,000-tag archive (issue 19) is measured on its own and without the reference: `skopeo sync` of
its 50,000 folders would take about twenty minutes a round at the 5,000-tag rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import (  # noqa: E402
    CACHE, FULL, MB, QUICK, REPO_ROOT, RESULTS, Launcher, discard, empty_trash, git_state, input_groups, log,
    machine_info, prepare,
)
from tests.registry import LiveRegistry  # noqa: E402

RSS_LIMIT_MB = 200
GOALS = {"tags.tar.gz": 0.1, "big.tar.gz": 0.6}  # push ≤ ratio × (convert + skopeo sync)
INPUTS = {"tags": "tags.tar.gz", "big": "big.tar.gz", "tags50k": "tags50k.tar.gz"}
PUSH_ONLY = {"tags50k.tar.gz"}  # no reference measured (see above)
START, END = "<!-- push-results:start -->", "<!-- push-results:end -->"
REGCARVE = [sys.executable, "-m", "regcarve"]


def remove(path: Path) -> None:
    """bench.discard (a rename into the trash, emptied later) where it can, else now."""
    try:
        discard(path)
    except OSError:  # another filesystem than the trash's (tmpfs)
        shutil.rmtree(path, ignore_errors=True)


def registry_cpu(reg: LiveRegistry) -> float:
    fields = Path(f"/proc/{reg.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(launcher: Launcher, argv: list[str], scratch: Path) -> dict:
    m = launcher.run(argv, scratch, scratch / "stderr")
    stderr = (scratch / "stderr").read_text(errors="replace")
    if m["rc"] != 0:
        raise SystemExit(f"{' '.join(argv[:4])} …: exit {m['rc']}: {stderr[-1500:]}")
    return {"wall": m["wall"], "cpu": m["user"] + m["sys"], "rss_mb": m["maxrss_kb"] * 1024 / MB, "stderr": stderr}


def measure_push(launcher: Launcher, archive: Path, scratch: Path, jobs: int, storage: Path) -> dict[str, dict]:
    """`regcarve push` into a fresh registry, then the same push again (nothing left to send)."""
    out = {}
    with LiveRegistry(storage / "registry" / "storage") as reg:
        for key in ("push", "push again"):
            before = registry_cpu(reg)
            m = run(launcher, [*REGCARVE, "push", str(archive), reg.host, "--plain-http", "-q", "-j", str(jobs)],
                    scratch)
            m["registry_cpu"] = registry_cpu(reg) - before
            counted = re.search(r"(\d+) request\(s\) \(([^)]*)\)", m.pop("stderr"))
            m["requests"] = int(counted.group(1)) if counted else None
            m["by_method"] = counted.group(2) if counted else ""
            out[key] = m
    remove(storage / "registry")
    return out


def measure_reference(launcher: Launcher, archive: Path, scratch: Path, jobs: int,
                      storage: Path) -> dict[str, dict]:
    """`regcarve convert --format dir`, then `skopeo sync` of OUT into a fresh registry, then the
    registry's floor (measure_floor)."""
    out_dir = scratch / "out"
    convert = run(launcher, [*REGCARVE, "convert", "--format", "dir", "-q", "-o", str(out_dir), str(archive)], scratch)
    with LiveRegistry(storage / "registry" / "storage") as reg:
        before = registry_cpu(reg)
        sync = run(launcher, ["skopeo", "sync", "--src", "dir", "--dest", "docker", "--scoped", "--all",
                              "--dest-tls-verify=false", str(out_dir), reg.host], scratch)
        sync["registry_cpu"] = registry_cpu(reg) - before
        floor = measure_floor(launcher, reg, out_dir, scratch, jobs)
    discard(out_dir)
    remove(storage / "registry")
    for m in (convert, sync, floor):
        m.pop("stderr")
    return {"convert": convert, "skopeo sync": sync, "registry floor": floor}


def measure_floor(launcher: Launcher, reg: LiveRegistry, out_dir: Path, scratch: Path, jobs: int) -> dict:
    """barepush.py: the tags' manifests alone, PUT again by a bare client into the registry the sync
    filled, once its tags are removed from the storage (no cache is configured: it reads the disk)."""
    for tags in reg.root.glob("docker/registry/v2/repositories/**/_manifests/tags"):
        shutil.rmtree(tags)
    before = registry_cpu(reg)
    floor = run(launcher, [sys.executable, str(HERE / "barepush.py"), str(out_dir), reg.host, "--jobs", str(jobs)],
                scratch)
    floor["registry_cpu"] = registry_cpu(reg) - before
    return floor


def stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def measure_input(launcher: Launcher, name: str, archive: Path, runs: int, jobs: int, scratch: Path,
                  storage: Path) -> dict:
    rounds: dict[str, list[dict]] = {}
    for r in range(runs):
        order = [measure_push, measure_reference] if r % 2 == 0 else [measure_reference, measure_push]
        if name in PUSH_ONLY:
            order = [measure_push]
        for measure in order:
            got = measure(launcher, archive, scratch, jobs, storage)
            for key, m in got.items():
                rounds.setdefault(key, []).append(m)
                log(f"  {name} round {r + 1}/{runs} {key:12} {m['wall']:8.2f} s wall {m['cpu']:7.2f} s cpu "
                    f"{m['rss_mb']:7.1f} MB; registry {m.get('registry_cpu', 0):6.2f} s cpu")
    result = {}
    for key, ms in rounds.items():
        result[key] = {"wall": stats([m["wall"] for m in ms]), "cpu": stats([m["cpu"] for m in ms]),
                       "rss_mb": round(max(m["rss_mb"] for m in ms), 1)}
        if "registry_cpu" in ms[0]:
            result[key]["registry_cpu"] = stats([m["registry_cpu"] for m in ms])
        if "requests" in ms[0]:
            result[key]["requests"], result[key]["by_method"] = ms[0]["requests"], ms[0]["by_method"]
    if name in PUSH_ONLY:
        return result
    reference = [c["wall"] + s["wall"] for c, s in zip(rounds["convert"], rounds["skopeo sync"])]
    result["convert + skopeo sync"] = {"wall": stats(reference)}
    result["ratio"] = round(result["push"]["wall"]["median"] / result["convert + skopeo sync"]["wall"]["median"], 4)
    result["floor ratio"] = round(result["registry floor"]["wall"]["median"]
                                  / result["convert + skopeo sync"]["wall"]["median"], 4)
    return result


def goals(results: dict, inputs: dict) -> list[dict]:
    out = []
    for name, limit in GOALS.items():
        if name in results and "ratio" in results[name]:
            r = results[name]["ratio"]
            floor = results[name]["floor ratio"]
            out.append({"goal": f"push {name} <= {limit} x (convert + skopeo sync)", "value": f"{r:.3f}×",
                        "limit": f"{limit}×", "status": "PASS" if r <= limit else "FAIL",
                        "floor": f"{floor:.3f}×"})
    for name, res in results.items():
        rss = res["push"]["rss_mb"]
        out.append({"goal": f"peak RSS of push on {name} <= {RSS_LIMIT_MB} MB", "value": f"{rss:.0f} MB",
                    "limit": f"{RSS_LIMIT_MB} MB", "status": "PASS" if rss <= RSS_LIMIT_MB else "FAIL"})
    return out


def cell(stat: dict) -> str:
    return f"{stat['median']:.2f} ({stat['min']:.2f}–{stat['max']:.2f})"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"### Push (run {report['started'][:16].replace('T', ' ')} UTC, {report['runs']} rounds, "
             f"--jobs {report['jobs']}; registry storage: {report['registry_storage']})", "",
             f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores; regcarve at {report['git'].get('commit', '')[:7]}; "
             f"load average at start {' / '.join(str(x) for x in report['load_average']['start'])}.", "",
             "| input | command | wall s | CPU s | peak RSS MB | registry CPU s | requests |",
             "|---|---|---|---|---|---|---|"]
    for name, res in report["results"].items():
        first = True
        for key in ("push", "push again", "convert", "skopeo sync", "convert + skopeo sync", "registry floor"):
            if key not in res:
                continue
            r = res[key]
            label = f"{name}: {report['inputs'][name]['tags']:,} tags" if first else ""
            first = False
            req = f"{r['requests']:,} ({r['by_method']})" if r.get("requests") else ""
            lines.append(f"| {label} | `{key}` | {cell(r['wall'])} | {cell(r['cpu']) if 'cpu' in r else ''} | "
                         f"{r.get('rss_mb', '')} | {cell(r['registry_cpu']) if 'registry_cpu' in r else ''} | {req} |")
    lines += ["", "| goal | measured | registry floor | limit | result |", "|---|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']} | {g.get('floor', '')} | {g['limit']} | **{g['status']}** |"
              for g in report["goals"]]
    return "\n".join(lines) + "\n"


def update_readmes(md: str) -> None:
    for readme in (HERE / "README.md", REPO_ROOT / "README.md"):
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            readme.write_text(f"{head}{START}\n{md}{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="bench.py's quick inputs, 2 rounds")
    ap.add_argument("--runs", type=int, help="rounds (default 3, --quick 2)")
    ap.add_argument("--jobs", type=int, default=16, help="regcarve push --jobs (default: 16)")
    ap.add_argument("--only", choices=tuple(INPUTS), help="one input (tags50k: only this way)")
    ap.add_argument("--registry-storage", type=Path, metavar="DIR",
                    help="where the registries keep their storage (default: beside the inputs, on their disk)")
    args = ap.parse_args(argv)
    profile = QUICK if args.quick else FULL
    runs = args.runs or (2 if args.quick else 3)
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    names = [INPUTS[args.only]] if args.only else [n for n in INPUTS.values() if n not in PUSH_ONLY]
    inputs = prepare(profile, None, False, groups=input_groups(profile, set(names)))["inputs"]
    scratch = Path(tempfile.mkdtemp(prefix="push-", dir=CACHE))
    storage = Path(tempfile.mkdtemp(prefix="push-registry-", dir=args.registry_storage or CACHE))
    launcher = Launcher()
    results = {}
    try:
        for name in names:
            log(f"measuring push of {name}, load {os.getloadavg()[0]:.2f}")
            results[name] = measure_input(launcher, name, REPO_ROOT / inputs[name]["path"], runs, args.jobs, scratch,
                                          storage)
    finally:
        launcher.close()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)
        empty_trash()
    report = {"schema": "regcarve-push-bench/1", "started": started.isoformat(timespec="seconds"), "runs": runs,
              "jobs": args.jobs, "registry_storage": str(args.registry_storage or "disk, beside the inputs"),
              "load_average": {"start": [round(x, 2) for x in load_start],
                                                  "end": [round(x, 2) for x in os.getloadavg()]},
              "machine": machine_info(), "git": git_state(), "inputs": {n: inputs[n] for n in names},
              "results": results}
    report["goals"] = goals(results, inputs)
    md = markdown(report)
    RESULTS.mkdir(exist_ok=True)
    stem = "push-quick" if args.quick else ("push-latest" if not args.only else "push-only")
    if set(names) <= PUSH_ONLY:
        stem = "push-" + args.only  # its own record, kept
    if args.registry_storage:
        stem += "-" + args.registry_storage.name  # a diagnostic next to the official run, not instead of it
    ext = ".tmp" if args.only and stem == "push-only" else ""
    (RESULTS / f"{stem}.json{ext}").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md{ext}").write_text(md)
    if stem == "push-latest":
        update_readmes(md)
    print("\n" + md)
    return 1 if any(g["status"] == "FAIL" for g in report["goals"]) else 0


if __name__ == "__main__":
    sys.exit(main())

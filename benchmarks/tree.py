"""Storage folders read in place (issue 13): the cached archives of bench.py, extracted, against the
references the issue names, in the same rounds.

    python3 benchmarks/tree.py [--profile full|quick] [--runs 5] [--cache DIR] [--work DIR]

`--cache` holds bench.py's inputs (`big.tar`, `tags.tar.gz`; default benchmarks/.cache/<profile>);
they are extracted once into `--work` (default benchmarks/.cache/<profile>/tree). Writes
results/tree.{json,md} and exits 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import CACHE, RESULTS, Command, Launcher, log, machine_info, measure_once, summarise

STORAGE = "docker/registry/v2"
ARCHIVES = {"big": "big.tar", "tags": "tags.tar.gz"}
GOALS = [  # (input, subject, reference, limit)
    ("big", "dir", "cat-openssl", 0.75),
    ("tags", "dir", "cat-openssl", 0.75),
    ("tags", "list-size", "find", 2.0),
    ("tags", "dir-size", "find", 2.0),
]


def commands(name: str) -> list[Command]:
    regcarve = [sys.executable, "-m", "regcarve"]
    cmds = [
        Command("cat-openssl", "reference", ["bash", "-c", f'find "$1/{STORAGE}/blobs" -name data -type f -print0 | '
                                             'xargs -0 cat | openssl dgst -sha256 >/dev/null', "bash", "{A}"]),
        Command("dir", "subject", [*regcarve, "convert", "--format", "dir", "-q", "-o", "{OUT}", "{A}"], out_dir=True),
    ]
    if name == "tags":
        cmds += [
            Command("find", "reference", ["bash", "-c", f'find "$1/{STORAGE}" -type d -name current >/dev/null',
                                          "bash", "{A}"]),
            Command("list-size", "subject", [*regcarve, "list", "-q", "--verify", "size", "{A}"]),
            Command("dir-size", "subject", [*regcarve, "convert", "--format", "dir", "--verify", "size", "-q", "-o",
                                            "{OUT}", "{A}"], out_dir=True),
        ]
    return cmds


def extracted(cache: Path, work: Path, name: str) -> Path:
    folder = work / name
    if not (folder / STORAGE / "repositories").is_dir():
        log(f"extracting {ARCHIVES[name]} into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xf", str(cache / ARCHIVES[name]), "-C", str(folder)], check=True)
    return folder


def measure(launcher: Launcher, name: str, folder: Path, runs: int, scratch: Path) -> dict:
    subprocess.run(["bash", "-c", f'find "$1" -type f -print0 | xargs -0 cat >/dev/null', "bash", str(folder)],
                   check=True)  # the page cache, as bench.py warms its archives
    cmds = commands(name)
    results = {c.key: {"kind": c.kind, "command": c.display().replace(str(folder), "STORAGE"), "runs": []}
               for c in cmds}
    for r in range(runs):
        for cmd in cmds[r % len(cmds):] + cmds[:r % len(cmds)]:
            m = measure_once(launcher, cmd, folder, scratch)
            if m["rc"] not in ((0, 1) if cmd.key.startswith(("list", "dir")) else (0,)):
                raise SystemExit(f"{name} {cmd.key}: exit {m['rc']}: {m['stderr'][-300:]}")
            m.pop("stderr")
            results[cmd.key]["runs"].append(m)
            log(f"  {name} run {r + 1}/{runs} {cmd.key:12} {m['wall']:7.2f} s wall {m['cpu']:7.2f} s cpu")
    for res in results.values():
        summarise(res)
    return results


def markdown(report: dict) -> str:
    lines = [f"### Storage folders read in place ({report['runs']} rounds)", "",
             f"Load average at start {report['load_start']}, at end {report['load_end']}.", "",
             "| input | command | wall median (min–max) s | cpu s |", "|---|---|---|---|"]
    for name, results in report["results"].items():
        for key, res in results.items():
            w = res["wall"]
            lines.append(f"| {name} | `{res['command']}` | {w['median']:.2f} ({w['min']:.2f}–{w['max']:.2f}) | "
                         f"{res['cpu']['median']:.2f} |")
    lines += ["", "| goal | ratio | status |", "|---|---|---|"]
    lines += [f"| {g['text']} | {g['value']:.2f} | {g['status']} |" for g in report["goals"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="full")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    cache = args.cache or CACHE / args.profile
    work = args.work or cache / "tree"
    load_start = open("/proc/loadavg").read().split()[:3]
    launcher = Launcher()
    results = {}
    try:
        with tempfile.TemporaryDirectory(dir=work.parent if work.parent.exists() else None) as scratch:
            for name in ARCHIVES:
                results[name] = measure(launcher, name, extracted(cache, work, name), args.runs, Path(scratch))
    finally:
        launcher.close()
    goals = []
    for name, subject, reference, limit in GOALS:
        value = results[name][subject]["wall"]["median"] / results[name][reference]["wall"]["median"]
        goals.append({"text": f"{name}: {subject} <= {limit} x {reference}", "value": round(value, 3),
                      "status": "PASS" if value <= limit else "FAIL"})
    report = {"runs": args.runs, "machine": machine_info(), "load_start": " / ".join(load_start),
              "load_end": " / ".join(open("/proc/loadavg").read().split()[:3]), "results": results, "goals": goals}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tree.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "tree.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(g["status"] == "PASS" for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Start-up time of the `sg2image` commands that need no model: wall time of each command,
run as a fresh subprocess (so every run pays Python's and the imports' start-up, as a user
does), median of --runs runs after one untimed warm-up run (which fills the OS file cache).

    python benchmarks/cli_startup.py --label after         # 7 runs of each command
    python benchmarks/cli_startup.py --label before --runs 3

Results are merged by label into benchmarks/results/cli_startup.json (so a "before" and an
"after" measurement sit side by side) and summarised in benchmarks/results/cli_startup.md.
Each label records the machine, the load average before and after (other jobs on the
machine slow every command down), and the command line that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXAMPLES = ROOT / "src" / "sg2image" / "examples" / "shapes.json"
# The console script of the interpreter that runs this file (the project's .venv).
SG2IMAGE = Path(sys.executable).parent / "sg2image"
# The target of issue 14 for these commands.
TARGET_S = 1.5


def commands(tmp: Path) -> dict[str, list[str]]:
    exe = str(SG2IMAGE)
    return {
        "python -c 'import sg2image'": [sys.executable, "-c", "import sg2image"],
        "sg2image --help": [exe, "--help"],
        "sg2image validate EXAMPLES": [exe, "validate", str(EXAMPLES)],
        "sg2image draw EXAMPLES -o DIR": [exe, "draw", str(EXAMPLES), "-o", str(tmp / "drawn")],
        "sg2image shapes make --n 20": [
            exe, "shapes", "make", "--split", "test", "--n", "20", "-o", str(tmp / "made.json")
        ],
        "sg2image shapes check (20 renders)": [
            exe, "shapes", "check", str(tmp / "g.json"), str(tmp / "renders")
        ],
        "sg2image data prepare --help": [exe, "data", "prepare", "--help"],
    }  # fmt: skip


def prepare(tmp: Path) -> None:
    """The inputs of `shapes check`: 20 test graphs and their ground-truth renders."""
    exe = str(SG2IMAGE)
    for args in (
        ["shapes", "make", "--split", "test", "--n", "20", "-o", str(tmp / "g.json")],
        ["shapes", "render", str(tmp / "g.json"), "-o", str(tmp / "renders")],
    ):
        subprocess.run([exe, *args], check=True, capture_output=True)


def time_once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_markdown(all_results: dict, path: Path) -> None:
    labels = list(all_results)
    names = list(next(iter(all_results.values()))["median_s"])
    lines = [
        "# `sg2image` start-up time",
        "",
        "Wall time of each command as a fresh subprocess, median of the runs (seconds); "
        f"target for the commands below: under {TARGET_S} s. Written by "
        "`benchmarks/cli_startup.py`.",
        "",
        "| command | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name in names:
        row = [f"{all_results[lb]['median_s'].get(name, float('nan')):.2f}" for lb in labels]
        lines.append(f"| `{name}` | " + " | ".join(row) + " |")
    lines.append("")
    for lb in labels:
        r = all_results[lb]
        lines += [
            f"**{lb}**: {r['date']}, {r['runs']} runs each, {r['machine']['cpu']} "
            f"({r['machine']['cpus']} CPUs), Python {r['machine']['python']}, load average "
            f"{r['load_before']} before and {r['load_after']} after; "
            f"`{r['command']}`" + (f". {r['note']}" if r.get("note") else ""),
            "",
        ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="Name of this measurement.")
    parser.add_argument("--runs", type=int, default=7, help="Timed runs of each command.")
    parser.add_argument("--note", default="", help="Recorded with the results.")
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = parser.parse_args()
    if not SG2IMAGE.is_file():
        raise SystemExit(f"{SG2IMAGE}: no sg2image console script beside this Python")

    # One thread as in the test suite; the variable changes nothing at start-up.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prepare(tmp)
        times: dict[str, list[float]] = {}
        for name, argv in commands(tmp).items():
            time_once(argv, env)  # warm-up: file cache, .pyc files
            times[name] = [round(time_once(argv, env), 3) for _ in range(args.runs)]
            print(f"{name:<40} median {statistics.median(times[name]):.2f} s", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "runs": args.runs,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "times_s": times,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": f"python benchmarks/cli_startup.py --label {args.label} --runs {args.runs}",
        "note": args.note,
    }
    all_results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    all_results[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(all_results, indent=1) + "\n")
    write_markdown(all_results, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

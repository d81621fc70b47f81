"""The Shapes adherence benchmark (also `sg2image bench`): writes benchmarks/results/*.json,
docs/benchmarks.md (table, plot, example grid).

    python benchmarks/shapes_bench.py --run runs/shapes [--n 1000] [--ablation NAME=DIR ...]

`--run` is a `sg2image train --preset shapes` folder: its pipeline is the sg2image row, its
Shapes base the flattened-text baseline, its Shapes CLIP the FID feature space.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from sg2image.data.shapes import make_split
from sg2image.eval.shapes_bench import (
    System,
    example_grid,
    markdown_table,
    plot_accuracy_vs_evals,
    run_benchmark,
)

ROOT = Path(__file__).resolve().parents[1]


def systems_for(run: Path, ablations: dict[str, str], sweep: bool) -> list[System]:
    pipe, base = str(run / "method" / "pipeline"), str(run / "shapes-base" / "base")
    systems = [
        System("ground-truth", "ground_truth"),
        System("sg2image", "pipeline", pipe),
        System("text-baseline", "text", base, note="graph flattened into one sentence"),
    ]
    systems += [System(name, "pipeline", d, note="ablation") for name, d in ablations.items()]
    if sweep:
        systems += [
            System("lms-100", "pipeline", pipe, "lms", 100, 2.0, "the paper's sampler"),
            System("dpm-10", "pipeline", pipe, "dpm++", 10, 2.0),
            System("ddim-50", "pipeline", pipe, "ddim", 50, 2.0),
            System("dpm-20-no-cfg", "pipeline", pipe, "dpm++", 20, 1.0),
        ]
        systems += [
            System(f"dpm-20-cfg{g}", "pipeline", pipe, "dpm++", 20, g) for g in (1.5, 3.0, 5.0)
        ]
    return systems


def write_docs(rows, floor, out_md: Path, command: str, n: int) -> None:
    docs = out_md.parent
    plot_accuracy_vs_evals(rows, docs / "benchmark_accuracy_vs_evals.png")
    ours = next(r for r in rows if r["system"]["name"] == "sg2image")
    example_grid(ours, make_split("test", n=8), docs / "benchmark_examples.png")
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    out_md.write_text(
        "# Benchmarks\n\n"
        f"Shapes adherence benchmark on the first {n} fixed test graphs.\n\n"
        f"Machine: {machine}, torch {torch.__version__}, CPU only.\n\n"
        f"Command: `{command}`\n\n"
        + markdown_table(rows, floor)
        + "\n![relation accuracy vs UNet evaluations](benchmark_accuracy_vs_evals.png)\n\n"
        "Examples (sg2image, default sampler), each image beside its graph:\n\n"
        "![examples](benchmark_examples.png)\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a --preset shapes run folder")
    parser.add_argument("--n", type=int, default=1000, help="test graphs (benchmark: 1000)")
    parser.add_argument("--diversity-n", type=int, default=200)
    parser.add_argument("--ablation", action="append", default=[], help="NAME=PIPELINE_DIR")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sampler sweep")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    ablations = dict(a.split("=", 1) for a in args.ablation)
    systems = systems_for(args.run, ablations, not args.no_sweep)
    clip = str(args.run / "shapes-base" / "clip")
    rows = run_benchmark(systems, clip, args.results, n=args.n, diversity_n=args.diversity_n)
    floor = json.loads((args.results / "floor.json").read_text())
    command = "python benchmarks/shapes_bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_docs(rows, floor, args.docs, command, args.n)
    print(markdown_table(rows, floor))


if __name__ == "__main__":
    main()

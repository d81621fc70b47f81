"""The Shapes adherence benchmark (also `sg2image bench`): writes benchmarks/results/*.json,
docs/benchmarks.md (table, plot, example grid).

    python benchmarks/shapes_bench.py --run runs/shapes [--n 1000] [--ablation NAME=DIR ...]

`--run` is a `sg2image train --preset shapes` folder: its pipeline is the sg2image row, its
Shapes base the flattened-text baseline, its Shapes CLIP the FID feature space.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sg2image.eval.shapes_bench import run_and_report

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a --preset shapes run folder")
    parser.add_argument("--n", type=int, default=1000, help="test graphs (benchmark: 1000)")
    parser.add_argument("--diversity-n", type=int, default=200)
    parser.add_argument("--ablation", action="append", default=[], help="NAME=PIPELINE_DIR")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sampler sweep")
    parser.add_argument("--sweep-n", type=int, default=None, help="graphs for ablations+sweep")
    parser.add_argument("--reuse", action="store_true", help="keep results already saved")
    parser.add_argument("--only", action="append", default=None, help="run only this system")
    parser.add_argument("--world", choices=("plain", "depth"), default=None,
                        help="whose test split (default: the run's world)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    ablations = dict(a.split("=", 1) for a in args.ablation)
    command = "python benchmarks/shapes_bench.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    table = run_and_report(
        args.run,
        ablations,
        not args.no_sweep,
        args.n,
        args.diversity_n,
        args.results,
        args.docs,
        command,
        args.sweep_n,
        args.reuse,
        args.only,
        world=args.world,
    )
    print(table)


if __name__ == "__main__":
    main()

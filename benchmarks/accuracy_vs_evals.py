"""Redraw docs/benchmark_accuracy_vs_evals.png from saved benchmark rows: the model rows of
benchmarks/results/*.json and those of the folders given (e.g. the distilled student's rows
at 1, 2, 4 and 8 steps, benchmarks/results/distill), without sampling anything again.

    python benchmarks/accuracy_vs_evals.py benchmarks/results/distill
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sg2image.eval.shapes_bench import MODEL_KINDS, plot_accuracy_vs_evals

ROOT = Path(__file__).resolve().parents[1]


def rows_in(folder: Path, suffix: str = "") -> list[dict]:
    """The saved rows of model systems in ``folder``, named with ``suffix`` (their graphs)."""
    rows = []
    for path in sorted(folder.glob("*.json")):
        row = json.loads(path.read_text())
        system = row.get("system") if isinstance(row, dict) else None
        if isinstance(system, dict) and system.get("kind") in MODEL_KINDS:
            # the student's points have the curve's legend; short labels keep them apart
            fast = system.get("sampler") == "fast"
            system["name"] = f"{system['steps']}" if fast else system["name"] + suffix
            rows.append(row)
    return rows


def main(extra: list[str]) -> None:
    rows = rows_in(ROOT / "benchmarks" / "results")
    for folder in extra:
        found = rows_in(Path(folder))
        n = {r["num_graphs"] for r in found}
        rows += rows_in(Path(folder), f" ({'/'.join(map(str, sorted(n)))} graphs)")
    plot_accuracy_vs_evals(rows, ROOT / "docs" / "benchmark_accuracy_vs_evals.png")


if __name__ == "__main__":
    main(sys.argv[1:])

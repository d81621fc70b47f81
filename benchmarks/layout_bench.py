"""Layouts from graphs: the predicted boxes themselves, before any image.

For each layout generator (a `layout_generator/` folder: of a pipeline, or of a training
run), on the 1,000 Shapes test graphs and on the dense split (the 738 test scenes of 3-5
objects with every object in 2-3 relations): relation accuracy of the boxes (the rules that
made the graphs), the share of scenes with overlapping boxes, the spread of box sides
against the true boxes', and how far box centres move between two seeds; raw (as sampled)
and refined (after `refine_boxes` with the generator's own settings).

    python benchmarks/layout_bench.py flow=runs/shapes/method/pipeline/layout_generator \\
        regression=/tmp/reg/layout_generator

Writes benchmarks/results/layout.json and the layout section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from sg2image.data.shapes import make_dense_split, make_split, shapes_vocab
from sg2image.eval.layout import layout_report
from sg2image.models.layout import LayoutGenerator

START, END = "<!-- layout-bench:start -->", "<!-- layout-bench:end -->"
COLUMNS = [
    ("raw_relation_accuracy", "rel. acc. raw"),
    ("refined_relation_accuracy", "rel. acc. refined"),
    ("raw_overlap_rate", "overlapping raw"),
    ("refined_overlap_rate", "overlapping refined"),
    ("raw_side_std_px", "side std raw (px)"),
    ("refined_side_std_px", "side std refined (px)"),
    ("true_side_std_px", "side std true (px)"),
    ("centre_shift_px", "centre shift, 2 seeds (px)"),
    ("ms_per_graph", "ms/graph"),
]


def measure(name: str, folder: str, splits: dict) -> list[dict]:
    gen = LayoutGenerator.from_pretrained(folder).eval()
    rows = []
    for split, graphs in splits.items():
        start = time.perf_counter()
        report = layout_report(gen, graphs, shapes_vocab(), seed=0)
        # three samplings (raw, refined, refined with another seed) were timed together
        report["ms_per_graph"] = (time.perf_counter() - start) / 3 / len(graphs) * 1000
        rows.append({"generator": name, "folder": folder, "split": split, **report})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = "| generator | split | graphs | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (3 + len(COLUMNS))]
    for r in rows:
        cells = [r["generator"], r["split"], str(r["graphs"])]
        cells += ["–" if r.get(k) is None else f"{r[k]:.3f}" for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_docs(rows: list[dict], path: Path, command: str) -> None:
    section = (
        f"{START}\n## Layouts from graphs (the boxes alone)\n\n"
        "Relation accuracy of the predicted boxes by the rules that made the Shapes graphs "
        "(true boxes: 1.000); overlapping: share of scenes with two boxes that touch or "
        "overlap (true: 0); side std: spread of box sides in pixels of the 64 px canvas; "
        "centre shift: mean distance between an object's box centres under two seeds. Raw: "
        "as sampled; refined: after `refine_boxes`. Dense: the 738 test scenes of 3-5 "
        "objects with every object in 2-3 relations (`make_dense_split`).\n\n"
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s).\n\nCommand: `{command}`\n\n"
        + table(rows)
        + f"{END}\n"
    )
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    if START in old and END in old:
        before, rest = old.split(START, 1)
        text = before + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = old.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generators", nargs="+", help="NAME=LAYOUT_GENERATOR_FOLDER")
    ap.add_argument("--n", type=int, default=1000, help="test graphs")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/layout.json"))
    ap.add_argument("--docs", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args(argv)
    splits = {"test": make_split("test", args.n), "dense": make_dense_split()}
    rows = []
    for item in args.generators:
        name, sep, folder = item.partition("=")
        if not sep:
            sys.exit(f"{item!r}: expected NAME=FOLDER")
        rows += measure(name, folder, splits)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rows, indent=1))
    command = "python benchmarks/layout_bench.py " + " ".join(args.generators)
    write_docs(rows, args.docs, command)
    print(table(rows))


if __name__ == "__main__":
    main()

"""Speed of the layout stage alone: graph -> sampled boxes -> refined boxes, as the pipeline
runs it (pack the graphs, draw each graph's noise, `LayoutGenerator.layout`), on Shapes test
graphs that no model trained on, in batches of --batch, at each of --threads.

    python benchmarks/layout_speed.py --label before
    python benchmarks/layout_speed.py --label after --set sample_steps=4 --set sampler=midpoint

ms/image is the best of --repeats passes over the graphs (the machine is shared: the best
pass is the one least slowed by other jobs; the median is recorded too), split into the
flow (graph encoding and the ODE steps) and the refinement. ``--set KEY=VALUE`` overrides
the generator's config (``refine.KEY=VALUE`` one refinement setting), as a config.json
edit would. Rows are merged by label into benchmarks/results/layout_speed.json, each with
its machine, load average and the command that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from sg2image.data.shapes import make_split, shapes_vocab
from sg2image.graph import pack_graphs
from sg2image.models.layout import LayoutGenerator, refine_boxes

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "src" / "sg2image" / "assets" / "shapes-pipeline" / "layout_generator"


def override(gen: LayoutGenerator, items: list[str]) -> dict:
    """Apply KEY=VALUE settings (values in JSON) to the generator's config; returns them."""
    flat, refine = {}, dict(gen.config.refine or {})
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE")
        parsed = json.loads(value) if value not in ("", "None") else None
        if key.startswith("refine."):
            refine[key.removeprefix("refine.")] = parsed
        else:
            flat[key] = parsed
    gen.register_to_config(**flat, refine=refine or gen.config.refine)
    return {**flat, **{f"refine.{k}": v for k, v in refine.items()}}


def time_pass(gen, batches, vocab) -> tuple[float, float]:
    """Seconds of one pass over the batches: (flow, refinement)."""
    flow = refine = 0.0
    for i, graphs in enumerate(batches):
        t0 = time.perf_counter()
        batch = pack_graphs(graphs, vocab)
        noise = torch.cat(
            [
                torch.randn(len(g.objects) + 1, gen.config.box_dims,
                            generator=torch.Generator().manual_seed(i * len(graphs) + j))
                for j, g in enumerate(graphs)
            ]
        )  # fmt: skip
        boxes = gen.sample(batch, noise)
        t1 = time.perf_counter()
        if gen.config.refine is not None:
            with torch.enable_grad():
                refine_boxes(boxes, batch, vocab.predicate_names, **gen.config.refine)
        t2 = time.perf_counter()
        flow, refine = flow + t1 - t0, refine + t2 - t1
    return flow, refine


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="name of this row in the results")
    ap.add_argument("--model", default=str(MODEL), help="a layout_generator folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--n", type=int, default=160, help="test graphs")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "layout_speed.json"
    )
    args = ap.parse_args(argv)
    gen = LayoutGenerator.from_pretrained(args.model).eval()
    settings = override(gen, args.set)
    graphs = make_split("test", args.n)
    batches = [graphs[i : i + args.batch] for i in range(0, len(graphs), args.batch)]
    vocab = shapes_vocab()
    load_before = os.getloadavg()
    by_threads = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_pass(gen, batches[:2], vocab)  # warm-up
        passes = [time_pass(gen, batches, vocab) for _ in range(args.repeats)]
        ms = lambda s: s / len(graphs) * 1000  # noqa: E731
        best = min(passes, key=sum)
        by_threads[str(threads)] = {
            "ms_per_image": ms(sum(best)),
            "flow_ms_per_image": ms(best[0]),
            "refine_ms_per_image": ms(best[1]),
            "median_ms_per_image": ms(statistics.median(sum(p) for p in passes)),
        }
        print(args.label, f"{threads} thread(s):", json.dumps(by_threads[str(threads)]))
    row = {
        "model": os.path.relpath(args.model, ROOT),
        "settings": settings,
        "graphs": len(graphs),
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": by_threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "command": "python benchmarks/layout_speed.py " + shlex.join(sys.argv[1:]),
    }
    data = json.loads(args.results.read_text()) if args.results.is_file() else {}
    data[args.label] = row
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()

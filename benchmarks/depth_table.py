"""The depth table: which part of the model carries depth order, from one benchmark run.

    python benchmarks/depth_table.py RESULTS_DIR [--cpu-seconds FILE] [--docs docs/benchmarks.md]
        [--section depth-table]
    python benchmarks/depth_table.py RESULTS_DIR --time-cpu PIPELINES --cpu-seconds FILE

RESULTS_DIR holds `sg2image bench`'s JSON rows of a depth run with the ablations of
scripts/device_depth_rows.sh (sg2image, sg2image-true-layout, no-graph[-true-layout],
no-order[-true-layout], no-order-slots[-true-layout], no-order-weighted[-true-layout], paper,
paper-objects, paper-boxes, sg2image-plain-test) or of the CPU rows. One table row per model
and boxes (predicted by the model's layout stage, or given: the test graphs' true boxes,
which carry no depth order), with columns: object recall, relation accuracy over the six
geometric predicates (pooled), accuracy on `in front of` and on `behind`, occlusion accuracy
(the oracle's depth rule, number judged in brackets), placement, FID and seconds per image.
The s/img of RESULTS_DIR are where the benchmark sampled (in a device run, the GPU's);
``--cpu-seconds``: a JSON {result name: s/img} measured on this CPU, as one more column;
with ``--time-cpu PIPELINES`` (a folder of the rows' pipelines: full, no-graph, no-order,
paper, paper-objects) it is measured first: the first 64 depth test graphs, batch 16, the
default sampler, 2 threads, after one warm-up batch.
The table replaces the section between ``<!-- SECTION:start -->`` and
``<!-- SECTION:end -->`` in the docs (``--section``, default ``depth-table``: the GPU rows;
``depth-table-cpu``: the rows trained on this CPU), or is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sg2image.data.shapes import RELATION_PHRASES
from sg2image.graph import DEPTH_PREDICATES


def layout_rows(name: str, model: str) -> list[tuple[str, str, str]]:
    """A layout model's two rows: boxes from its layout stage, and the true boxes."""
    return [(name, model, "predicted"), (f"{name}-true-layout", model, "given")]


ROWS = [  # (result name, the model, where its boxes come from)
    *layout_rows("sg2image", "shipped design: depth-ordered map + graph tokens"),
    *layout_rows("no-graph", "no graph tokens"),
    *layout_rows("no-order", "map without depth order (order only from the graph tokens)"),
    *layout_rows("no-order-slots",
                 "map without depth order, tokens bound to boxes by instance slots"),
    *layout_rows("no-order-depth",
                 "map without depth order, slots, object tokens with depth ranks"),
    *layout_rows("no-order-weighted",  # the GPU script's row: all of it from the start
                 "map without depth order, slots, depth-rank tokens, overlap weight 16"),
    *layout_rows("no-order-depth-more", "the same, 2,000 steps more"),
    *layout_rows("no-order-depth-overlap", "the same, 2,000 steps more with overlap weight 4"),
    *layout_rows("no-order-depth-overlap-7000",
                 "the same, 4,000 steps more with overlap weight 4"),
    *layout_rows("no-order-depth-overlap-10000",
                 "the same, 7,000 steps more with overlap weight 4"),
    *layout_rows("no-order-depth-overlap16-10000",
                 "the same, 4,000 steps more with overlap weight 4, then 3,000 with 16"),
    *layout_rows("no-order-depth-overlap16-13000",
                 "the same, 4,000 steps more with overlap weight 4, then 6,000 with 16"),
    *layout_rows("no-order-depth-overlap16-16000",
                 "the same, 4,000 steps more with overlap weight 4, then 9,000 with 16"),
    *layout_rows("no-order-loc",
                 "map without depth order, slots, depth-rank tokens, attention localised"),
    *layout_rows("no-order-loc-low", "the same, 1,000 steps more at localisation weight 0.1"),
    *layout_rows("no-order-loc-8k", "the same, 5,000 steps more at localisation weight 0.1"),
    *layout_rows("no-order-loc-12k", "the same, 9,000 steps more at localisation weight 0.1"),
    *layout_rows("no-order-loc-16k", "the same, 13,000 steps more at localisation weight 0.1"),
    *layout_rows("shipped-depth", "the shipped depth model (0.9.0)"),
    ("finish", "the shipped depth model, default sampler (finish: 3 UNet evaluations)",
     "predicted"),
    ("finish-student-draft", "the same, the finisher student's draft (4 UNet evaluations)",
     "predicted"),
    ("paper", "the paper's layout-free model", "none"),
    ("paper-objects", "layout-free + one graph token per object", "none"),
    ("paper-boxes", "layout-free + object tokens that embed a predicted box", "none"),
    ("paper-grid", "the same + the UNet reads each pixel's x / y (position grid)", "none"),
    ("paper-loc", "the same + attention localised into the boxes", "none"),
    ("paper-loc-refined", "the same, its token boxes refined (conditioner.refine_boxes)", "none"),
]  # fmt: skip
GEOMETRIC = [p for p in RELATION_PHRASES if p not in DEPTH_PREDICATES]


def pooled(per_predicate: dict, names) -> tuple[float | None, int]:
    """Accuracy over the triples of predicates ``names`` together, and their number."""
    correct = sum(per_predicate.get(p, {}).get("correct", 0) for p in names)
    total = sum(per_predicate.get(p, {}).get("total", 0) for p in names)
    return (correct / total if total else None), total


# Pipeline folders of --time-cpu are named for their rows (scripts/device_depth_rows.sh),
# but for the shipped design's: "full".
PIPELINE_OF = {"sg2image": "full"}


def time_cpu(pipelines: Path, n: int = 64, batch: int = 16, threads: int = 2) -> dict:
    """Seconds per image of each row on this CPU (predicted boxes; given boxes for the
    "-true-layout" rows), the benchmark's sampler and seeds."""
    import time

    import torch

    from sg2image.data.shapes import make_split
    from sg2image.pipeline import load_pipeline

    torch.set_num_threads(threads)
    graphs = make_split("test", n=n, world="depth")
    out = {}
    for name, _, boxes in ROWS:
        row = name.removesuffix("-true-layout")
        folder = pipelines / PIPELINE_OF.get(row, row)
        if not folder.is_dir():
            continue
        pipe = load_pipeline(folder)
        pipe.set_progress_bar_config(disable=True)
        kw = {"layout": "given"} if boxes == "given" else {}
        _sample(pipe, graphs[:batch], 0, kw)  # warm-up
        start = time.perf_counter()
        for i in range(0, n, batch):
            _sample(pipe, graphs[i : i + batch], i, kw)
        out[name] = (time.perf_counter() - start) / n
    return out


def _sample(pipe, graphs, seed: int, kw: dict) -> None:
    import torch

    gens = [torch.Generator().manual_seed(seed + k) for k in range(len(graphs))]
    pipe(graphs, num_inference_steps=20, guidance_scale=2.0, generator=gens, output_type="np",
         **kw)  # fmt: skip


def short(device: str | None) -> str:
    """"NVIDIA H200" -> "H200"; rows saved before devices were recorded sampled on the CPU."""
    return (device or "CPU").removeprefix("NVIDIA ")


def fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(results: Path, cpu_seconds: dict | None = None) -> str:
    head = ["model", "boxes", "recall", "six geometric", "in front of", "behind", "occlusion",
            "placement", "FID", "s/img (where it sampled)"]  # fmt: skip
    if cpu_seconds:
        head.append("s/img (CPU, 2 threads)")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, model, boxes in ROWS:
        path = results / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        per = r["per_predicate"]
        six, _ = pooled(per, GEOMETRIC)
        front, behind = (pooled(per, [p])[0] for p in DEPTH_PREDICATES)
        occlusion = r.get("occlusion_accuracy")
        cells = [
            model, boxes, fmt(r["object_recall"]), fmt(six), fmt(front), fmt(behind),
            f"{fmt(occlusion)} ({r.get('occlusion_judged', 0)})", fmt(r["placement"]),
            fmt(r["fid"], 2), f"{fmt(r['seconds_per_image'], 4)} ({short(r.get('device'))})",
        ]  # fmt: skip
        if cpu_seconds:
            cells.append(fmt(cpu_seconds.get(name), 3))  # 2 threads, batch 16
        lines.append("| " + " | ".join(cells) + " |")
    n = json.loads((results / "sg2image.json").read_text())["num_graphs"]
    out = "\n".join(lines) + "\n"
    out += f"\nDepth test graphs 0-{n - 1}; seconds per image at the benchmark's batch size.\n"
    plain = results / "sg2image-plain-test.json"
    if plain.is_file():
        p = json.loads(plain.read_text())
        out += (
            f"\nThe shipped design on the plain world's test split (six predicates, graphs "
            f"0-{p['num_graphs'] - 1}): recall {fmt(p['object_recall'])}, relations "
            f"{fmt(p['relation_accuracy'])}, placement {fmt(p['placement'])}, FID "
            f"{fmt(p['fid'], 2)}.\n"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--cpu-seconds", type=Path)
    ap.add_argument("--docs", type=Path)
    ap.add_argument("--section", default="depth-table", help="the docs' marked section")
    ap.add_argument("--time-cpu", type=Path, help="the rows' pipelines, to time on this CPU")
    args = ap.parse_args()
    if args.time_cpu:
        if not args.cpu_seconds:
            ap.error("--time-cpu writes its times to --cpu-seconds FILE")
        args.cpu_seconds.write_text(json.dumps(time_cpu(args.time_cpu), indent=1))
    cpu = json.loads(args.cpu_seconds.read_text()) if args.cpu_seconds else None
    text = table(args.results, cpu)
    if args.docs is None:
        print(text)
        return
    doc = args.docs.read_text()
    start, end = f"<!-- {args.section}:start -->", f"<!-- {args.section}:end -->"
    if start not in doc or end not in doc:
        raise SystemExit(f"{args.docs}: no {start} ... {end} section to replace")
    before, rest = doc.split(start, 1)
    args.docs.write_text(before + start + "\n" + text + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()

"""Two measurements the main Shapes benchmark does not make, for one pipeline:

1. the dense split end to end: images of the 738 test scenes with every object in 2-3
   relations (`make_dense_split`), scored by the oracle like the test split;
2. which objects are missed: object recall on the test graphs by shape and by side.

    python benchmarks/shapes_dense_and_misses.py --model src/sg2image/assets/shapes-pipeline

Writes benchmarks/results/dense_and_misses.json.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sg2image.data.shapes import make_dense_split, make_split
from sg2image.eval.oracle import detect, match, score_images
from sg2image.pipeline import load_pipeline


def generate(pipe, graphs, seed: int = 0, batch: int = 16, sampler=None) -> list[np.ndarray]:
    """uint8 images, graph i from a generator seeded seed + i (the benchmark's seeds);
    ``sampler``: the pipeline's (None: its default)."""
    out = []
    for i in tqdm(range(0, len(graphs), batch), desc="sampling"):
        chunk = graphs[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))]
        images = pipe(chunk, generator=gens, output_type="np", sampler=sampler).images
        out += list((images * 255).round().astype(np.uint8))
    return out


def misses(images, graphs) -> dict:
    """Object recall by shape and by true side (pixels), from the oracle's matching."""
    found, total = defaultdict(int), defaultdict(int)
    for image, graph in zip(images, graphs, strict=True):
        matched = match(graph, detect(image))
        for i, label in enumerate(graph.objects):
            side = round((graph.boxes[i][2] - graph.boxes[i][0]) * 64)
            for key in (label.split()[1], f"side {10 + 4 * ((side - 10) // 4)}+"):
                total[key] += 1
                found[key] += int(matched[i] is not None)
    return {k: {"recall": found[k] / total[k], "objects": total[k]} for k in sorted(total)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="src/sg2image/assets/shapes-pipeline")
    ap.add_argument("--n", type=int, default=1000, help="test graphs for the misses")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dense_and_misses.json"))
    ap.add_argument("--sampler", default=None, help="full, finish or fast (default: the model's)")
    args = ap.parse_args(argv)
    pipe = load_pipeline(args.model)
    dense = make_dense_split()
    report = score_images(generate(pipe, dense, sampler=args.sampler), dense).to_json()
    test = make_split("test", args.n)
    result = {
        "model": args.model,
        "sampler": pipe.resolve_sampler(args.sampler, None, None)[0],
        "dense": {"graphs": len(dense), **report},
        "test_misses": {"graphs": args.n, **misses(generate(pipe, test, sampler=args.sampler),
                                                   test)},
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

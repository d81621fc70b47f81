"""Can the Shapes base's UNet draw the shapes at all? Samples prompts naming 1, 2 or 3
random objects of distinct colours ("a red circle, a blue square") and counts, per named
object, whether the oracle finds it (colour and shape) and whether it finds its colour in
any shape. Colour found but object not found means the shape is wrong. Writes
benchmarks/results/base_variants/probe-NAME.json.

    python benchmarks/shapes_base_probe.py runs/shapes/shapes-base/base --name default
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from sg2image.data.shapes import COLOURS, SHAPES
from sg2image.eval.oracle import detect
from sg2image.models.base import load_base
from sg2image.models.shapes_base import sample_base

ROOT = Path(__file__).resolve().parents[1]


def probe(base_dir: str | Path, prompts_per_count: int = 64, seed: int = 0) -> dict:
    parts = load_base(base_dir)
    rng = random.Random(seed)
    result = {}
    for k in (1, 2, 3):
        wanted = []
        for _ in range(prompts_per_count):
            colours = rng.sample(list(COLOURS), k)
            wanted.append([f"{c} {rng.choice(list(SHAPES))}" for c in colours])
        prompts = [", ".join(f"a {o}" for o in objs) for objs in wanted]
        images = np.concatenate(
            [sample_base(parts, prompts[s : s + 16], seed=s) for s in range(0, len(prompts), 16)]
        )
        found = colour = total = 0
        for image, objs in zip(images, wanted, strict=True):
            labels = [d.label for d in detect(image)]
            for o in objs:
                total += 1
                found += o in labels
                colour += any(lab.split()[0] == o.split()[0] for lab in labels)
        result[f"{k}_objects"] = {"object_found": found / total, "colour_found": colour / total}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="a Shapes base folder (SD-1.x layout)")
    parser.add_argument("--name", required=True, help="result file name")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per object count")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = {"base": str(args.base), "sampler": "dpm++ 20, cfg 2.0"}
    result.update(probe(args.base, args.prompts))
    result["torch_threads"] = torch.get_num_threads()
    folder = args.results / "base_variants"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"probe-{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""How much of the FID gap is the layout's: FID of the *renders* of the predicted boxes.

    python benchmarks/layout_fid.py --clip runs/shapes-clip/clip [--split val] [--n 1000] \
        default raw "relax 1" "steps 8" ...

Each variant samples the layout stage of the pipeline (--model, default the shipped one) on
the first ``n`` graphs of --split (graph i seeded i, as the benchmark), draws the boxes
with the Shapes renderer (the world's exact drawing), and scores FID / KID of those renders
on the Shapes-CLIP image features against the renders of the true boxes, with the layout
table's scores of the boxes. No UNet: a variant's FID here is what its layouts alone cost.

Variants: ``default`` (the generator as shipped: its flow steps, then ``refine_boxes`` with
its settings); ``raw`` (no refinement); ``steps K`` (K flow steps); ``SETTING V`` (one of
``refine_boxes``' settings changed, e.g. ``relax 1``). Words combine: ``"raw steps 8"``.
Writes JSON lines to --out (default benchmarks/results/layout_fid.jsonl).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sg2image.data.shapes import make_split, render
from sg2image.eval.layout import sample_layouts, score_layouts
from sg2image.eval.metrics import (
    ClipImageFeatures,
    features,
    fid_kid_from_features,
    to_uint8_batch,
)
from sg2image.models.base import load_clip_vision
from sg2image.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
REFINE_KEYS = ("relax", "margin", "min_gap", "canvas_margin", "size_ratio")


def parse_variant(text: str) -> dict:
    """'raw steps 8' -> {"refine": False, "steps": 8}."""
    words, spec = text.split(), {"refine": True}
    while words:
        word = words.pop(0)
        if word == "default":
            continue
        if word == "raw":
            spec["refine"] = False
        elif word == "steps" and words:
            spec["steps"] = int(words.pop(0))
        elif word in REFINE_KEYS and words:  # a refine_boxes setting, e.g. "relax 1"
            spec.setdefault("refine_settings", {})[word] = float(words.pop(0))
        else:
            raise ValueError(f"{text!r}: expected default, raw, 'steps K' or 'SETTING V'")
    return spec


def layouts_of(pipe, graphs, spec: dict, batch: int = 500) -> list:
    """The graphs with their boxes replaced by the variant's (graph i seeded i)."""
    gen = pipe.layout_generator
    steps, refine = gen.config.sample_steps, gen.config.refine
    gen.register_to_config(sample_steps=spec.get("steps", steps),
                           refine={**refine, **spec.get("refine_settings", {})})  # fmt: skip
    try:
        boxes = []
        for i in range(0, len(graphs), batch):
            boxes += sample_layouts(gen, graphs[i : i + batch], pipe.vocab, i, spec["refine"])
    finally:
        gen.register_to_config(sample_steps=steps, refine=refine)
    return [g.model_copy(update={"boxes": b}) for g, b in zip(graphs, boxes, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--model", default=str(ROOT / "src/sg2image/assets/shapes-pipeline"))
    parser.add_argument("--clip", required=True, help="a Shapes-CLIP folder")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/layout_fid.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = [parse_variant(v) for v in args.variants]  # all checked before any sampling
    pipe = load_pipeline(args.model)
    graphs = make_split(args.split, n=args.n)
    extractor = ClipImageFeatures(load_clip_vision(args.clip))
    real = features(extractor, to_uint8_batch([render(g) for g in graphs]))
    with open(args.out, "a") as out:
        for text, spec in zip(args.variants, specs, strict=True):
            drawn = layouts_of(pipe, graphs, spec)
            fake = features(extractor, to_uint8_batch([render(g) for g in drawn]))
            scores = fid_kid_from_features(real, fake, kid_subset=100)
            report = score_layouts(graphs, [g.boxes for g in drawn])
            fid = {"fid": round(scores["fid"], 4), "kid": round(scores["kid"], 5)}
            row = {"variant": text, "model": args.model, "split": args.split, "n": args.n,
                   **fid, **report}  # fmt: skip
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Where a few-step sampler loses objects: the student's timesteps, and a guided finish.

    python benchmarks/student_schedules.py --model PIPELINE --split val --n 1000 \
        "student 999,499" "student 999,259" "student 999,259 + finish 59" \
        "teacher 999 + finish 19" full

Each variant samples the split's first ``n`` graphs (graph i seeded i, batch 16, predicted
layouts) and is scored in process by the Shapes oracle; the misses are counted by shape.

- ``student T1,T2,...``: the pipeline's distilled student at these timesteps (LCMScheduler,
  custom timesteps; one UNet evaluation each, guidance folded in);
- ``teacher T1,...``: the same steps taken by the fine-tuned UNet itself, unguided (its
  clean-image estimate at each timestep, the LCM way): does the draft need a student?
- ``... + finish T``: then the latents are noised again to timestep T (fresh noise from the
  image's generator) and the fine-tuned UNet's guided (scale 2) clean-image estimate there
  is the result: two more evaluations (CFG); ``+ finish T guidance G`` guides at scale G;
- ``full``: the full sampler (DPM-Solver++ 20 steps, guidance 2).

Writes one JSON line per variant to --out (default benchmarks/results/distill/schedules.jsonl).
``--clip DIR`` (a Shapes-CLIP folder, e.g. runs/shapes/shapes-base/clip) adds FID / KID on its
image features against the ground-truth renders of the same graphs, as ``sg2image bench``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sg2image.data.shapes import make_split, render
from sg2image.eval.metrics import (
    ClipImageFeatures,
    features,
    fid_kid_from_features,
    to_uint8_batch,
)
from sg2image.eval.oracle import aggregate, score_image
from sg2image.models.base import load_clip_vision
from sg2image.pipeline import lcm_scheduler, load_pipeline
from sg2image.training.distill import to_x0_eps

ROOT = Path(__file__).resolve().parents[1]
FINISH_GUIDANCE = 2.0


def parse_variant(text: str) -> dict:
    """'student 999,259 + finish 59' -> {"drafter": "student", "timesteps": [999, 259],
    "finish": 59}; '... + finish 59 guidance 1.5' adds "finish_guidance": 1.5; 'full' ->
    {"drafter": "full"}."""
    if text.strip() == "full":
        return {"drafter": "full"}
    draft, _, finish = text.partition("+")
    drafter, timesteps = draft.split()
    if drafter not in ("student", "teacher"):
        raise ValueError(f"{text!r}: a variant starts with 'student' or 'teacher'")
    spec = {"drafter": drafter, "timesteps": [int(t) for t in timesteps.split(",")]}
    if finish.strip():
        words = finish.split()
        if words[0] != "finish" or len(words) not in (2, 4) or words[2:3] not in ([], ["guidance"]):
            raise ValueError(f"{text!r}: expected '+ finish T' or '+ finish T guidance G'")
        spec["finish"] = int(words[1])
        if len(words) == 4:
            spec["finish_guidance"] = float(words[3])
    return spec


@torch.no_grad()
def draft_and_finish(pipe, graphs, gens, spec: dict) -> np.ndarray:
    """uint8 images (B, H, W, 3) of one variant other than 'full'."""
    b = len(graphs)
    graphs = pipe.check_inputs(graphs)
    context, mask = pipe.encode_graphs(graphs, True)  # CFG: unconditional half first
    size = (pipe.config.resolution // pipe.vae_scale_factor,) * 2
    # the teacher drafts need no student: the finish sampler's scheduler serves them
    lcm = pipe.student_scheduler if spec["drafter"] == "student" else lcm_scheduler(
        pipe.scheduler.config
    )
    latents = pipe.prepare_latents(b, gens, context.dtype, size, lcm)
    layout_map = pipe.layout_map(pipe.prepare_layout(graphs, "predicted", gens), True, size, b)
    drafter = pipe.student_unet if spec["drafter"] == "student" else pipe.unet
    lcm.set_timesteps(timesteps=spec["timesteps"])
    half = None if mask is None else mask[b:]
    latents = pipe.denoise(
        latents, context[b:], half, 1.0, gens, layout_map[b:], unet=drafter, scheduler=lcm
    )
    if "finish" in spec:
        t = spec["finish"]
        a = pipe.scheduler.alphas_cumprod[t]
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in gens])
        x = a.sqrt() * latents + (1 - a).sqrt() * noise
        both = torch.cat([torch.cat([x, x]), layout_map.to(x.dtype)], 1)
        out = pipe.unet(both, torch.full((2 * b,), t), encoder_hidden_states=context,
                        encoder_attention_mask=mask).sample  # fmt: skip
        uncond, cond = out.chunk(2)
        guided = uncond + spec.get("finish_guidance", FINISH_GUIDANCE) * (cond - uncond)
        kind = pipe.scheduler.config.prediction_type
        latents, _ = to_x0_eps(guided, x, a.sqrt(), (1 - a).sqrt(), kind)
    images = ((pipe.decode(latents) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return (images * 255).round().astype(np.uint8)


def run(pipe, graphs, spec: dict, batch: int = 16, fid=None) -> dict:
    """The variant's oracle scores; ``fid`` (extractor, real features): FID / KID too."""
    scores, missed, evals, kept = [], Counter(), Counter(), []
    hooks = [m.register_forward_pre_hook(lambda m, a: evals.update(n=a[0].shape[0]))
             for m in (pipe.unet, pipe.student_unet) if m is not None]  # fmt: skip
    t0 = time.perf_counter()
    for start in range(0, len(graphs), batch):
        chunk = graphs[start : start + batch]
        gens = [torch.Generator().manual_seed(start + k) for k in range(len(chunk))]
        if spec["drafter"] == "full":
            images = pipe(chunk, generator=gens, output_type="np", sampler="full").images
            images = (images * 255).round().astype(np.uint8)
        else:
            images = draft_and_finish(pipe, chunk, gens, spec)
        if fid is not None:
            kept.append(features(fid[0], to_uint8_batch(list(images))))
        for image, graph in zip(images, chunk, strict=True):
            score = score_image(image, graph)
            scores.append(score)
            missed.update(graph.objects[i].split()[1] for i, m in enumerate(score.matches)
                          if m is None)  # fmt: skip
    seconds = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    report = aggregate(scores)
    extra = {}
    if fid is not None:
        out = fid_kid_from_features(fid[1], torch.cat(kept), kid_subset=100)
        extra = {"fid": round(out["fid"], 4), "kid": round(out["kid"], 5)}
    return {
        "object_recall": round(report.object_recall, 4),
        "relation_accuracy": round(report.relation_accuracy, 4),
        "missed_objects": report.num_objects - report.matched_objects,
        "missed_by_shape": dict(missed),
        "unet_evals_per_image": evals["n"] / len(graphs),
        "seconds_with_scoring": round(seconds, 1),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--model", required=True, help="a pipeline folder with a student")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip", help="a Shapes-CLIP folder: FID / KID on its image features")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/distill/schedules.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = [parse_variant(v) for v in args.variants]  # all checked before any sampling
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    if pipe.layout_encoder is None:
        raise SystemExit(f"{args.model}: needs a layout model")
    if not pipe.has_student and any(s["drafter"] == "student" for s in specs):
        raise SystemExit(f"{args.model}: has no distilled student")
    graphs = make_split(args.split, n=args.n)
    fid = None
    if args.clip:
        extractor = ClipImageFeatures(load_clip_vision(args.clip))
        fid = (extractor, features(extractor, to_uint8_batch([render(g) for g in graphs])))
    with open(args.out, "a") as out:
        for text, spec in zip(args.variants, specs, strict=True):
            row = {"variant": text, "model": args.model, "split": args.split, "n": args.n,
                   **run(pipe, graphs, spec, fid=fid)}  # fmt: skip
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

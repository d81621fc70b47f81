"""Off-colour specks of a VAE's decoder: in reconstructions, in generated images, and after
the decoder-only refinement (training/vae_refine.py); writes benchmarks/results/vae_specks.json.

    python benchmarks/vae_specks.py src/sg2image/assets/shapes-pipeline/vae \\
        --steps 2000 --out /tmp/vae-refined --generated 200

Reconstructions: ground-truth renders of Shapes test scenes 0..n-1 encoded and decoded
(latent mode): off-colour and far pixels (eval/specks.py), the oracle's object recall and
the L1 error in [-1, 1]. Generated (``--generated N``): the shipped pipeline's final latents
for test graphs 0..N-1 (seed i, its own VAE), decoded by the VAE measured: off-colour
pixels and the oracle's recall and relation accuracy, the same latents for every decoder.
With --steps, a copy of the VAE has its decoder refined on train scenes (``--hinge``,
``--threshold``) and is measured again (and saved to --out); the folder given is never
written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from sg2image.data.shapes import make_split, render
from sg2image.eval.oracle import score_images
from sg2image.eval.specks import speck_counts
from sg2image.models.shapes_base import to_uint8
from sg2image.training.base_model import Pool
from sg2image.training.vae_refine import HINGE_WEIGHT, THRESHOLD, refine_vae_decoder

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "sg2image" / "assets" / "shapes-pipeline"


def decode(vae: AutoencoderKL, z: torch.Tensor, batch: int) -> torch.Tensor:
    """Images in [-1, 1] of unscaled latents ``z``, ``batch`` at a time."""
    chunks = [vae.decode(z[s : s + batch]).sample.clamp(-1, 1) for s in range(0, len(z), batch)]
    return torch.cat(chunks)


@torch.no_grad()
def measure(vae: AutoencoderKL, n: int, batch: int = 50) -> dict:
    """Speck counts, object recall and L1 of reconstructions of test renders 0..n-1."""
    graphs = make_split("test", n)
    renders = np.stack([render(g) for g in graphs])
    x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    z = torch.cat([vae.encode(x[s : s + batch]).latent_dist.mode() for s in range(0, n, batch)])
    rec = decode(vae, z, batch)
    images = list(to_uint8(rec))
    counts = speck_counts(images, graphs, list(renders))
    counts["object_recall"] = score_images(images, graphs).object_recall
    counts["l1"] = float((rec - x).abs().mean())
    return counts


@torch.no_grad()
def pipeline_latents(n: int, model: Path = SHIPPED) -> torch.Tensor:
    """(n, 4, h, w) final latents of the pipeline at ``model`` for test graphs 0..n-1."""
    from sg2image.pipeline import load_pipeline

    pipe, caught = load_pipeline(model), []
    pipe.set_progress_bar_config(disable=True)
    pipe.decode = lambda latents: caught.append(latents) or latents.clamp(-1, 1)
    graphs = make_split("test", n)
    for s in range(0, n, 16):
        seeds = range(s, min(n, s + 16))
        pipe(graphs[s : s + 16], generator=[torch.Generator().manual_seed(i) for i in seeds])
    return torch.cat(caught)


@torch.no_grad()
def measure_generated(vae: AutoencoderKL, latents: torch.Tensor, batch: int = 50) -> dict:
    """Speck counts, object recall and relation accuracy of `latents` decoded by `vae`."""
    graphs = make_split("test", len(latents))
    images = list(to_uint8(decode(vae, latents / vae.config.scaling_factor, batch)))
    counts = speck_counts(images, graphs)
    scores = score_images(images, graphs)
    counts.update(object_recall=scores.object_recall, relation_accuracy=scores.relation_accuracy)
    return counts


def measure_all(vae: AutoencoderKL, n: int, latents: torch.Tensor | None) -> dict:
    result = {"reconstructed": measure(vae, n)}
    if latents is not None:
        result["generated"] = measure_generated(vae, latents)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vae", type=Path, help="an AutoencoderKL folder")
    parser.add_argument("--n", type=int, default=200, help="test scenes measured")
    parser.add_argument("--steps", type=int, default=0, help="refinement steps (0: measure only)")
    parser.add_argument("--pool", type=int, default=2000, help="train scenes to refine on")
    parser.add_argument("--hinge", type=float, default=HINGE_WEIGHT, help="refinement hinge weight")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="refinement threshold")
    parser.add_argument("--generated", type=int, default=0, help="generated images measured")
    parser.add_argument("--model", type=Path, default=SHIPPED, help="pipeline of --generated")
    parser.add_argument("--out", type=Path, help="where the refined VAE is saved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    latents = pipeline_latents(args.generated, args.model) if args.generated else None
    result = {"vae": str(args.vae), "n": args.n, "generated_n": args.generated,
              "before": measure_all(vae, args.n, latents)}  # fmt: skip
    if args.steps:
        pool, t0 = Pool("train", args.pool), time.perf_counter()
        refine_vae_decoder(vae, pool, args.steps, hinge_weight=args.hinge,
                           threshold=args.threshold)  # fmt: skip
        result["refine"] = {"steps": args.steps, "pool": args.pool, "threads": args.threads,
                            "hinge": args.hinge, "threshold": args.threshold,
                            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        result["after"] = measure_all(vae, args.n, latents)
        if args.out:
            vae.save_pretrained(args.out)
    given = sys.argv[1:] if argv is None else argv
    result["command"] = " ".join(["python benchmarks/vae_specks.py", *map(str, given)])
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "vae_specks.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

"""Off-colour specks in a VAE's reconstructions, before and after the decoder-only
refinement (training/vae_refine.py); writes benchmarks/results/vae_specks.json.

    python benchmarks/vae_specks.py src/sg2image/assets/shapes-pipeline/vae \\
        --steps 600 --out /tmp/vae-refined

Measures, on ground-truth renders of Shapes test scenes 0..n-1 encoded and decoded
(latent mode): off-colour and far pixels (eval/specks.py), the oracle's object recall and
the L1 error in [-1, 1]. With --steps, a copy of the VAE has its decoder refined on train
scenes and is measured again (and saved to --out); the folder given is never written.
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
from sg2image.training.vae_refine import refine_vae_decoder

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def measure(vae: AutoencoderKL, n: int, batch: int = 50) -> dict:
    """Speck counts, object recall and L1 of reconstructions of test renders 0..n-1."""
    graphs = make_split("test", n)
    renders = np.stack([render(g) for g in graphs])
    x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    rec = torch.cat([
        vae.decode(vae.encode(x[s : s + batch]).latent_dist.mode()).sample.clamp(-1, 1)
        for s in range(0, n, batch)
    ])  # fmt: skip
    images = list(to_uint8(rec))
    counts = speck_counts(images, graphs, list(renders))
    counts["object_recall"] = score_images(images, graphs).object_recall
    counts["l1"] = float((rec - x).abs().mean())
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vae", type=Path, help="an AutoencoderKL folder")
    parser.add_argument("--n", type=int, default=200, help="test scenes measured")
    parser.add_argument("--steps", type=int, default=0, help="refinement steps (0: measure only)")
    parser.add_argument("--pool", type=int, default=2000, help="train scenes to refine on")
    parser.add_argument("--out", type=Path, help="where the refined VAE is saved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    result = {"vae": str(args.vae), "n": args.n, "before": measure(vae, args.n)}
    if args.steps:
        pool, t0 = Pool("train", args.pool), time.perf_counter()
        refine_vae_decoder(vae, pool, args.steps)
        result["refine"] = {"steps": args.steps, "pool": args.pool, "threads": args.threads,
                            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        result["after"] = measure(vae, args.n)
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

"""How much depth order survives the Shapes VAE? Variants trained on the depth world's scenes,
each scored by the oracle on its reconstructions of depth test graphs.

A model that draws through a VAE cannot show more of the depth order than the VAE's own
reconstructions of the true renders keep: their occlusion accuracy is the ceiling of every
row of the depth table. At 16 x 16 latents (factor 4) the overlap of a depth pair is one or
two latent pixels wide, which has to hold which colour is on top.

    python benchmarks/depth_vae.py NAME [--steps 2000] [--refine-steps 0] [--n 300] [--threads 2]
    python benchmarks/depth_vae.py base --vae runs/depth/shapes-base/parts/vae   # a trained one
    # -> benchmarks/results/depth_vae/NAME.json (NAME-refineN.json with --refine-steps N)

NAME: ``factor4`` (the base's VAE: 4 latent channels at 16 x 16), ``latent8`` (8 channels at
16 x 16), ``factor2`` (4 channels at 32 x 32: a UNet on it costs about 4x). The base's own
settings otherwise (base_model.VaePart), on its 10,000-scene pool of the depth world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from sg2image.data.shapes import make_split, render
from sg2image.eval.oracle import score_images
from sg2image.models.shapes_base import VaeSize
from sg2image.training.base_model import ShapesBaseConfig, train_vae
from sg2image.training.loop import MetricsLog
from sg2image.training.shapes_pool import Pool

OUT = Path(__file__).parent / "results" / "depth_vae"
VARIANTS = {
    "factor4": VaeSize(),
    "latent8": VaeSize(latent_channels=8),
    "factor2": VaeSize(channels=(16, 32)),
}


@torch.no_grad()
def reconstruction_scores(vae, n: int) -> dict:
    """The oracle on the VAE's reconstructions (posterior mean) of depth test graphs 0..n-1."""
    graphs = make_split("test", n=n, world="depth")
    images = np.stack([np.asarray(render(g)) for g in graphs])
    out = []
    for i in range(0, n, 50):
        x = torch.from_numpy(images[i : i + 50]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        out += list(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    report = score_images(out, graphs).to_json()
    keys = ("object_recall", "relation_accuracy", "occlusion_accuracy", "occlusion_judged",
            "placement", "per_predicate")  # fmt: skip
    return {k: report[k] for k in keys}


def score_saved(name: str, folder: Path, n: int) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder).eval()
    result = {"name": name, "vae_folder": str(folder), "reconstructions":
              reconstruction_scores(vae, n), "command":
              f"python benchmarks/depth_vae.py {name} --vae {folder} --n {n}"}  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(name, {k: v for k, v in result["reconstructions"].items() if k != "per_predicate"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help=f"one of {sorted(VARIANTS)}, or a name for --vae")
    ap.add_argument("--vae", type=Path, help="score this trained VAE folder instead")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--refine-steps", type=int, default=0)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.vae:
        score_saved(args.name, args.vae, args.n)
        return
    if args.name not in VARIANTS:
        ap.error(f"{args.name!r}: expected one of {sorted(VARIANTS)} (or --vae FOLDER)")
    cfg = ShapesBaseConfig(world="depth")
    cfg.vae = dataclasses.replace(cfg.vae, steps=args.steps, refine_steps=args.refine_steps,
                                  size=VARIANTS[args.name])  # fmt: skip
    pool = Pool("train", cfg.train_size, world="depth")
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    vae = train_vae(cfg, pool, MetricsLog(OUT / "unused.jsonl", False, None), "cpu")
    seconds = time.perf_counter() - start
    result = {
        "name": args.name, "vae": dataclasses.asdict(cfg.vae), "train_seconds": round(seconds, 1),
        "threads": args.threads, "latent_shape": list(vae.encode(torch.zeros(1, 3, 64, 64))
                                                      .latent_dist.mean.shape[1:]),
        "reconstructions": reconstruction_scores(vae.eval(), args.n),
        "command": f"python benchmarks/depth_vae.py {args.name} --steps {args.steps} "
                   f"--refine-steps {args.refine_steps} --n {args.n}",
    }  # fmt: skip
    stem = args.name + (f"-refine{args.refine_steps}" if args.refine_steps else "")
    (OUT / f"{stem}.json").write_text(json.dumps(result, indent=1))
    r = result["reconstructions"]
    print(f"{args.name}: recall {r['object_recall']:.3f}, relations {r['relation_accuracy']:.3f},"
          f" occlusion {r['occlusion_accuracy']:.3f} ({r['occlusion_judged']})")


if __name__ == "__main__":
    main()

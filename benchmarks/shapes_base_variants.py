"""Variants of the Shapes base, each scored by the base's own check (oracle on images the
text-to-image UNet samples from captions of 200 val scenes that name every object); writes
benchmarks/results/base_variants/NAME.json (config, report, command).

    python benchmarks/shapes_base_variants.py NAME --out runs/base-NAME

NAME is one of VARIANTS below. The CLIP part does not change between variants and is
deterministic: link a finished run's ``clip`` and ``parts/text_encoder`` folders into
``--out`` to skip it (train_shapes_base skips finished parts); the numbers are the same.
The same holds for ``parts/vae`` in variants that keep the VAE's settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from sg2image.models.shapes_base import UnetSize, VaeSize
from sg2image.training.base_model import ShapesBaseConfig, train_shapes_base

ROOT = Path(__file__).resolve().parents[1]


def _latent_blur(cfg: ShapesBaseConfig) -> None:
    # the decoder learns to turn blurred latents into sharp shapes
    cfg.vae.latent_blur = 1.0


def _factor_two(cfg: ShapesBaseConfig) -> None:
    # 32 x 32 latents (shapes 5-11 latent px wide); the UNet gets a 4th level so that its
    # attention levels stay at 8 x 8 and 4 x 4; half the steps for about the same time
    cfg.vae.size = VaeSize(channels=(16, 32))
    cfg.unet.size = UnetSize(channels=(32, 64, 64, 128), attention=(False, False, True, True))
    cfg.unet.steps = 1500


def _factor_eight(cfg: ShapesBaseConfig) -> None:
    # 8 x 8 x 16 latents (Stable Diffusion 3's factor and channels): a quarter of the
    # positions, so the UNet's sample is cheaper; its two levels (8 x 8, 4 x 4) both attend
    cfg.vae.size = VaeSize(channels=(16, 32, 64, 64), latent_channels=16)
    cfg.unet.size = UnetSize(channels=(64, 128), attention=(True, True))


def _unet_9k(cfg: ShapesBaseConfig) -> None:
    # three times the UNet steps (the same cosine schedule, stretched): what more compute buys
    cfg.unet.steps = 9000


VARIANTS = {
    "default": lambda cfg: None,  # the shipped base's settings
    "unet-9k": _unet_9k,
    "latent-blur": _latent_blur,
    "factor-2-vae": _factor_two,
    "factor-8-vae-16ch": _factor_eight,
}


def unet_train_gflops(base_dir: Path) -> float:
    """GFLOP of one training sample through the base's UNet (forward and backward, torch's
    flop counter), the cost that the latent size sets."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DConditionModel.from_pretrained(base_dir / "unet")
    c = unet.config
    x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size)
    context = torch.zeros(1, 32, c.cross_attention_dim)
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500]), encoder_hidden_states=context).sample.sum().backward()
    return counter.get_total_flops() / 1e9


def _plain(cfg: ShapesBaseConfig) -> dict:
    """A config as its run folder's config.json holds it (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _differences(saved, wanted, default, path="") -> list[str]:
    """Where a run folder's config.json disagrees with the variant's config. A key the
    folder lacks is a field added since: the folder ran it at its default value."""
    if isinstance(wanted, dict):
        saved = saved if isinstance(saved, dict) else {}
        return [
            d
            for k in wanted
            for d in _differences(saved.get(k, default[k]), wanted[k], default[k], f"{path}.{k}")
        ]
    return [] if saved == wanted else [f"{path[1:]}: folder has {saved!r}, variant {wanted!r}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(VARIANTS))
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    cfg = ShapesBaseConfig()
    VARIANTS[args.name](cfg)
    saved = args.out / "config.json"
    if saved.is_file():
        default = _plain(ShapesBaseConfig())
        diff = _differences(json.loads(saved.read_text()), _plain(cfg), default)
        if diff:
            raise SystemExit(f"{args.out} holds another variant: " + "; ".join(diff))
    train_shapes_base(args.out, cfg)
    report = json.loads((args.out / "report.json").read_text())
    result = {
        "variant": args.name,
        "config": dataclasses.asdict(cfg),
        "report": report,
        "torch_threads": torch.get_num_threads(),
        "unet_train_gflop_per_sample": unet_train_gflops(args.out / "base"),
        "command": "python benchmarks/shapes_base_variants.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    folder = args.results / "base_variants"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    unet = report["unet"]
    print(f"{args.name}: object recall {unet['object_recall']:.3f}, relation accuracy "
          f"{unet['relation_accuracy']:.3f}, {unet['s_per_image']:.3f} s/img")  # fmt: skip


if __name__ == "__main__":
    main()

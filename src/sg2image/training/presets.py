"""Named end-to-end recipes: the whole chain that makes the embedded model.

1. the Shapes base (what the paper downloads, made here): CLIP, VAE, text-to-image UNet
   (:mod:`sg2image.training.base_model`);
2. the method on it (:mod:`sg2image.training.loop`):

   * ``shapes`` (the shipped default, a layout model): the layout stage (graph -> boxes),
     GCA pretraining of the graph encoder against the Shapes-CLIP image embeddings, then
     joint fine-tuning of the UNet, whose widened ``conv_in`` reads the layout map, with the
     graph encoder, conditioner and layout encoder;
   * ``shapes-paper``: the paper's layout-free model, the same stages without the layout.

Every part is resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from sg2image.training.config import TrainConfig, load_config

PRESETS = ("shapes", "shapes-paper")

# The method's settings on the Shapes base. The paper fine-tunes SD with lr 5e-6 for one
# epoch of COCO; the Shapes UNet is tiny and was trained from scratch minutes ago, so it
# takes a larger step size for the same relative change.
SHAPES_METHOD = [
    "dataset=shapes",
    "resolution=64",
    "train_size=10000",
    "val_size=256",
    "max_objects=5",
    "checkpoint_every=250",
    "cache_encodings=true",
    "keep_checkpoints=2",
    'encoder={"embed_dim": 128, "hidden_dim": 128, "triple_hidden_dim": 256,'
    ' "num_layers": 3, "global_dim": 128}',
    'conditioner={"fusion": "concat", "tokens": "global+local", "max_triples": 10}',
    "gca.max_steps=300",
    "gca.batch_size=64",
    "finetune.max_steps=2500",
    "finetune.batch_size=32",
    "finetune.lr=5e-4",
    "finetune.graph_lr=1e-3",
    "finetune.lr_scheduler=cosine",
    "finetune.lr_warmup_steps=100",
]


# Shapes boxes are squares with sides 10-22 px, 2 px apart and 2 px inside the 64 px canvas
# (shapes.md); the refinement holds sampled boxes to that, with margins of half a pixel or so
# (a box that just meets a rule is misjudged by a pixel of drawing).
SHAPES_REFINE = {
    "steps": 200,
    "margin": 2 / 64,
    "size_ratio": 1.3,
    "min_gap": 2.5 / 64,
    "canvas_margin": 2 / 64,
    "side_range": [10 / 64, 22 / 64],
    "square": True,
}
SHAPES_LAYOUT = [
    'stages=["layout", "gca", "finetune"]',
    'layout_encoder={"channels": 12}',
    "layout_generator="
    + json.dumps({"kind": "flow", "box_dims": 3, "sample_steps": 50, "refine": SHAPES_REFINE}),
    "layout.train_size=100000",
    "layout.batch_size=256",
    "layout.max_steps=1500",
    "layout.lr=1e-3",
]
METHODS = {"shapes": SHAPES_METHOD + SHAPES_LAYOUT, "shapes-paper": SHAPES_METHOD}


def shapes_method_config(
    base_dir: Path, clip_dir: Path, out: Path, overrides=(), preset: str = "shapes"
) -> TrainConfig:
    return load_config(
        None,
        [
            f"base_model={base_dir}",
            f"clip_model={clip_dir}",
            f"output_dir={out}",
            *METHODS[preset],
            *overrides,
        ],
    )


def run_preset(name: str, out_dir: str | Path, overrides=(), base_budget=None) -> Path:
    """Run a preset into ``out_dir``; returns the trained pipeline folder. ``overrides``
    apply to the method's TrainConfig (e.g. ablations: conditioner.fusion=interleave)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown; choose one of {', '.join(PRESETS)}")
    from sg2image.training import train
    from sg2image.training.base_model import train_shapes_base

    out = Path(out_dir)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    start = time.perf_counter()
    base_dir, clip_dir = train_shapes_base(out / "shapes-base", base_budget)
    timings.setdefault("base_s", round(time.perf_counter() - start, 1))
    method_out = out / "method"
    cfg = shapes_method_config(base_dir, clip_dir, method_out, overrides, name)
    if (method_out / "checkpoints").is_dir():
        cfg.resume = "latest"
    start = time.perf_counter()
    pipeline = train(cfg)
    timings["method_s"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    timings_file.write_text(json.dumps(timings, indent=1))
    return pipeline


def ship(pipeline_dir: str | Path, assets_dir: str | Path) -> Path:
    """Copy a trained pipeline into the package's assets (the default model of `generate`),
    replacing the previous one atomically. Weights only in safetensors, stored as float16
    (half the size; diffusers loads them back as float32; images change by ~1e-3)."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(pipeline_dir), Path(assets_dir)
    bad = [p for p in src.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".ckpt")]
    if bad:
        raise ValueError(f"{bad[0]}: not safetensors; only safetensors and JSON are shipped")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for weights in tmp.rglob("*.safetensors"):
        state = load_file(weights)
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        save_file(half, weights, metadata={"format": "pt"})
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst

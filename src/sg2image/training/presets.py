"""Named end-to-end recipes: the whole chain that makes the embedded model.

1. the Shapes base (what the paper downloads, made here): CLIP, VAE, text-to-image UNet
   (:mod:`sg2image.training.base_model`);
2. the method on it (:mod:`sg2image.training.loop`):

   * ``shapes`` (the shipped default, a layout model): the layout stage (graph -> boxes),
     GCA pretraining of the graph encoder against the Shapes-CLIP image embeddings, then
     joint fine-tuning of the UNet, whose widened ``conv_in`` reads the layout map, with the
     graph encoder, conditioner and layout encoder;
   * ``shapes-paper``: the paper's layout-free model, the same stages without the layout;
   * ``shapes-gpu``: the chain of ``shapes`` sized for one GPU: 200,000 scenes, large
     batches, bf16 autocast, TF32, fused AdamW, GPU-resident data; about 26 min of training
     on one H200 (benchmarks/results/gpu-h200-2026-12-04).
   * ``shapes-depth``: ``shapes`` on the depth world (``world=depth``: "in front of" /
     "behind", overlapping pairs drawn back to front; its own base, whose captions say
     them): the layout map also painted back to front from the graph's depth ranks
     (``layout_encoder.depth_order``) and one graph token per object
     (``conditioner.object_tokens``) besides the paper's global and triple tokens;
   * ``shapes-depth-paper``: the paper's layout-free model on the depth world (its graph
     tokens only, no object tokens);
   * ``shapes-gpu-depth``: ``shapes-depth`` sized as ``shapes-gpu``;
   * ``shapes-gpu-depth-f2``: ``shapes-gpu-depth`` on a factor-2 VAE (32 x 32 x 4 latents,
     a UNet about 4x the cost): the factor-4 VAE's own reconstructions of the depth test
     renders score occlusion 0.932, under the 0.97 the depth model aims at; a factor-2 VAE's
     score 0.974 (benchmarks/depth_vae.py, benchmarks/results/depth_vae).

The depth table's four rows (which part of the model carries depth order), on one base and
the same budgets; each run folder trains the same base (same settings, same seed), so a copy of
the first run's ``shapes-base`` folder lets the others skip it::

    sg2image train --preset shapes-depth -o runs/depth
    for row in no-graph no-order paper; do
        mkdir -p runs/depth-$row && cp -r runs/depth/shapes-base runs/depth-$row/
    done
    # no graph tokens: the UNet reads label tokens and the depth-ordered map only
    sg2image train --preset shapes-depth -o runs/depth-no-graph conditioner.use_graph=false
    # a map without depth order: only the graph conditioning tells front from back
    sg2image train --preset shapes-depth -o runs/depth-no-order layout_encoder.depth_order=false
    # the paper's layout-free model
    sg2image train --preset shapes-depth-paper -o runs/depth-paper

(``--preset shapes-gpu-depth`` with the same overrides on a GPU.)

Every part is resumable: run the same command again after an interruption. ``smoke=True``
runs a preset's chain for a few steps of each part at the preset's own batch sizes and
projects the full run's time from the measured times of the steps after each part's
warm-up (``projection.json``);
``budget_scale`` multiplies every part's step count.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from sg2image.models.shapes_base import VaeSize
from sg2image.training.base_model import ClipPart, ShapesBaseConfig, UnetPart, VaePart
from sg2image.training.config import ConfigError, TrainConfig, load_config, set_field
from sg2image.training.timing import seconds_per_step

PRESETS = ("shapes", "shapes-paper", "shapes-gpu", "shapes-distill", "shapes-depth",
           "shapes-depth-paper", "shapes-gpu-depth", "shapes-gpu-depth-f2")  # fmt: skip

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
    "finetune.max_steps=5000",  # 2,500 left object recall at 0.964, 5,000 reach 0.982
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
    "steps": 50,  # at most; 3-12 settle the test graphs
    "margin": 2 / 64,
    "size_ratio": 1.3,
    "min_gap": 2.5 / 64,
    "canvas_margin": 2 / 64,
    "side_range": [10 / 64, 22 / 64],
    "square": True,
    # Each Polyak step goes a quarter past the point that zeroes the violation (refine_boxes'
    # default, 2, goes as far again: fewer steps, but boxes pushed further than their rules
    # ask, which image features see). On the 1,000 val graphs, the default sampler: FID 0.150
    # against 0.263, recall / relations 0.992 / 0.985 against 0.991 / 0.982; the renders of
    # the boxes alone 0.090 against 0.184 (benchmarks/layout_fid.py).
    "relax": 1.25,
}


def layout_generator(refine: dict) -> str:
    """The Shapes layout generator's override, with ``refine`` as its refinement."""
    return "layout_generator=" + json.dumps(
        {
            "kind": "flow",
            "box_dims": 3,
            "sample_steps": 4,  # midpoint, 8 velocities: the layouts of 50 Euler steps
            "sampler": "midpoint",
            "refine": refine,
        }
    )


SHAPES_LAYOUT = [
    'stages=["layout", "gca", "finetune", "distill"]',
    'layout_encoder={"channels": 12}',
    layout_generator(SHAPES_REFINE),
    "layout.train_size=100000",
    "layout.batch_size=256",
    "layout.max_steps=1500",
    "layout.lr=1e-3",
]
# The distill stage (training/distill.py) on the fine-tuned layout model: LCM with the full
# sampler's guidance 2 folded in. 500 steps of 32: 0.65 s/step on 2 threads of a lightly
# loaded machine (about 5.5 min; 3.9 s/step at 1 thread with the machine's load average at
# 6-8, 2026-12-04: the teacher's two branches, the target and the student's forward and
# backward make a step about 2.3x a fine-tuning step). Measured on the 1,000 test graphs
# (2026-12-04), this student does not reach the full sampler (0.988 / 0.976): 2 steps
# 0.982 / 0.968, 4 steps 0.981 / 0.960, 8 steps 0.981 / 0.964; so it is kept in the
# pipeline as `--sampler fast` but is not the default (student_default=false).
# A finisher student: it learns the guided teacher's last steps only (t <= 59), where the
# few-step samplers lose small circles; sampled at [999, 59]. Alone it is not the default
# (2 evaluations; 0.6 points under the full sampler's relations on val); it drafts for the
# finish sampler, the default (4 evaluations: the full sampler's fidelity, a lower FID).
# 500 steps (4 min) keep the chain near 45 min; the shipped student had 1,500 (about as good:
# 0.9886 / 0.9761 on val against 0.9883 / 0.9745; docs/benchmarks.md, "Few-step sampling").
SHAPES_DISTILL = [
    "distill.max_steps=500",
    "distill.batch_size=32",
    "distill.lr=1e-4",
    "distill.max_timestep=59",
    "distill.sample_steps=2",
    "distill.student_default=false",
]

# shapes-gpu. On one H200 these budgets take about 26 min of training (measured 2026-12-04,
# benchmarks/results/gpu-h200-2026-12-04); the smoke projection overstates that 3.7x, since
# its few steps per part are mostly warm-up.
# Learning rates grow with the batch by less than its square root (Adam), warm-ups with it.
SHAPES_GPU_METHOD = [
    "train_size=200000",  # rendered on the fly by the loader's workers
    "mixed_precision=bf16",
    "num_workers=12",
    "cache_encodings=false",  # 200,000 scenes, few repeats: the GPU re-encodes faster
    "checkpoint_every=500",
    "keep_checkpoints=1",
    "export_every_checkpoint=true",  # a run cut short still leaves a usable pipeline
    "log_every=50",
    "layout.train_size=400000",
    "layout.batch_size=1024",
    "layout.max_steps=2000",
    "layout.lr=2e-3",
    "gca.max_steps=600",
    "gca.batch_size=256",
    "finetune.max_steps=3000",
    "finetune.batch_size=256",
    "finetune.lr=1e-3",
    "finetune.graph_lr=2e-3",
    "finetune.lr_warmup_steps=200",
    "distill.max_steps=2000",
    "distill.batch_size=256",
    "distill.lr=3e-4",
]
# The depth world. SHAPES_REFINE's rules serve it: refine_boxes pulls depth pairs to
# overlap and exempts them from the gap (the "overlap" rule of models/layout.py). Its steps
# keep refine_boxes' default overshoot (relax 2): with 1.25 the shipped depth model scores
# 0.962 / 0.902 / occlusion 0.779 against 0.964 / 0.911 / 0.800 (300 depth test graphs).
DEPTH_WORLD = ["world=depth"]
DEPTH_LAYOUT = [
    layout_generator({**SHAPES_REFINE, "relax": 2.0}),
    # the map's second half painted back to front: 2 x 12 extra conv_in channels
    'layout_encoder={"channels": 12, "depth_order": true}',
    "conditioner.object_tokens=true",  # one token per object: who it is in front of
]
METHODS = {
    "shapes": SHAPES_METHOD + SHAPES_LAYOUT + SHAPES_DISTILL,
    "shapes-paper": SHAPES_METHOD,
    "shapes-gpu": SHAPES_METHOD + SHAPES_LAYOUT + SHAPES_DISTILL + SHAPES_GPU_METHOD,
    # The distill stage alone, on a saved layout model (distill.teacher=FOLDER; default: the
    # shipped model): how a model trained before the stage existed gets its student.
    "shapes-distill": [
        *SHAPES_METHOD, *SHAPES_LAYOUT, *SHAPES_DISTILL, 'stages=["distill"]',
    ],
    "shapes-depth": SHAPES_METHOD + SHAPES_LAYOUT + SHAPES_DISTILL + DEPTH_WORLD + DEPTH_LAYOUT,
    "shapes-depth-paper": SHAPES_METHOD + DEPTH_WORLD,
    "shapes-gpu-depth": SHAPES_METHOD + SHAPES_LAYOUT + SHAPES_DISTILL + SHAPES_GPU_METHOD
    + DEPTH_WORLD + DEPTH_LAYOUT,
}
METHODS["shapes-gpu-depth-f2"] = METHODS["shapes-gpu-depth"]  # only its base differs


def gpu_base() -> ShapesBaseConfig:
    """The base of shapes-gpu: 20-50x the samples of the CPU base, from 200,000 scenes."""
    return ShapesBaseConfig(
        train_size=200_000,
        mixed_precision="bf16",
        render_workers=14,
        captions_per_scene=8,
        log_every=50,
        clip=ClipPart(steps=2000, batch_size=512, warmup=200),
        vae=VaePart(steps=3000, batch_size=64, warmup=100, refine_steps=1000),
        unet=UnetPart(steps=8000, batch_size=256, lr=4e-3, warmup=500, checkpoint_every=1000,
                      ema_decay=0.9995),  # fmt: skip
    )


# Cross-attention at every UNet level of the depth bases, the 16 x 16 one included (the
# plain base skips it for speed): the overlap of a depth pair is one or two latent pixels
# wide, finer than the 8 x 8 level, and only the 16 x 16 level lets such a pixel read the
# graph tokens itself. Stable Diffusion 1.x also attends at its highest latent resolution.
DEPTH_ATTENTION = (True, True, True)


def depth_base() -> ShapesBaseConfig:
    """The base of the depth presets: the CPU base's budgets on the depth world's scenes."""
    cfg = ShapesBaseConfig(world="depth")
    cfg.unet.size.attention = DEPTH_ATTENTION
    return cfg


def gpu_depth_base() -> ShapesBaseConfig:
    cfg = dataclasses.replace(gpu_base(), world="depth")
    cfg.unet.size.attention = DEPTH_ATTENTION
    return cfg


# The VAE of shapes-gpu-depth-f2: two levels, one halving (64 x 64 -> 32 x 32 x 4). Trained
# on the depth pool with the decoder refinement, its reconstructions of the 300 depth test
# renders score recall 1.000, relations 0.993, occlusion 0.974 (the factor-4 VAE's: 0.991,
# 0.974, 0.932); docs/benchmarks.md, "The depth world".
FACTOR2_VAE = VaeSize(channels=(16, 32))


def gpu_depth_f2_base() -> ShapesBaseConfig:
    cfg = gpu_depth_base()
    cfg.vae.size = FACTOR2_VAE
    return cfg


BASES = {"shapes": ShapesBaseConfig, "shapes-paper": ShapesBaseConfig, "shapes-gpu": gpu_base,
         "shapes-depth": depth_base, "shapes-depth-paper": depth_base,
         "shapes-gpu-depth": gpu_depth_base,
         "shapes-gpu-depth-f2": gpu_depth_f2_base}  # fmt: skip

# A smoke run: every part for a few steps at the preset's batch sizes, small pools. The
# first training.timing.WARMUP_STEPS (5) of each part are not timed: each times 10 or more.
SMOKE_STEPS = {"clip": 20, "vae": 20, "refine": 15, "unet": 40, "layout": 20, "gca": 15,
               "finetune": 30, "distill": 15}  # fmt: skip
SMOKE_METHOD = ["train_size=20000", "val_size=64", "layout.train_size=40000"]


def base_budget(name: str, overrides=(), scale: float = 1.0, smoke: bool = False):
    """A preset's ShapesBaseConfig, with its ``base.``-prefixed overrides applied."""
    cfg = BASES[name]()
    if smoke:
        cfg.train_size, cfg.eval_size, cfg.eval_steps = min(cfg.train_size, 20000), 16, 5
        parts = {"clip": cfg.clip, "vae": cfg.vae, "unet": cfg.unet}
        for part, obj in parts.items():
            obj.steps = SMOKE_STEPS[part]
            obj.warmup = min(obj.warmup, obj.steps // 2)
        cfg.vae.refine_steps = SMOKE_STEPS["refine"]
    elif scale != 1.0:
        for obj in (cfg.clip, cfg.vae, cfg.unet):
            obj.steps = max(1, round(obj.steps * scale))
        cfg.vae.refine_steps = round(cfg.vae.refine_steps * scale)
    for item in overrides:
        key, _, value = item.partition("=")
        set_field(cfg, key.removeprefix("base."), value)
    return cfg


def method_overrides(name: str, scale: float = 1.0, smoke: bool = False, given=()) -> list[str]:
    """Overrides that shrink or scale the method's stage budgets of preset ``name`` (with the
    overrides ``given``, which may be needed to make its config whole: a teacher)."""
    cfg = load_config(None, [*METHODS[name], *given])
    extra = []
    for stage in cfg.stages:
        steps = getattr(cfg, stage).max_steps
        if smoke:
            extra.append(f"{stage}.max_steps={SMOKE_STEPS[stage]}")
        elif scale != 1.0:
            extra.append(f"{stage}.max_steps={max(1, round(steps * scale))}")
    if smoke:
        extra += SMOKE_METHOD + [f"checkpoint_every={min(SMOKE_STEPS.values())}"]
        extra += [f"{s}.lr_warmup_steps=5" for s in ("layout", "finetune")]
    return extra


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


def run_preset(name: str, out_dir: str | Path, overrides=(), base_budget_cfg=None,
               budget_scale: float = 1.0, smoke: bool = False) -> Path:  # fmt: skip
    """Run a preset into ``out_dir``; returns the trained pipeline folder. ``overrides``
    apply to the method's TrainConfig (e.g. ablations: conditioner.fusion=interleave), or,
    prefixed ``base.``, to the base's ShapesBaseConfig (base.unet.steps=5000);
    ``base_budget_cfg`` replaces the preset's base config (tests)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown; choose one of {', '.join(PRESETS)}")
    if budget_scale <= 0:
        raise ConfigError(f"budget scale: expected a number > 0, got {budget_scale}")
    from sg2image.training import train
    from sg2image.training.base_model import train_shapes_base

    if name == "shapes-distill":
        return distill_saved(Path(out_dir), overrides, budget_scale, smoke)
    base_items = [o for o in overrides if o.startswith("base.")]
    method_items = [o for o in overrides if not o.startswith("base.")]
    base_cfg = base_budget_cfg or base_budget(name, base_items, budget_scale, smoke)
    out = Path(out_dir)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    start = time.perf_counter()
    base_dir, clip_dir = train_shapes_base(out / "shapes-base", base_cfg)
    timings.setdefault("base_s", round(time.perf_counter() - start, 1))
    method_out = out / "method"
    extra = method_overrides(name, budget_scale, smoke)
    # A rerun with the same settings continues from the method's checkpoints; train()
    # refuses other settings over them, naming the keys (resume=latest forces it).
    cfg = shapes_method_config(base_dir, clip_dir, method_out, extra + method_items, name)
    start = time.perf_counter()
    pipeline = train(cfg)
    timings["method_s"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    timings_file.write_text(json.dumps(timings, indent=1))
    if smoke:
        full_base = base_budget(name, base_items, budget_scale)
        full_items = method_overrides(name, budget_scale) + method_items
        full = shapes_method_config(base_dir, clip_dir, method_out, full_items, name)
        project(out, full_base, full)
    return pipeline


def distill_saved(out: Path, overrides=(), scale: float = 1.0, smoke: bool = False) -> Path:
    """``shapes-distill``: the shapes preset's distill stage on a saved pipeline (the
    ``distill.teacher`` override; default: the shipped model), into ``out``; the result is
    that pipeline with its student."""
    from sg2image import SHAPES_MODEL
    from sg2image.training import train

    if any(o.startswith("base.") for o in overrides):
        raise ConfigError("shapes-distill trains no base; base.* overrides do not apply")
    teacher = [f"distill.teacher={SHAPES_MODEL}"]
    extra = method_overrides("shapes-distill", scale, smoke, teacher)
    cfg = load_config(None, [f"output_dir={out}", *METHODS["shapes-distill"], *teacher,
                             *extra, *overrides])  # fmt: skip
    return train(cfg)


def project(out: Path, base: ShapesBaseConfig, method: TrainConfig) -> dict:
    """The full run's training time projected from a smoke run's measured step times in
    ``out``: each part's steady seconds per step (the steps after its warm-up, checkpoints and
    evaluations left out: training.timing) times the full step count; start-up, pool
    rendering, checkpoints and quality checks not counted. Written to ``out/projection.json``."""
    report = json.loads((out / "shapes-base" / "report.json").read_text())
    timing = json.loads((out / "method" / "timings.json").read_text())
    full_steps = {"clip": base.clip.steps, "vae": base.vae.steps + base.vae.refine_steps,
                  "unet": base.unet.steps}  # fmt: skip
    full_steps.update({s: getattr(method, s).max_steps for s in method.stages})
    seconds = {}
    for part, steps in full_steps.items():
        measured = report.get(part) or timing.get(part)
        if measured is None:
            continue
        per_step = seconds_per_step(measured)
        refine_per_step = seconds_per_step(measured, "refine_") if part == "vae" else None
        if refine_per_step is not None:  # the VAE and its decoder refinement, each at its rate
            total = per_step * base.vae.steps + refine_per_step * base.vae.refine_steps
        else:
            total = per_step * steps
        seconds[part] = round(total, 1)
    result = {"seconds": seconds, "total_s": round(sum(seconds.values()), 1),
              "full_steps": full_steps, "base": dataclasses.asdict(base)}  # fmt: skip
    (out / "projection.json").write_text(json.dumps(result, indent=1))
    return result


def ship(pipeline_dir: str | Path, assets_dir: str | Path) -> Path:
    """Copy a trained pipeline into the package's assets (the default model of `generate`),
    replacing the previous one atomically. Weights only in safetensors, stored as float16
    (half the size; diffusers loads them back as float32; images change by ~1e-3); configs
    without ``_name_or_path``, the training machine's path of each part."""
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
    for config in tmp.rglob("*.json"):  # where it was loaded from: a path on this machine
        data = json.loads(config.read_text())
        if isinstance(data, dict) and data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst

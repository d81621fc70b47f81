"""Training configuration: one dataclass tree, loaded from JSON/TOML plus ``key=value`` overrides.

Every field is checked (type and range) with a message naming the field, and an unknown
key gets "did you mean ...". The resolved config is saved as config.json in the output
folder and in every checkpoint, so any run can be reproduced from its own output.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("layout", "gca", "finetune", "distill")  # in the order they run
# Each stage's random stream (data order, per-example draws); not its place in STAGES, so
# adding a stage does not change the draws, and so the results, of the others.
STAGE_STREAMS = {"gca": 0, "finetune": 1, "layout": 2, "distill": 3}
MIXED_PRECISION = ("no", "bf16", "fp16")


class ConfigError(ValueError):
    """A bad config file, key or value, said in one line that names the key."""


@dataclass
class GCAConfig:
    """Stage 1, GAN-based CLIP alignment of the graph encoder (paper values by default)."""

    epochs: float = 25.0  # passes over the training set (paper: 25 on COCO)
    max_steps: int | None = None  # optimizer steps; when set, it replaces `epochs`
    batch_size: int = 16  # global batch over all processes (paper: 16)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4  # Adam lr, for encoder+projection and for the discriminator (paper)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (paper, the usual GAN choice)
    mmd_weight: float = 1.0  # weight of the MMD term in the generator loss (if use_mmd)
    clip_weight: float = 1.0  # weight of the CLIP distance in the generator loss (if use_clip_loss)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class FinetuneConfig:
    """Stage 2, joint fine-tuning of UNet, graph encoder, conditioner and projection."""

    epochs: float = 1.0  # passes over the training set (authors' README: 1)
    max_steps: int | None = None  # optimizer steps; when set, it replaces `epochs`
    batch_size: int = 2  # global batch over all processes (authors: 2)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    lr: float = 5e-6  # AdamW lr of the UNet (paper: 5e-6 constant, no warm-up)
    graph_lr: float | None = None  # lr of encoder/conditioner/projection; None: same as lr
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (PyTorch defaults)
    weight_decay: float = 1e-2  # AdamW weight decay (paper)
    max_grad_norm: float = 1.0  # gradient-norm clip (paper)
    lr_scheduler: str = "constant"  # a diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0  # warm-up steps for the schedulers that have one
    lambda_recon: float = 0.7  # L = lambda * L_recon + (1 - lambda) * L_align (paper: 0.7)
    beta_clip: float = 2 / 3  # L_align = beta * L_clip + (1 - beta) * L_mmd (paper: 2/3)
    cond_dropout: float = 0.1  # probability of training an example unconditionally (for CFG)
    overlap_weight: float = 0.0  # extra weight of the reconstruction loss where the boxes of
    # a depth pair ("in front of" / "behind") overlap: the few pixels that show who is in
    # front get 1 + this; 0: the paper's plain mean
    box_weight: float = 1.0  # weight of the box head's L1 loss (conditioner.object_boxes
    # models only; sg2im weighs its box loss 10 against its pixel losses)
    localise_weight: float = 0.0  # weight of the attention-localisation loss (training/
    # localisation.py): each object token's cross-attention pulled into its true box; needs
    # conditioner.object_tokens and concat fusion; 0: off
    # A schedule for it: localise_weight for the first localise_steps optimizer steps, then
    # localise_weight_after (the graph-only depth row: 1 while the tokens find their boxes,
    # then 0.1 so the loss stops competing with the image). 0: localise_weight throughout.
    localise_steps: int = 0
    localise_weight_after: float = 0.0  # the weight after localise_steps

    def __post_init__(self) -> None:
        check_values(self)

    @property
    def localises(self) -> bool:
        """Whether the localisation loss weighs anything at some step."""
        return bool(self.localise_weight or (self.localise_steps and self.localise_weight_after))

    def localise_weight_at(self, step: int) -> float:
        """The localisation loss's weight at optimizer step ``step`` (0-based)."""
        if self.localise_steps and step >= self.localise_steps:
            return self.localise_weight_after
        return self.localise_weight


@dataclass
class LayoutConfig:
    """The layout stage: the layout generator learns boxes from graphs (no images)."""

    epochs: float = 1.0  # passes over the layout training graphs
    max_steps: int | None = None  # optimizer steps; when set, it replaces `epochs`
    batch_size: int = 256  # graphs per step (global)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # AdamW lr
    weight_decay: float = 0.0  # AdamW weight decay
    lr_scheduler: str = "cosine"  # a diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 100  # warm-up steps
    max_grad_norm: float = 1.0  # gradient-norm clip
    train_size: int | None = None  # graphs to learn from (shapes: scenes 0..n-1, graphs are
    # cheap to make, so more than the image stages use); None: the training set
    pretrained: str | None = None  # a saved layout_generator folder that the stage loads
    # instead of training (ablation rows that differ after it share one layout model)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class DistillConfig:
    """The distill stage: a few-step student of the fine-tuned UNet by latent consistency
    distillation (LCM, Luo et al. 2023) with the teacher's classifier-free guidance folded in
    (training/distill.py); the pipeline samples it with diffusers' LCMScheduler, no CFG."""

    epochs: float = 1.0  # passes over the training set
    max_steps: int | None = None  # optimizer steps; when set, it replaces `epochs`
    batch_size: int = 16  # global batch over all processes
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # AdamW lr of the student UNet (the only trained part)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (PyTorch defaults)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient-norm clip
    lr_scheduler: str = "constant"  # a diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0  # warm-up steps for the schedulers that have one
    guidance_scale: float = 2.0  # the teacher's CFG scale that the student learns (the
    # pipeline's convention: uncond + g * (cond - uncond); the full sampler's default)
    solver_steps: int = 50  # the teacher's DDIM solver runs over this many of the training
    # timesteps (skip k = num_train_timesteps / solver_steps; LCM: 50); also the
    # LCMScheduler's original_inference_steps, so training and sampling share the grid
    ema_decay: float = 0.95  # of the target network, an EMA of the student (LCM: 0.95)
    loss: str = "huber"  # "huber" (LCM's pseudo-Huber) or "l2"
    huber_c: float = 0.001  # the pseudo-Huber loss's c
    timestep_scaling: float = 10.0  # LCM boundary conditions c_skip, c_out of t * this
    # (LCMScheduler's timestep_scaling: the same value samples the student)
    sample_steps: int = 4  # the student's default steps, saved in the pipeline (fast_steps)
    student_default: bool = True  # the student becomes the pipeline's default sampler; false:
    # it is sampled only when asked for (generate --sampler fast), e.g. while it falls short
    teacher: str | None = None  # a saved pipeline folder to distill (with stages=["distill"]
    # alone); None: the model this run fine-tunes
    max_timestep: int | None = None  # the student trains only at grid timesteps <= this
    # (None: all of them); e.g. 59, a finisher that learns the guided teacher's last steps
    boxes: str = "given"  # a layout model's map while distilling: "given" (the training
    # scenes' true boxes) or "predicted" (the layout stage's, as the student meets them)

    def __post_init__(self) -> None:
        check_values(self)


@dataclass
class TrainConfig:
    """Everything a training run needs; `output_dir/config.json` is this, resolved."""

    base_model: str = "CompVis/stable-diffusion-v1-4"  # SD-1.x folder or hub id (frozen VAE/text)
    clip_model: str = "openai/clip-vit-base-patch32"  # CLIP vision folder or hub id (targets)
    output_dir: str = "runs/train"  # checkpoints/, metrics.jsonl, config.json, pipeline/
    dataset: str = "shapes"  # a name in DATASETS
    # The Shapes world (dataset "shapes" only): "plain" (six predicates) or "depth" (also
    # "in front of" / "behind", overlapping pairs drawn back to front; docs/shapes.md).
    world: str = "plain"
    data_root: str | None = None  # folder of the dataset's files (not needed for shapes)
    resolution: int = 256  # training image side in pixels (paper: 256)
    position_grid: bool = False  # a layout-free model's UNet also reads each pixel's x / y
    # (two fixed input channels), so that position-aware graph tokens can be matched
    finish_timestep: int | None = 39  # a layout model's "finish" sampler: a draft, then a
    # guided step at this timestep (39: best of 19/39/59 on the Shapes val split,
    # benchmarks/student_schedules.py); None: the model has no such sampler
    finish_draft: str = "student"  # who drafts for it: "student" (a finisher student's steps
    # 999, 59 when the distill stage made one: 4 evaluations, FID below the full sampler's on
    # the val split) or "teacher" (the fine-tuned UNet's unguided step: 3 evaluations)
    train_size: int = 10000  # training examples (shapes: scenes 0..train_size-1)
    val_size: int = 64  # held-out examples for the alignment measure logged after GCA
    # run in STAGES order; add "layout" (and set layout_encoder) for a layout model
    stages: list[str] = field(default_factory=lambda: ["gca", "finetune"])
    gca: GCAConfig = field(default_factory=GCAConfig)  # stage 1 settings
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # stage 2 settings
    layout: LayoutConfig = field(default_factory=LayoutConfig)  # layout-stage settings
    distill: DistillConfig = field(default_factory=DistillConfig)  # distill-stage settings
    use_gca: bool = True  # the adversarial term in stage 1 (off: MMD/CLIP terms only)
    use_mmd: bool = True  # MMD term (stage 1 generator, stage 2 L_align)
    use_clip_loss: bool = True  # CLIP distance term (stage 1 generator, stage 2 L_align)
    clip_loss_kind: str = "mse"  # "mse" (authors) or "cosine"
    mmd_bandwidths: list[float] = field(default_factory=lambda: [10.0, 15.0, 20.0, 50.0])
    mixed_precision: str = "no"  # "no", "bf16" or "fp16" (fp16 needs a GPU)
    seed: int = 0  # model init, data order, noise, timesteps and dropout all derive from it
    checkpoint_every: int = 500  # optimizer steps between checkpoints (and one at each stage end)
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    resume: str | None = None  # "latest", a checkpoint folder under output_dir, or None
    export_every_checkpoint: bool = False  # also write output_dir/pipeline at each checkpoint
    log_every: int = 1  # optimizer steps between lines of metrics.jsonl
    encoder: dict[str, Any] = field(default_factory=dict)  # SceneGraphEncoder kwargs
    conditioner: dict[str, Any] = field(default_factory=dict)  # GraphConditioner kwargs
    # A layout model (models/layout.py): LayoutEncoder kwargs ({} for its defaults) widen
    # the UNet's conv_in for the layout map, trained with the data's true boxes; None: the
    # paper's layout-free model.
    layout_encoder: dict[str, Any] | None = None
    layout_generator: dict[str, Any] = field(default_factory=dict)  # LayoutGenerator kwargs
    max_objects: int | None = None  # largest graph the exported pipeline accepts (None: any)
    num_workers: int = 0  # DataLoader worker processes per training process
    # Keep each example's frozen encodings (VAE latent distribution, CLIP image embedding)
    # after first use: exact, since the encoders are frozen and no dataset here augments;
    # costs ~8 KB per example at 64 px, 32 KB at 256 px.
    cache_encodings: bool = False

    def __post_init__(self) -> None:
        check_values(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))


def _shapes(cfg: TrainConfig, split: str | None):
    """split None: the vocabulary; else that split (held out = the first scenes of "val")."""
    from sg2image.data.shapes import shapes_vocab
    from sg2image.data.shapes_dataset import ShapesDataset

    if split is None:
        return shapes_vocab(cfg.world)
    size = cfg.train_size if split == "train" else cfg.val_size
    return ShapesDataset(split, size=size, image_size=cfg.resolution, world=cfg.world)


def _coco(cfg: TrainConfig, split: str | None):
    from sg2image.data.coco import make_coco_dataset

    return make_coco_dataset(cfg, split)


def _vg(cfg: TrainConfig, split: str | None):
    from sg2image.data.vg import make_vg_dataset

    return make_vg_dataset(cfg, split)


# name -> factory(cfg, split): a Dataset of ShapesDataset-style items ({"pixel_values",
# "graph", "index"}) for "train"/"val", its Vocab for None.
DATASETS: dict[str, Callable[[TrainConfig, str | None], Any]] = {
    "shapes": _shapes,
    "coco": _coco,
    "vg": _vg,
}


def make_dataset(cfg: TrainConfig, split: str):
    """The ``split`` ("train" or "val") of the configured dataset."""
    return DATASETS[cfg.dataset](cfg, split)


def dataset_vocab(cfg: TrainConfig):
    return DATASETS[cfg.dataset](cfg, None)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (the few annotation shapes used above), or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # "X | None": args[0] is X
        return None if value is None else _coerce(value, args[0], key)
    if tp in _SCALARS:
        # bool is an int in Python, but "seed=true" is a mistake; an int is a fine float.
        ok = (int, float) if tp is float else (tp,)
        if isinstance(value, ok) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        raise ConfigError(f"{key}: expected {_SCALARS[tp]}, got {value!r}")
    if origin is dict and isinstance(value, dict):
        return dict(value)
    if origin is list and isinstance(value, str):  # stages=gca,finetune on a command line
        value = [v.strip() for v in value.split(",") if v.strip()]
    # tuple[X, ...] takes any length, like a list; tuple[X, Y] exactly two
    variadic = origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)
    if isinstance(value, list | tuple) and (variadic or len(value) == len(args)):
        items = [
            _coerce(v, args[0] if variadic else args[i], f"{key}[{i}]")
            for i, v in enumerate(value)
        ]
        return items if origin is list else tuple(items)
    fixed = origin is tuple and not variadic
    what = "a table" if origin is dict else f"a list of {len(args)}" if fixed else "a list"
    raise ConfigError(f"{key}: expected {what}, got {value!r}")


def _build(cls: type, data: Any, where: str = "") -> Any:
    """A dataclass from a nested dict; unknown keys rejected here, values checked by the
    dataclass's own __post_init__ (``where``: the key path, for messages)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            # A nested field named like this ("lr" -> "finetune.lr"), else a close spelling.
            nested = [n for n in names if key in getattr(hints[n], "__annotations__", {})]
            nested = [f"{n}.{key}" for n in nested]
            hint = f" (did you mean {', '.join(map(repr, nested))}?)" if nested else ""
            raise ConfigError(f"{where}{key}: unknown key{hint or _suggest(key, names)}")
        nested_cls = hints[key] if dataclasses.is_dataclass(hints[key]) else None
        kwargs[key] = _build(nested_cls, value, f"{where}{key}.") if nested_cls else value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


# Range rules by field name, wherever the field is (stage tables or top level).
_POSITIVE = {"epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "lr", "graph_lr"}
_POSITIVE |= {"max_grad_norm", "resolution", "train_size", "val_size", "checkpoint_every"}
_POSITIVE |= {"keep_checkpoints", "log_every", "solver_steps", "huber_c", "timestep_scaling"}
_POSITIVE |= {"finish_timestep"}
_POSITIVE |= {"sample_steps", "guidance_scale"}
_NON_NEGATIVE = {"weight_decay", "lr_warmup_steps", "num_workers", "overlap_weight", "box_weight",
                 "localise_weight", "localise_steps", "localise_weight_after"}
_UNIT = {"lambda_recon", "beta_clip", "cond_dropout", "ema_decay"}
_RANGE_NOTE = "counts, sizes, lr > 0; weights, probabilities in [0, 1]; betas in [0, 1)"


def check_values(cfg: Any) -> None:
    """Type and range checks of one config part (each dataclass's __post_init__ calls it,
    so a config built in Python is checked like one loaded from a file)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, tp, value = f.name, hints[f.name], getattr(cfg, f.name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"{key}: expected a {tp.__name__}")
            continue
        value = _coerce(value, tp, key)
        setattr(cfg, key, value)
        bad = value is not None and (
            (key in _POSITIVE and value <= 0)
            or (key in _NON_NEGATIVE and value < 0)
            or (key in _UNIT and not 0 <= value <= 1)
            or (key == "betas" and not all(0 <= b < 1 for b in value))
            or (key == "mmd_bandwidths" and not (value and min(value) > 0))
        )
        if bad:
            raise ConfigError(f"{key}: {value!r} is out of range ({_RANGE_NOTE})")
    if isinstance(cfg, TrainConfig):
        _check_choices(cfg)


def _check_choices(cfg: TrainConfig) -> None:
    from diffusers.optimization import SchedulerType

    from sg2image.data.shapes import WORLDS
    from sg2image.models.conditioning import GraphConditioner
    from sg2image.models.graph_encoder import SceneGraphEncoder
    from sg2image.models.layout import LayoutEncoder, LayoutGenerator

    choices = {
        "dataset": (cfg.dataset, sorted(DATASETS)),
        "world": (cfg.world, WORLDS),
        "mixed_precision": (cfg.mixed_precision, MIXED_PRECISION),
        "clip_loss_kind": (cfg.clip_loss_kind, ("mse", "cosine")),
        "finetune.lr_scheduler": (cfg.finetune.lr_scheduler, [t.value for t in SchedulerType]),
        "layout.lr_scheduler": (cfg.layout.lr_scheduler, [t.value for t in SchedulerType]),
        "distill.lr_scheduler": (cfg.distill.lr_scheduler, [t.value for t in SchedulerType]),
        "distill.loss": (cfg.distill.loss, ("huber", "l2")),
        "distill.boxes": (cfg.distill.boxes, ("given", "predicted")),
        "finish_draft": (cfg.finish_draft, ("student", "teacher")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
    for stage in cfg.stages:
        if stage not in STAGES:
            hint = _suggest(stage, STAGES)
            raise ConfigError(f"stages: {stage!r} is not one of {list(STAGES)}{hint}")
    if not cfg.stages or len(set(cfg.stages)) != len(cfg.stages):
        raise ConfigError(f"stages: expected some of {list(STAGES)}, each once, got {cfg.stages}")
    if cfg.world != "plain" and cfg.dataset != "shapes":
        where = f"world: {cfg.world!r} is a Shapes world"
        raise ConfigError(f"{where}; dataset {cfg.dataset!r} has none (world=plain)")
    cfg.stages = [s for s in STAGES if s in cfg.stages]  # the only order that makes sense
    if "layout" in cfg.stages and cfg.layout_encoder is None:
        raise ConfigError(
            "stages: 'layout' trains the boxes of a layout model; set layout_encoder "
            "(e.g. layout_encoder={}) too"
        )
    if "distill" in cfg.stages:
        _check_distill(cfg)
    cond, ft = cfg.conditioner or {}, cfg.finetune
    if ft.localise_weight_after and not ft.localise_steps:
        raise ConfigError(
            "finetune.localise_weight_after: the weight after finetune.localise_steps; set "
            "localise_steps (the steps at localise_weight) too"
        )
    concat_tokens = cond.get("object_tokens") and cond.get("fusion", "concat") == "concat"
    if ft.localises and not concat_tokens:
        raise ConfigError(
            "finetune.localise_weight: the localisation loss pulls object tokens into their "
            "boxes; set conditioner.object_tokens=true (with concat fusion) too"
        )
    if "gca" in cfg.stages and not (cfg.use_gca or cfg.use_mmd or cfg.use_clip_loss):
        raise ConfigError("use_gca: the gca stage needs use_gca, use_mmd or use_clip_loss on")
    # The kwargs go to the module constructors; a typo would otherwise fail deep inside.
    for key, cls, ours in (
        ("encoder", SceneGraphEncoder, {"num_objects", "num_predicates"}),
        ("conditioner", GraphConditioner, {"global_dim", "triple_dim", "text_dim"}),
        ("layout_encoder", LayoutEncoder, {"num_objects"}),
        ("layout_generator", LayoutGenerator, {"num_objects", "num_predicates"}),
    ):
        allowed = [
            p for p in inspect.signature(cls.__init__).parameters if p not in ours | {"self"}
        ]
        for k in getattr(cfg, key) or {}:
            if k not in allowed:
                hint = _suggest(k, allowed)
                raise ConfigError(f"{key}.{k}: unknown {cls.__name__} argument{hint}")


def _check_distill(cfg: TrainConfig) -> None:
    """The distill stage's teacher is this run's fine-tuned model or a saved pipeline."""
    teacher, others = cfg.distill.teacher, [s for s in cfg.stages if s != "distill"]
    if teacher is None and "finetune" not in cfg.stages:
        raise ConfigError(
            "stages: 'distill' needs a teacher: run it after 'finetune', or set "
            "distill.teacher to a saved pipeline folder"
        )
    if teacher is not None and others:
        raise ConfigError(
            f"distill.teacher: a saved pipeline is distilled alone; set stages=[\"distill\"] "
            f"(got {cfg.stages})"
        )


def saved_settings_differ(saved_file: Path, settings: Any, ignore=frozenset()) -> list[str] | None:
    """Dotted keys (``finetune.lr``) whose values differ between the dataclass ``settings`` and
    those saved as JSON in ``saved_file`` (keys in ``ignore`` aside); None when there is no
    such file. How a rerun tells its own run's settings from another's. A key the saved file
    lacks counts as its default: a setting added since (``world``) keeps older runs going."""
    if not saved_file.is_file():
        return None

    def flat(d: dict, prefix: str = "") -> dict:
        items = {}
        for k, v in d.items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return items

    saved = flat(json.loads(saved_file.read_text()))
    now = flat(json.loads(json.dumps(dataclasses.asdict(settings))))
    defaults = flat(json.loads(json.dumps(dataclasses.asdict(type(settings)()))))
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    keys = sorted((set(saved) | set(now)) - set(ignore))
    return [k for k in keys if saved.get(k) != now.get(k)]


def shown_keys(keys: list[str], prefix: str = "") -> str:
    """The first four keys for a message, then "..." if there are more."""
    return ", ".join(prefix + k for k in keys[:4]) + (", ..." if len(keys) > 4 else "")


def set_field(obj: Any, dotted: str, raw: str) -> None:
    """``obj.a.b = value`` on a dataclass tree, from a command-line string (JSON when it
    parses, like load_config's overrides), type-checked; ConfigError naming the key."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    *parents, leaf = dotted.strip().split(".")
    node, where = obj, ""
    for name in [*parents, leaf]:
        names = [f.name for f in dataclasses.fields(node)]
        if name not in names:
            raise ConfigError(f"{where}{name}: unknown key{_suggest(name, names)}")
        if name == leaf:
            break
        node, where = getattr(node, name), f"{where}{name}."
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"{where.rstrip('.')}: not a table, it has no sub-keys")
    tp = typing.get_type_hints(type(node))[leaf]
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{where}{leaf}: a table; set its keys ({where}{leaf}.KEY=VALUE)")
    setattr(node, leaf, _coerce(value, tp, where + leaf))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- the JSON/TOML file at ``path`` <- ``key=value`` overrides (dotted keys for
    nested fields, e.g. ``finetune.lr=1e-5``, ``encoder.embed_dim=256``; values parsed as
    JSON when possible). Raises ConfigError naming the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise ConfigError(f"{path}: a config must be a .json or .toml file")
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot parse ({e})") from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        try:  # JSON when it parses (numbers, true, null, lists), else the raw string
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value.strip()
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is not a table, it has no sub-keys")
        node[leaf] = parsed
    return _build(TrainConfig, data)

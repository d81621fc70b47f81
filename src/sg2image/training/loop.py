"""The training loop shared by the stages: accelerate, data order, logging, checkpoints, export.

Determinism, whatever the number of processes:
* data order: batch b of epoch e is a fixed slice of a permutation seeded by (seed, stage,
  e); ``batch_size`` is the global batch and process r takes the r-th contiguous part of it.
  We shard it ourselves instead of through ``accelerator.prepare(dataloader)`` because
  accelerate's DataLoaderShard re-sets the sampler's epoch from its own counter, which
  restarts at 0 on resume; here the position is a pure function of the micro-step;
* per-example randomness: one generator per (seed, stage, micro-step, dataset index);
* ``split_batches=True`` tells accelerate the batch is global, so the LR scheduler steps
  once per optimizer step for any number of processes.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sg2image.models.alignment import GCADiscriminator, GraphToClipProjection
from sg2image.models.base import BaseComponents, load_base, load_clip_vision
from sg2image.models.layout import LayoutGenerator
from sg2image.pipeline import SceneGraphPipeline, pipeline_from_base
from sg2image.training import checkpoint as ckpt
from sg2image.training.config import (
    STAGE_STREAMS,
    STAGES,
    ConfigError,
    TrainConfig,
    dataset_vocab,
    make_dataset,
    saved_settings_differ,
    shown_keys,
)
from sg2image.training.distill import DistillStage
from sg2image.training.stages import (
    CLIP_MEAN,
    CLIP_STD,
    EncodingCache,
    FinetuneStage,
    GCAStage,
    LayoutStage,
    collate,
)
from sg2image.training.timing import StepTimer, training_rate

STAGE_CLASSES = {"layout": LayoutStage, "gca": GCAStage, "finetune": FinetuneStage,
                 "distill": DistillStage}  # fmt: skip
METRICS = "metrics.jsonl"
TIMINGS = "timings.json"  # per stage: steps, seconds, samples/s of the last run of it
LAYOUT_DIR = "layout_generator"  # the finished layout stage's model, for resumes after it


@dataclass
class Parts:
    """The models of a run, shared by both stages (stage 2 starts from stage 1's encoder)."""

    pipe: SceneGraphPipeline  # unet, vae, text encoder, tokenizer, graph encoder, conditioner
    noise_scheduler: Any  # the base's training scheduler (DDPM), for add_noise
    clip_vision: Any  # frozen CLIPVisionModelWithProjection, or None if no loss needs it
    clip_norm: tuple  # (mean, std) of CLIP's preprocessing
    projection: GraphToClipProjection
    discriminator: GCADiscriminator
    vocab: Any
    cache: EncodingCache  # frozen encoders' outputs per example (cfg.cache_encodings)


def _clip_norm(source: str) -> tuple:
    cfg_file = Path(source) / "preprocessor_config.json"
    if cfg_file.is_file():
        data = json.loads(cfg_file.read_text())
        return tuple(data.get("image_mean", CLIP_MEAN)), tuple(data.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


def build_parts(cfg: TrainConfig) -> Parts:
    """Load the frozen parts and build the new ones; seeded, so every process (and every
    restart) builds the same initial weights."""
    set_seed(cfg.seed)
    vocab = dataset_vocab(cfg)
    if cfg.distill.teacher is not None:  # a saved pipeline, distilled alone
        pipe = teacher_pipeline(cfg.distill.teacher, vocab)
        base = BaseComponents(
            unet=pipe.unet, scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
            text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, vae=pipe.vae,
        )  # fmt: skip
    else:
        base = load_base(cfg.base_model)
        pipe = pipeline_from_base(
            base, vocab, cfg.encoder, cfg.conditioner, cfg.max_objects, cfg.layout_encoder,
            resolution=cfg.resolution, position_grid=cfg.position_grid,
        )
        pipe.register_to_config(finish_timestep=cfg.finish_timestep)
    pipe.register_to_config(finish_draft=cfg.finish_draft)  # a distilled teacher's too
    if "layout" in cfg.stages:
        gen = LayoutGenerator(vocab.num_objects, vocab.num_predicates, **cfg.layout_generator)
        pipe.register_modules(layout_generator=gen)
    aligned = "finetune" in cfg.stages and (cfg.use_mmd or cfg.use_clip_loss)
    clip = load_clip_vision(cfg.clip_model) if "gca" in cfg.stages or aligned else None
    global_dim = pipe.graph_encoder.config.global_dim
    clip_dim = clip.config.projection_dim if clip is not None else global_dim
    projection = GraphToClipProjection(global_dim, clip_dim)
    discriminator = GCADiscriminator(graph_dim=clip_dim, clip_dim=clip_dim)
    for frozen in (base.vae, base.text_encoder, clip):
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    norm = _clip_norm(cfg.clip_model)
    cache = EncodingCache(cfg.cache_encodings)
    return Parts(pipe, base.scheduler, clip, norm, projection, discriminator, vocab, cache)


def teacher_pipeline(folder: str, vocab) -> SceneGraphPipeline:
    """The saved pipeline that ``distill.teacher`` names, checked against the dataset's
    vocabulary (a model distils on the data it was trained on)."""
    from sg2image.pipeline import load_pipeline

    pipe = load_pipeline(folder)
    if list(pipe.vocab.object_names) != list(vocab.object_names) or list(
        pipe.vocab.predicate_names
    ) != list(vocab.predicate_names):
        raise ConfigError(f"distill.teacher: {folder} has another vocabulary than the dataset")
    return pipe


class GraphItems(torch.utils.data.Dataset):
    """A dataset's graphs without their images (what the layout stage learns from)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        from sg2image.sampling import graph_at

        return {"graph": graph_at(self.dataset, i), "index": i, "pixel_values": torch.zeros(0)}


def stage_dataset(cfg: TrainConfig, name: str, train_set):
    """The training data of stage ``name``: the layout stage reads graphs only, and as many as
    ``layout.train_size`` asks for (Shapes makes any number)."""
    if name != "layout":
        return train_set
    size = cfg.layout.train_size
    if size is None or size == len(train_set):
        return GraphItems(train_set)
    if cfg.dataset != "shapes" and size > len(train_set):
        raise ConfigError(f"layout.train_size: {size} > {len(train_set)} training examples")
    if cfg.dataset == "shapes":
        from sg2image.data.shapes_dataset import ShapesDataset

        return GraphItems(ShapesDataset("train", size=size, world=cfg.world))
    return GraphItems(torch.utils.data.Subset(train_set, range(size)))


def stage_steps(stage_cfg, dataset_len: int) -> tuple[int, int]:
    """(optimizer steps of the stage, global batches per epoch; the last partial batch is
    dropped so every step sees a full, evenly shardable batch)."""
    per_epoch = dataset_len // stage_cfg.batch_size
    if per_epoch == 0:
        raise ConfigError(f"batch_size {stage_cfg.batch_size} > {dataset_len} training examples")
    if stage_cfg.max_steps is not None:
        return stage_cfg.max_steps, per_epoch
    micro = math.ceil(stage_cfg.epochs * per_epoch)
    return max(1, micro // stage_cfg.gradient_accumulation_steps), per_epoch


def epoch_batches(n: int, batch_size: int, seed: int, stage: str, epoch: int) -> np.ndarray:
    """(batches_per_epoch, batch_size) dataset indices of one epoch, the same on every process."""
    rng = np.random.default_rng([seed, STAGE_STREAMS[stage], epoch])
    per_epoch = n // batch_size
    return rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size)


def example_generators(seed: int, stage: str, micro_step: int, indices) -> list[torch.Generator]:
    """One generator per example, seeded by (seed, stage, micro-step, dataset index)."""
    gens = []
    for index in indices:
        words = np.random.SeedSequence([seed, STAGE_STREAMS[stage], micro_step, int(index)])
        gens.append(torch.Generator().manual_seed(int(words.generate_state(1, np.uint64)[0])))
    return gens


def shard_loader(dataset, cfg, stage_cfg, stage: str, epoch: int, skip: int, accelerator):
    """This process's part of each global batch of ``epoch``, from batch ``skip`` on."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if stage_cfg.batch_size % world:
        raise ConfigError(
            f"{stage}.batch_size {stage_cfg.batch_size} is not divisible by {world} processes"
        )
    per = stage_cfg.batch_size // world
    batches = epoch_batches(len(dataset), stage_cfg.batch_size, cfg.seed, stage, epoch)
    mine = batches[skip:, rank * per : (rank + 1) * per].tolist()
    return DataLoader(dataset, batch_sampler=mine, collate_fn=collate, num_workers=cfg.num_workers)


class MetricsLog:
    """metrics.jsonl, written by the main process; on resume, lines after the checkpoint
    (written by the run that died) are dropped so the log reads like one straight run."""

    def __init__(self, path: Path, active: bool, keep_until: int | None):
        self.path, self.active = path, active
        if active and path.exists():
            kept = []
            for line in path.read_text().splitlines() if keep_until is not None else []:
                try:
                    if json.loads(line)["global_step"] <= keep_until:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line torn by the kill
            ckpt.write_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, row: dict) -> None:
        if self.active:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


def setup_device(device: torch.device) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA (fp32 parts stay fast beside bf16 ones)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def make_accelerator(cfg: TrainConfig, stage_cfg) -> Accelerator:
    cpu = not torch.cuda.is_available()
    setup_device(torch.device("cpu" if cpu else "cuda"))
    if cpu and cfg.mixed_precision == "fp16":
        raise ConfigError("mixed_precision: fp16 needs a GPU; use bf16 on the CPU")
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, cfg.mixed_precision):
        # accelerate keeps one precision per process; a second run in the same process (the
        # Python API, a preset after another) may ask for another. The process group
        # (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=stage_cfg.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def run_stage(stage, cfg, accelerator, dataset, start_step, global_step, per_epoch, log) -> int:
    """Train ``stage`` from ``start_step`` to its end; returns the new global step. Ctrl-C
    (or SIGTERM, which the CLI turns into it) raises Interrupted, saying where it stopped."""
    total = stage.total_steps
    bar = tqdm(total=total, initial=start_step, desc=stage.name,
               disable=not accelerator.is_main_process)  # fmt: skip
    progress = {"step": start_step, "saved_at": start_step or None}  # a resume starts at one
    timer = StepTimer(total - start_step, accelerator.device)
    t0 = time.perf_counter()
    try:
        global_step = _run_steps(
            stage, cfg, accelerator, dataset, global_step, per_epoch, log, bar, progress, timer
        )
    except KeyboardInterrupt:
        raise Interrupted(stage.name, progress["step"], total, progress["saved_at"]) from None
    finally:
        bar.close()
    if progress["step"] > start_step and accelerator.is_main_process:
        steps = progress["step"] - start_step
        rate = training_rate(steps, stage.stage_cfg.batch_size, time.perf_counter() - t0, timer)
        record_timing(Path(cfg.output_dir), stage.name, rate)
    return global_step


def _run_steps(stage, cfg, accelerator, dataset, global_step, per_epoch, log, bar, progress, timer):
    """``run_stage``'s steps from ``progress["step"]`` on, keeping ``progress`` (step, step of
    the last checkpoint) current and ``timer`` told of each step and of what is not one;
    returns the global step."""
    sc, total = stage.stage_cfg, stage.total_steps
    step = progress["step"]
    micro = step * sc.gradient_accumulation_steps
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=accelerator.device))
    counts: dict[str, int] = defaultdict(int)
    while step < total:
        epoch, skip = divmod(micro, per_epoch)
        for batch in shard_loader(dataset, cfg, sc, stage.name, epoch, skip, accelerator):
            gens = example_generators(cfg.seed, stage.name, micro, batch["index"])
            batch["pixel_values"] = batch["pixel_values"].to(accelerator.device)
            stage.step = step  # a stage whose losses follow a schedule reads it
            logs = stage.train_step(batch, gens)
            micro += 1
            for k, v in logs.items():
                sums[k] += v
                counts[k] += 1
            if not accelerator.sync_gradients:
                continue
            step, global_step = step + 1, global_step + 1
            progress["step"] = step
            timer.step()
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                # Mean over micro-steps and processes: the numbers a 1-process run would log.
                means = {
                    k: accelerator.reduce(sums[k] / counts[k], "mean").item() for k in sorted(sums)
                }
                row = {"stage": stage.name, "step": step, "global_step": global_step}
                row.update(epoch=round(micro / per_epoch, 4), lr=stage.lr(), **means)
                log.write(row)
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in means.items() if k in ("loss", "g_loss")}
                )
                sums.clear(), counts.clear()
            if step == total and accelerator.is_main_process:
                # Before the stage's last checkpoint, so a resume from it does not redo it.
                with timer.paused():
                    for row in stage.evaluate():
                        log.write(
                            {"stage": stage.name, "eval": True, "global_step": global_step, **row}
                        )
            if global_step % cfg.checkpoint_every == 0 or step == total:
                state = {"stage": stage.name, "stage_step": step, "stage_total_steps": total}
                state.update(global_step=global_step, num_processes=accelerator.num_processes)
                with timer.paused():
                    ckpt.save_checkpoint(accelerator, cfg, state)
                    progress["saved_at"] = step
                    if cfg.export_every_checkpoint and accelerator.is_main_process:
                        export(stage.parts, Path(cfg.output_dir))
            if step == total:
                break
    return global_step


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM: where, and where the last checkpoint is."""

    def __init__(self, stage: str, step: int, total: int, checkpoint_step: int | None):
        self.stage, self.step, self.total = stage, step, total
        self.checkpoint_step = checkpoint_step
        saved = (
            f"its last checkpoint is at step {checkpoint_step}"
            if checkpoint_step is not None
            else "no checkpoint of this stage yet (it restarts from its beginning)"
        )
        super().__init__(f"stopped in stage {stage} at step {step} of {total}; {saved}")


def record_timing(out: Path, stage: str, rate: dict) -> None:
    """This run's speed of a stage (``training_rate``'s record) in out/timings.json, beside
    metrics.jsonl."""
    path = out / TIMINGS
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[stage] = rate
    ckpt.write_atomic(path, json.dumps(data, indent=1))


def load_layout_generator(parts: Parts, folder: Path, what: str = "resume") -> None:
    if not (folder / "config.json").is_file():
        hint = "the layout stage must run again" if what == "resume" else "no layout model there"
        raise ConfigError(f"{what}: {folder} is missing; {hint}")
    gen = LayoutGenerator.from_pretrained(folder).to(parts.pipe.device)
    vocab = parts.vocab
    theirs, ours = (gen.config.num_objects, gen.config.num_predicates), (
        vocab.num_objects, vocab.num_predicates)  # fmt: skip
    if theirs != ours:
        raise ConfigError(f"{what}: {folder} was trained for {theirs[0]} objects and "
                          f"{theirs[1]} predicates; this run has {ours[0]} and {ours[1]}")
    parts.pipe.register_modules(layout_generator=gen)


def export(parts: Parts, out: Path) -> Path:
    """Write out/pipeline (SceneGraphPipeline.from_pretrained loads it) and out/projection
    (the graph -> CLIP map, which the pipeline does not use), each swapped in whole."""
    ckpt.publish_dir(parts.pipe.save_pretrained, out / "pipeline")
    ckpt.publish_dir(parts.projection.save_pretrained, out / "projection")
    return out / "pipeline"


def train(config: TrainConfig) -> Path:
    """Run the configured stages; returns output_dir/pipeline (a SceneGraphPipeline folder)."""
    cfg, out = config, Path(config.output_dir)
    first = getattr(cfg, cfg.stages[0])
    accelerator = make_accelerator(cfg, first)
    resume = ckpt.resolve_resume(cfg)
    if resume is None and ckpt.complete_checkpoints(ckpt.checkpoint_root(cfg)):
        # The same command again continues its run (as a preset does); other settings over
        # a run's checkpoints are refused, so that no run is silently mixed with another.
        differ = saved_settings_differ(out / "config.json", cfg, {"resume"})
        if differ is None or differ:  # no saved settings to compare with: refused too
            raise ConfigError(
                f"output_dir: {out} holds checkpoints of a run with other settings "
                f"({shown_keys(differ or ['config.json'])}); "
                "set resume=latest to continue it with these settings, or choose another "
                "output_dir"
            )
        cfg.resume = "latest"
        resume = ckpt.resolve_resume(cfg)
    state = ckpt.read_state(resume) if resume else None
    if state is not None and state["stage"] not in cfg.stages:
        raise ConfigError(f"resume: {resume} is from stage {state['stage']!r}, not in stages")
    parts = build_parts(cfg)
    parts.pipe.to(accelerator.device)
    for module in (parts.clip_vision, parts.projection, parts.discriminator):
        if module is not None:
            module.to(accelerator.device)
    dataset = make_dataset(cfg, "train")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        if resume:
            accelerator.print(
                f"resuming from {resume} (stage {state['stage']}, step {state['stage_step']})"
            )
    log = MetricsLog(out / METRICS, accelerator.is_main_process, state and state["global_step"])
    global_step = state["global_step"] if state else 0
    for name in cfg.stages:
        if state is not None and STAGES.index(name) < STAGES.index(state["stage"]):
            if name == "layout":  # its own folder: the later stages' checkpoints lack it
                load_layout_generator(parts, out / LAYOUT_DIR)
            continue  # finished before the checkpoint; its result is in the loaded weights
        stage_cfg = getattr(cfg, name)
        if name == "layout" and stage_cfg.pretrained:  # a shared layout model, not trained
            load_layout_generator(parts, Path(stage_cfg.pretrained), "layout.pretrained")
            if accelerator.is_main_process:
                ckpt.publish_dir(parts.pipe.layout_generator.save_pretrained, out / LAYOUT_DIR)
            continue
        # Stage 2 has trained parameters that sit out some steps (the null graph token when
        # no example is dropped); stage 1 has none, and DDP warns when told otherwise.
        unused = name == "finetune"
        accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=unused)
        accelerator.gradient_accumulation_steps = stage_cfg.gradient_accumulation_steps
        data = stage_dataset(cfg, name, dataset)
        total, per_epoch = stage_steps(stage_cfg, len(data))
        stage = STAGE_CLASSES[name](cfg, parts, accelerator, total)
        start = 0
        if state is not None and state["stage"] == name:
            start = ckpt.load_checkpoint(accelerator, resume)["stage_step"]
            state = None
        global_step = run_stage(stage, cfg, accelerator, data, start, global_step, per_epoch, log)
        if name == "layout" and accelerator.is_main_process:
            ckpt.publish_dir(parts.pipe.layout_generator.save_pretrained, out / LAYOUT_DIR)
        accelerator.wait_for_everyone()
        accelerator.free_memory()  # forget this stage's prepared objects (save_state lists)
    if accelerator.is_main_process:
        export(parts, out)
    accelerator.wait_for_everyone()
    return out / "pipeline"

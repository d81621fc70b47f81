"""The shapes-gpu preset's code paths, run on the CPU with tiny budgets (issue 12): parallel
pool rendering, pre-drawn captions, bf16 autocast, loader workers, the smoke projection."""

import json

import numpy as np
import pytest
import torch
from tiny_settings import TINY_SHAPES_METHOD

from sg2image.pipeline import load_pipeline
from sg2image.training.base_model import ShapesBaseConfig, caption_ids
from sg2image.training.config import ConfigError, load_config
from sg2image.training.presets import (
    METHODS,
    base_budget,
    gpu_base,
    method_overrides,
    project,
    run_preset,
)
from sg2image.training.shapes_pool import Pool, caption_rng
from sg2image.training.timing import StepTimer, training_rate

pytestmark = pytest.mark.usefixtures("one_thread")

# the tiny chain of test_shapes_preset, with one loader worker, a checkpoint every step and
# a log line every other step: the GPU preset's own settings of those, shrunk
TINY_METHOD = [*TINY_SHAPES_METHOD, "num_workers=1", "checkpoint_every=1", "log_every=2"]


@pytest.mark.slow  # 2 spawned render workers, each importing torch and diffusers: ~15 s of CPU
def test_pool_made_by_workers_equals_one_process():
    one = Pool("train", 45, start=3, captions_per_scene=2, seed=5, chunk=20)
    two = Pool("train", 45, start=3, workers=2, captions_per_scene=2, seed=5, chunk=20)
    assert torch.equal(one.images, two.images) and torch.equal(one.caption_ids, two.caption_ids)
    assert one.graphs == two.graphs and len(one) == 45 and one.images.shape == (45, 3, 64, 64)
    # the pre-drawn captions are the tokenised captions of each scene's own stream
    from sg2image.data.shapes import caption, generate_scene
    from sg2image.models.shapes_base import build_tokenizer

    tok = build_tokenizer()
    rng = caption_rng(5, 10)
    texts = [caption(generate_scene("train", 10), rng) for _ in range(2)]
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length).input_ids
    assert one.caption_ids[7].tolist() == ids
    # a batch picks one of them per scene
    picked = caption_ids(one, [7, 7, 0], np.random.default_rng(0), tok)
    assert picked.shape == (3, tok.model_max_length) and picked[0].tolist() in ids


def test_budgets_scale_smoke_and_base_overrides():
    full = base_budget("shapes-gpu")
    assert full.train_size >= 200_000 and full.mixed_precision == "bf16"
    half = base_budget("shapes-gpu", scale=0.5)
    assert half.unet.steps == full.unet.steps // 2 and half.unet.batch_size == full.unet.batch_size
    smoke = base_budget("shapes-gpu", smoke=True)
    assert smoke.unet.steps < 100 and smoke.unet.batch_size == gpu_base().unet.batch_size
    assert smoke.unet.warmup <= smoke.unet.steps
    tuned = base_budget("shapes-gpu", ["base.unet.lr=1e-3", "base.captions_per_scene=4"])
    assert tuned.unet.lr == 1e-3 and tuned.captions_per_scene == 4
    with pytest.raises(ConfigError, match="unet.stpes: unknown key.*steps"):
        base_budget("shapes-gpu", ["base.unet.stpes=3"])
    with pytest.raises(ConfigError, match="unet.steps: expected an integer"):
        base_budget("shapes-gpu", ["base.unet.steps=many"])
    assert "finetune.max_steps=1500" in method_overrides("shapes-gpu", scale=0.5)
    # the CPU recipe keeps its settings; the GPU one adds bf16 and loader workers on top
    assert "mixed_precision=bf16" in METHODS["shapes-gpu"]
    assert not any(o.startswith("mixed_precision") for o in METHODS["shapes"])


@pytest.mark.slow  # the whole preset chain (base and method) with its GPU settings
def test_gpu_chain_runs_on_the_cpu_with_bf16_and_projects_its_time(tmp_path):
    base = ShapesBaseConfig.tiny()
    base.mixed_precision, base.captions_per_scene, base.log_every = "bf16", 2, 2
    out = tmp_path / "run"
    pipeline = run_preset("shapes-gpu", out, TINY_METHOD, base, smoke=True)
    cfg = json.loads((out / "method" / "config.json").read_text())
    assert cfg["mixed_precision"] == "bf16" and cfg["num_workers"] == 1
    assert cfg["export_every_checkpoint"] and cfg["train_size"] == 16
    pipe = load_pipeline(pipeline)
    assert pipe.has_layout and pipe.config.resolution == 64 and pipe.default_size == (64, 64)
    res = pipe([{"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}],
               num_inference_steps=2, generator=[torch.Generator().manual_seed(0)],
               output_type="np")  # fmt: skip
    assert np.isfinite(res.images).all()
    base_log = (out / "shapes-base" / "logs" / "unet.jsonl").read_text().splitlines()
    assert [json.loads(r)["global_step"] for r in base_log] == [2, 4]  # log_every=2
    timing = json.loads((out / "method" / "timings.json").read_text())
    assert set(timing) == {"layout", "gca", "finetune", "distill"}
    assert all(t["train_steps"] == 2 and t["samples_per_s"] > 0 for t in timing.values())
    # two steps: the first is warm-up, the second is timed
    assert all(t["steady_steps"] == 1 and t["steady_seconds"] > 0 for t in timing.values())
    report = json.loads((out / "shapes-base" / "report.json").read_text())
    assert report["unet"]["steady_steps"] == 2 and report["vae"]["refine_steady_steps"] == 1
    projection = json.loads((out / "projection.json").read_text())
    assert set(projection["seconds"]) == {
        "clip", "vae", "unet", "layout", "gca", "finetune", "distill"
    }  # fmt: skip
    assert projection["total_s"] == pytest.approx(sum(projection["seconds"].values()), abs=0.5)
    assert projection["full_steps"]["finetune"] == 2  # the overrides hold for the full run too


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_step_timer_counts_steady_steps_only():
    """Warm-up steps (10 s each here) and pauses (a 100 s checkpoint) are not timed; the
    steady steps (1 s each) are."""
    clock = FakeClock()
    timer = StepTimer(total_steps=20, warmup=5, clock=clock)
    for step in range(20):
        clock.now += 10.0 if step < 5 else 1.0
        timer.step()
        if step == 12:
            with timer.paused():
                clock.now += 100.0
    assert timer.steady() == {"steady_steps": 15, "steady_seconds": 15.0}
    rate = training_rate(20, 8, clock.now, timer)
    assert rate["train_seconds"] == 165.0 and rate["steady_seconds"] == 15.0
    # a loop shorter than two warm-ups still times its second half
    short = StepTimer(total_steps=3, warmup=5, clock=clock)
    for _ in range(3):
        clock.now += 2.0
        short.step()
    assert short.steady() == {"steady_steps": 2, "steady_seconds": 4.0}


def test_projection_ignores_warm_up_steps(tmp_path):
    """A smoke part of 20 steps: 5 warm-up steps of 2 s, 15 steady ones of 0.1 s. The full
    run's 2,000 steps project at 0.1 s each (200 s), not at the whole part's 0.575 s (1,150 s,
    what the H200's 94.7 min projection did)."""
    clock = FakeClock()
    timer = StepTimer(20, clock=clock)
    for step in range(20):
        clock.now += 2.0 if step < 5 else 0.1
        timer.step()
    rate = training_rate(20, 512, clock.now, timer)
    old = {"train_steps": 20, "train_batch_size": 64, "train_seconds": 10.0}  # no steady fields
    vae = {**old, "steady_steps": 10, "steady_seconds": 1.0,
           "refine_steady_steps": 5, "refine_steady_seconds": 2.0}  # fmt: skip
    (tmp_path / "shapes-base").mkdir()
    (tmp_path / "method").mkdir()
    report = {"clip": rate, "vae": vae, "unet": old}
    (tmp_path / "shapes-base" / "report.json").write_text(json.dumps(report))
    (tmp_path / "method" / "timings.json").write_text(json.dumps({}))
    base = gpu_base()
    base.clip.steps, base.vae.steps, base.vae.refine_steps, base.unet.steps = 2000, 300, 100, 50
    method = load_config(None, METHODS["shapes-gpu"])  # its stages not in timings.json
    got = project(tmp_path, base, method)
    # vae: 300 steps at 0.1 s, its refinement's 100 at 0.4 s; unet: an older record, whole time
    assert got["seconds"] == {"clip": 200.0, "vae": 70.0, "unet": 25.0}
    assert got["total_s"] == 295.0

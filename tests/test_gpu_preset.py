"""The shapes-gpu preset's code paths, run on the CPU with tiny budgets (issue 12): parallel
pool rendering, pre-drawn captions, bf16 autocast, loader workers, the smoke projection."""

import json

import numpy as np
import pytest
import torch
from test_shapes_preset import TINY_METHOD as SHAPES_TINY

from sg2image.pipeline import load_pipeline
from sg2image.training.base_model import ShapesBaseConfig, caption_ids
from sg2image.training.config import ConfigError
from sg2image.training.presets import (
    METHODS,
    base_budget,
    gpu_base,
    method_overrides,
    run_preset,
)
from sg2image.training.shapes_pool import Pool, caption_rng

pytestmark = pytest.mark.usefixtures("one_thread")

# the tiny chain of test_shapes_preset, with one loader worker, a checkpoint every step and
# a log line every other step: the GPU preset's own settings of those, shrunk
TINY_METHOD = [*SHAPES_TINY, "num_workers=1", "checkpoint_every=1", "log_every=2"]


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
    projection = json.loads((out / "projection.json").read_text())
    assert set(projection["seconds"]) == {
        "clip", "vae", "unet", "layout", "gca", "finetune", "distill"
    }  # fmt: skip
    assert projection["total_s"] == pytest.approx(sum(projection["seconds"].values()), abs=0.5)
    assert projection["full_steps"]["finetune"] == 2  # the overrides hold for the full run too

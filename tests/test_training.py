"""Training on tiny models: both stages, resume, atomic checkpoints, config, 2 processes."""

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sg2image.data.shapes import make_split
from sg2image.pipeline import SceneGraphPipeline
from sg2image.training import ConfigError, TrainConfig, load_config, make_dataset, train
from sg2image.training import checkpoint as ckpt
from sg2image.training.loop import build_parts
from sg2image.training.stages import FinetuneStage, GCAStage, alignment_metrics

TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tiny_sd):
    return tiny_sd  # shared (tests/conftest.py): read only


def tiny_config(models, out, *overrides) -> TrainConfig:
    base, clip = models
    return load_config(
        None,
        [
            f"base_model={base}",
            f"clip_model={clip}",
            f"output_dir={out}",
            "resolution=32",
            "train_size=8",
            "val_size=8",
            f"encoder={json.dumps(TINY_ENCODER)}",
            "conditioner.max_triples=8",
            "gca.batch_size=4",
            "finetune.batch_size=4",
            *overrides,
        ],
    )


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def final_weights(out) -> dict[str, torch.Tensor]:
    latest = ckpt.find_latest(Path(out) / "checkpoints")
    return {
        name: tensor
        for f in sorted(latest.glob("model*.safetensors"))
        for name, tensor in load_file(f).items()
    }


class Crash(Exception):
    """Stands for a kill: nothing in the trainer catches it."""


def crash_on_call(patch, cls, n):
    """Make ``cls.train_step`` raise on its n-th call (before doing anything)."""
    original, calls = cls.train_step, []

    def step(self, *args):
        calls.append(1)
        if len(calls) == n:
            raise Crash
        return original(self, *args)

    patch.setattr(cls, "train_step", step)


# --------------------------------------------------------------------------------- config


def test_config_file_overrides_and_errors(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text(
        'base_model = "some/base"\nstages = ["finetune"]\nuse_mmd = false\n'
        "[finetune]\nlr = 1e-5\nmax_steps = 10\n[encoder]\nembed_dim = 64\n"
    )
    cfg = load_config(
        toml, ["finetune.lr=2e-5", "gca.betas=[0.4, 0.9]", "encoder.num_layers=2", "resume=latest"]
    )
    assert cfg.base_model == "some/base" and cfg.stages == ["finetune"] and not cfg.use_mmd
    assert cfg.finetune.lr == 2e-5 and cfg.finetune.max_steps == 10
    assert cfg.gca.betas == (0.4, 0.9) and cfg.encoder == {"embed_dim": 64, "num_layers": 2}
    assert cfg.resume == "latest" and cfg.finetune.lambda_recon == 0.7  # paper defaults kept
    assert cfg.gca.lr == 2e-4 and cfg.finetune.weight_decay == 1e-2
    cfg.save(tmp_path / "config.json")  # what every run and checkpoint stores
    assert load_config(tmp_path / "config.json") == cfg
    assert load_config(None, ["stages=finetune,gca"]).stages == ["gca", "finetune"]

    bad = {
        "finetune.lrr=1": "finetune.lrr: unknown key (did you mean 'lr'?)",
        "lr=1": "lr: unknown key (did you mean 'gca.lr', 'finetune.lr', 'layout.lr', "
        "'distill.lr'?)",
        "finetune.lr=fast": "finetune.lr: expected a number, got 'fast'",
        "finetune.lr=-1": "finetune.lr: -1.0 is out of range",
        "finetune.beta_clip=1.5": "finetune.beta_clip: 1.5 is out of range",
        "seed=true": "seed: expected an integer",
        "stages=gcaa": "stages: 'gcaa' is not one of ['layout', 'gca', 'finetune', 'distill'] "
        "(did you mean 'gca'?)",
        "mixed_precision=fp8": "mixed_precision: 'fp8' is not one of",
        "encoder.embed_dims=8": "encoder.embed_dims: unknown SceneGraphEncoder argument",
        "seed": "override 'seed': expected key=value",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError) as err:
            load_config(None, [override])
        assert str(err.value).startswith(message), (override, str(err.value))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        TrainConfig(seed="0")  # built in Python: checked the same way


# --------------------------------------------------------------------------------- stages


def test_gca_moves_graph_vectors_towards_clip(models, tmp_path):
    cfg = tiny_config(
        models, tmp_path, "stages=gca", "train_size=16", "val_size=16", "gca.batch_size=8",
        "gca.max_steps=30", "gca.lr=1e-3", "checkpoint_every=10", "keep_checkpoints=2",
    )  # fmt: skip
    before = alignment_metrics(build_parts(cfg), make_dataset(cfg, "val"))
    train(cfg)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows[:-1]] == list(range(1, 31))
    assert {"d_loss", "g_loss", "d_real", "d_fake", "mmd", "clip"} <= rows[0].keys()
    after = rows[-1]  # the held-out measure logged at the end of the stage
    assert after["eval"] and after["global_step"] == 30
    # Measured: val MMD 2.58 -> 0.25, mean L2 3.78 -> 1.27 (16 held-out scenes).
    assert after["val_mmd"] < 0.5 * before["val_mmd"], (before, after)
    assert after["val_l2"] < 0.7 * before["val_l2"], (before, after)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint-000020", "checkpoint-000030", "latest",
    ]  # fmt: skip
    files = {p.name for p in (root / "checkpoint-000030").iterdir()}
    # generator (encoder + projection) and discriminator, two Adam states, RNG, ours
    assert {"model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin"} <= files
    assert {"random_states_0.pkl", "config.json", "trainer_state.json"} <= files


def test_finetune_overfits_and_exports_a_pipeline(models, tmp_path):
    cfg = tiny_config(
        models, tmp_path, "stages=finetune", "train_size=4", "finetune.max_steps=60",
        "finetune.lr=1e-3", "checkpoint_every=30",
    )  # fmt: skip
    folder = train(cfg)
    recon = [r["recon"] for r in metrics(tmp_path)]
    assert len(recon) == 60 and all(np.isfinite(recon))
    # Measured: 0.91 -> 0.33 (4 scenes, batch 4, random timesteps make it noisy).
    assert np.mean(recon[-10:]) < 0.5 * np.mean(recon[:10]), recon
    assert {"loss", "recon", "clip", "mmd", "grad_norm", "lr"} <= metrics(tmp_path)[0].keys()

    assert folder == tmp_path / "pipeline" and (tmp_path / "projection").is_dir()
    assert load_config(tmp_path / "config.json") == cfg
    pipe = SceneGraphPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    trained = final_weights(tmp_path)
    for name, value in pipe.unet.state_dict().items():  # the export is the trained state
        assert torch.equal(value, trained[f"unet.{name}"]), name
    graphs = make_split("val", n=2)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe(graphs, num_inference_steps=2, generator=gens, output_type="np")
    assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()


def test_box_token_model_learns_its_boxes_from_the_graph(models, tmp_path):
    """conditioner.object_boxes: fine-tuning also trains the box head (sg2im's L1 box loss,
    logged as "box"), and the exported layout-free pipeline, with its position grid
    (position_grid: the UNet reads 2 more channels), samples from graphs without boxes."""
    cfg = tiny_config(
        models, tmp_path, "stages=finetune", "train_size=4", "finetune.max_steps=40",
        "finetune.lr=1e-3", "finetune.box_weight=5", "conditioner.object_tokens=true",
        "conditioner.object_boxes=true", "checkpoint_every=40", "position_grid=true",
    )  # fmt: skip
    folder = train(cfg)
    box = [r["box"] for r in metrics(tmp_path)]
    # Measured: 0.220 -> 0.160 (mean of the first and last five steps).
    assert len(box) == 40 and np.mean(box[-5:]) < 0.85 * np.mean(box[:5]), box
    pipe = SceneGraphPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.layout_encoder is None and pipe.conditioner.box_head is not None
    assert pipe.config.position_grid and pipe.unet.config.in_channels == 4 + 2
    graphs = [g.model_copy(update={"boxes": None}) for g in make_split("val", n=2)]
    out = pipe(graphs, num_inference_steps=2, output_type="np")
    assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()


# --------------------------------------------------------------------------------- resume


def test_resume_is_bit_exact(models, tmp_path, monkeypatch):
    steps = ('stages=["gca", "finetune"]', "gca.max_steps=3", "finetune.max_steps=4")
    common = (*steps, "checkpoint_every=2", "keep_checkpoints=10", "finetune.lr=1e-3")
    train(tiny_config(models, tmp_path / "straight", *common))

    out = tmp_path / "stopped"
    resume = tiny_config(models, out, *common, "resume=latest")  # also starts a fresh run
    # Killed: in stage 1 after checkpoint-2; at the first step of stage 2 (checkpoint-3 ends
    # stage 1); in stage 2 after checkpoint-4 (its first step). Then left to finish.
    for stage, call, latest in ((GCAStage, 3, 2), (FinetuneStage, 1, 3), (FinetuneStage, 2, 4)):
        with monkeypatch.context() as patch:
            crash_on_call(patch, stage, call)
            with pytest.raises(Crash):
                train(resume)
        assert ckpt.find_latest(out / "checkpoints").name == f"checkpoint-{latest:06d}"
    train(resume)

    a, b = final_weights(tmp_path / "straight"), final_weights(out)
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The log reads like one straight run (lines of the killed runs past their checkpoint dropped).
    assert metrics(tmp_path / "straight") == metrics(out)


def test_layout_model_trains_and_resumes_after_its_layout_stage(models, tmp_path, monkeypatch):
    layout = (
        'stages=["layout", "finetune"]', "layout_encoder.channels=3", "layout.max_steps=3",
        "layout.batch_size=4", "layout.lr_warmup_steps=0", "layout_generator.embed_dim=8",
        "finetune.max_steps=3", "checkpoint_every=2", "keep_checkpoints=10",
        "use_mmd=false", "use_clip_loss=false",
    )  # fmt: skip
    train(tiny_config(models, tmp_path / "straight", *layout))
    out = tmp_path / "stopped"
    resume = tiny_config(models, out, *layout, "resume=latest")
    with monkeypatch.context() as patch:  # killed in fine-tuning, after the layout stage
        crash_on_call(patch, FinetuneStage, 2)
        with pytest.raises(Crash):
            train(resume)
    assert (out / "layout_generator" / "config.json").is_file()
    train(resume)
    for part in ("layout_generator", "layout_encoder", "unet"):
        a = load_file(next((tmp_path / "straight" / "pipeline" / part).glob("*.safetensors")))
        b = load_file(next((out / "pipeline" / part).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    rows = [m for m in metrics(out) if m["stage"] == "layout" and not m.get("eval")]
    assert [m["step"] for m in rows] == [1, 2, 3] and all(math.isfinite(m["loss"]) for m in rows)


def test_layout_stage_can_load_a_shared_layout_model(models, tmp_path):
    """Ablation rows share one layout model: layout.pretrained loads it instead of training."""
    layout = (
        'stages=["layout", "finetune"]', "layout_encoder.channels=3", "layout.max_steps=2",
        "layout.batch_size=4", "layout.lr_warmup_steps=0", "layout_generator.embed_dim=8",
        "finetune.max_steps=1", "use_mmd=false", "use_clip_loss=false",
    )  # fmt: skip
    train(tiny_config(models, tmp_path / "first", *layout))
    shared = tmp_path / "first" / "layout_generator"
    train(tiny_config(models, tmp_path / "row", *layout, f"layout.pretrained={shared}"))
    a, b = (
        load_file(next((tmp_path / run / "pipeline" / "layout_generator").glob("*.safetensors")))
        for run in ("first", "row")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [m for m in metrics(tmp_path / "row") if m["stage"] == "layout"]
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"layout.pretrained: {missing} is missing"):
        train(tiny_config(models, tmp_path / "bad", *layout, f"layout.pretrained={missing}"))


def test_layout_stage_needs_a_layout_model(models, tmp_path):
    with pytest.raises(ConfigError, match="set layout_encoder"):
        tiny_config(models, tmp_path, 'stages=["layout", "finetune"]')


@pytest.mark.parametrize("killed_at", ["state", "latest"])
def test_kill_while_saving_keeps_latest_valid(models, tmp_path, monkeypatch, killed_at):
    cfg = tiny_config(
        models, tmp_path, "stages=finetune", "finetune.max_steps=2", "checkpoint_every=1"
    )
    root = tmp_path / "checkpoints"
    write = ckpt.write_atomic

    def dying_write(path, text):
        if killed_at == "state" and path.name == ckpt.STATE_FILE and "000002.tmp" in str(path):
            raise Crash  # checkpoint-2 half written: weights there, no trainer_state.json
        if killed_at == "latest" and path.name == ckpt.LATEST and "000002" in text:
            path.with_name("latest.tmp").write_text(text[:5])  # torn temporary file
            raise Crash
        write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "write_atomic", dying_write)
        with pytest.raises(Crash):
            train(cfg)
    assert (root / "latest").read_text() == "checkpoint-000001\n"
    assert ckpt.find_latest(root) == root / "checkpoint-000001"
    if killed_at == "state":
        assert (root / "checkpoint-000002.tmp" / "model.safetensors").is_file()
        assert not (root / "checkpoint-000002").exists()
    else:
        assert ckpt.is_complete(root / "checkpoint-000002")  # renamed, but not yet "latest"
    # The same command with resume=latest continues from checkpoint-1 and cleans up.
    train(dataclasses.replace(cfg, resume="latest"))
    assert (root / "latest").read_text() == "checkpoint-000002\n"
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint-000001", "checkpoint-000002", "latest",
    ]  # fmt: skip


def test_resume_loads_only_this_runs_checkpoints(tmp_path):
    other = tmp_path / "elsewhere" / "checkpoint-000001"
    other.mkdir(parents=True)
    (other / ckpt.STATE_FILE).write_text(json.dumps({"format": ckpt.FORMAT}))
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), resume=str(other))
    with pytest.raises(ConfigError, match="not a checkpoint of this run"):
        ckpt.resolve_resume(cfg)
    assert ckpt.resolve_resume(dataclasses.replace(cfg, resume="latest")) is None  # fresh start
    mine = tmp_path / "run" / "checkpoints" / "checkpoint-000001"
    mine.mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        ckpt.resolve_resume(dataclasses.replace(cfg, resume=str(mine)))


def test_checkpoint_of_other_process_count_warns_through_logging(tmp_path, caplog, capsys):
    class OneOfTwo:  # the second process of a run resumed from a one-process checkpoint
        process_index, is_main_process = 1, False

        def load_state(self, path):
            self.loaded = path

    path = tmp_path / "checkpoints" / "checkpoint-000004"
    path.mkdir(parents=True)
    (path / ckpt.STATE_FILE).write_text(json.dumps({"format": ckpt.FORMAT, "num_processes": 1}))
    (path / "random_states_0.pkl").write_bytes(b"")
    accelerator = OneOfTwo()
    with caplog.at_level("WARNING", logger="sg2image.training.checkpoint"):
        assert ckpt.load_checkpoint(accelerator, path)["num_processes"] == 1
    assert accelerator.loaded == str(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} was written by 1 process(es); process 1 starts from a fresh RNG state"
    ]
    assert capsys.readouterr().out == ""  # a warning, not a print


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 2 processes that each import the training stack: ~25 s of CPU
@pytest.mark.multiprocess
def test_two_processes_match_one(models, tmp_path):
    """Stage 2 under `accelerate launch` on 2 CPU processes (gloo), global batch 4 = 2 x 2,
    equals 1 process with batch 4. Stage 1 is not claimed: its discriminator's BatchNorm
    normalises each process's shard by its own statistics, and its dropout draws from each
    process's RNG."""
    common = ("stages=finetune", "finetune.max_steps=3", "finetune.lr=1e-4", "checkpoint_every=100")
    common += ("finetune.cond_dropout=0.5",)  # some examples dropped, on one process or both
    train(tiny_config(models, tmp_path / "one", *common))
    two = tiny_config(models, tmp_path / "two", *common)
    two.save(tmp_path / "two.json")
    worker = Path(__file__).with_name("train_worker.py")
    # `accelerate launch --cpu --num_processes 2` runs ONE process; --multi_gpu on a machine
    # without GPUs starts 2 CPU processes with the gloo backend (checked below).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 processes on 2 cores: no oversubscription
    run = subprocess.run(
        [*command, str(worker), str(tmp_path / "two.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    state = ckpt.read_state(ckpt.find_latest(tmp_path / "two" / "checkpoints"))
    assert state["num_processes"] == 2

    one, other = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    diff = torch.cat([(one[k] - other[k]).abs().flatten() for k in one])
    init = build_parts(two).pipe.unet.state_dict()
    moved = max((one[f"unet.{k}"] - v).abs().max().item() for k, v in init.items())
    # Measured: 99.98% of the 261k weights agree within 1e-7 (mean |diff| 5e-10), max 6.5e-6;
    # weights moved up to 3e-4. The few larger differences are weights whose gradient is
    # about Adam's eps (1e-8), where float rounding of the gradient sum changes the update
    # by a fraction of lr; a wrong shard, noise draw or loss would move every weight by ~lr.
    assert (diff > 1e-7).float().mean() < 1e-3, diff.max()
    assert diff.max() < 0.5 * 1e-4 and moved > 1e-4, (diff.max(), moved)
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        for key in ("recon", "clip", "mmd", "loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)


def test_encoding_cache_gives_the_same_training(models, tmp_path, monkeypatch):
    """cache_encodings keeps the frozen encoders' outputs per example: the same losses and
    weights as encoding every step, with each example encoded once per kind."""
    from sg2image.training import stages

    calls = []
    real = stages.clip_image_embeds

    def counting(clip, pixels, *norm):
        calls.append(len(pixels))
        return real(clip, pixels, *norm)

    monkeypatch.setattr(stages, "clip_image_embeds", counting)
    steps = ["gca.max_steps=3", "finetune.max_steps=3", "checkpoint_every=100"]
    train(tiny_config(models, tmp_path / "plain", *steps))
    plain_calls, calls[:] = sum(calls), []
    train(tiny_config(models, tmp_path / "cached", *steps, "cache_encodings=true"))
    # 8 examples, batch 4: the GCA stage sees each once per epoch; without the cache 6
    # training batches + the held-out measure encode, with it only the first epoch does.
    assert sum(calls) < plain_calls and sum(calls) == 8 + 8
    a, b = metrics(tmp_path / "plain"), metrics(tmp_path / "cached")
    for key in ("recon", "mmd", "clip", "d_loss"):
        va = [r[key] for r in a if key in r]
        assert va and va == pytest.approx([r[key] for r in b if key in r], rel=1e-4, abs=1e-6)
    wa, wb = final_weights(tmp_path / "plain"), final_weights(tmp_path / "cached")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_base_overrides_take_a_tuple_of_any_length():
    """`base.unet.size.attention` is tuple[bool, ...]: three levels are three flags."""
    from sg2image.training.presets import base_budget

    cfg = base_budget("shapes-depth", ["base.unet.size.attention=[true,true,true]"])
    assert cfg.unet.size.attention == (True, True, True)
    with pytest.raises(ConfigError, match=r"attention\[1\]: expected true or false"):
        base_budget("shapes-depth", ["base.unet.size.attention=[true,3]"])

"""The `--preset shapes` chain end to end with seconds-long budgets, and shipping its result."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tiny_settings import TINY_SHAPES_METHOD

from sg2image.pipeline import load_pipeline
from sg2image.training.base_model import ShapesBaseConfig
from sg2image.training.presets import run_preset, ship

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chain(tiny_shapes_run, tmp_path_factory):
    """A run of this module's own, for the tests that run the preset again over a run (a
    rerun rewrites the method's files, which the shared ``tiny_shapes_run`` must not see):
    the shared run's finished base, copied, and the method trained on it."""
    out = tmp_path_factory.mktemp("preset")
    shutil.copytree(tiny_shapes_run[0] / "shapes-base", out / "shapes-base")
    return out, run_preset("shapes", out, TINY_SHAPES_METHOD, ShapesBaseConfig.tiny())


@pytest.mark.slow  # trains the tiny method once more, for this module's reruns
def test_chain_writes_base_method_and_timings(tiny_shapes_run, chain):
    out, pipeline = tiny_shapes_run  # the whole chain, from nothing
    assert pipeline == out / "method" / "pipeline"
    assert (out / "shapes-base" / "base" / "model_index.json").is_file()
    cfg = json.loads((out / "method" / "config.json").read_text())
    assert cfg["cache_encodings"] and cfg["finetune"]["max_steps"] == 2
    # the default preset is a layout model, its refinement set for Shapes boxes
    assert cfg["stages"] == ["layout", "gca", "finetune", "distill"]
    assert cfg["layout_generator"]["refine"]["side_range"] == [10 / 64, 22 / 64]
    pipe = load_pipeline(pipeline)
    assert pipe.has_layout and pipe.unet.config.in_channels == 4 + 3
    # with its distilled student (the fast sampler) in the same folder
    assert pipe.has_student and pipe.student_unet.config.in_channels == 4 + 3
    log = (out / "method" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in log]
    layout_eval = [m for m in metrics if m["stage"] == "layout" and m.get("eval")]
    assert layout_eval and 0 <= layout_eval[0]["refined_relation_accuracy"] <= 1
    timings = json.loads((out / "timings.json").read_text())
    assert timings["base_s"] > 0 and timings["method_s"] > 0
    # a second call finds everything done: the base is not retrained (on this module's run)
    out, pipeline = chain
    base_mtime = (out / "shapes-base" / "base" / "model_index.json").stat().st_mtime
    assert run_preset("shapes", out, TINY_SHAPES_METHOD, ShapesBaseConfig.tiny()) == pipeline
    assert (out / "shapes-base" / "base" / "model_index.json").stat().st_mtime == base_mtime


def test_ship_stores_half_precision_and_replaces(tiny_shapes_run, tmp_path):
    _, pipeline = tiny_shapes_run
    dst = tmp_path / "assets" / "shapes-pipeline"
    dst.mkdir(parents=True)
    (dst / "stale.json").write_text("{}")
    ship(pipeline, dst)
    assert not (dst / "stale.json").exists() and not dst.with_name("shapes-pipeline.tmp").exists()
    unet = load_file(dst / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in unet.values()} == {torch.float16}
    assert not [c for c in dst.rglob("*.json") if "_name_or_path" in c.read_text()]
    original, shipped = load_pipeline(pipeline), load_pipeline(dst)
    assert shipped.unet.dtype == torch.float32
    graphs = [{"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}]
    a = original(graphs, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images  # fmt: skip
    b = shipped(graphs, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                output_type="np").images  # fmt: skip
    assert abs(a - b).max() < 0.02


def test_ship_refuses_pickles(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not safetensors"):
        ship(bad, tmp_path / "dst")


@pytest.mark.slow  # the run of this module
def test_rerun_with_other_settings_is_refused_naming_the_keys(chain):
    from sg2image.training.config import ConfigError

    out, _ = chain
    other_base = ShapesBaseConfig.tiny()
    other_base.unet.steps += 1
    with pytest.raises(ConfigError, match=r"base\.unet\.steps"):
        run_preset("shapes", out, TINY_SHAPES_METHOD, other_base)
    checked_only = ShapesBaseConfig.tiny()
    checked_only.eval_size, checked_only.log_every = 0, 5  # how it is checked, not what it learns
    # the method's checkpoints, other settings: refused, naming the keys, not resumed over
    with pytest.raises(ConfigError, match=r"other settings \(finetune\.max_steps\)"):
        run_preset("shapes", out, [*TINY_SHAPES_METHOD, "finetune.max_steps=3"], checked_only)
    with pytest.raises(ConfigError, match=r"other settings \(finetune\.lr\); set resume=latest"):
        run_preset("shapes", out, [*TINY_SHAPES_METHOD, "finetune.lr=1e-3"], checked_only)
    two = ["finetune.lr=1e-3", "conditioner.fusion=interleave"]
    with pytest.raises(ConfigError, match=r"\(conditioner\.fusion, finetune\.lr\)"):
        run_preset("shapes", out, [*TINY_SHAPES_METHOD, *two], checked_only)
    # the preset's own sizes and budgets: many keys, the first four named
    with pytest.raises(ConfigError, match=r"settings \(distill\.batch_size, [^)]*, \.\.\.\)"):
        run_preset("shapes", out, TINY_SHAPES_METHOD[:2], checked_only)
    again = run_preset("shapes", out, TINY_SHAPES_METHOD, checked_only)
    assert again == out / "method" / "pipeline"

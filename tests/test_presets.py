"""The paper presets (coco256-sd14, vg256-sd14) end to end on raw-format fixtures with tiny
stand-in models: prepare -> train 2 steps per stage -> sample."""

import json

import pytest
from fixtures_coco import build_coco_fixture
from test_vg import SMALL, write_raw_vg

from sg2image.cli import resolve_config
from sg2image.data.coco import prepare_coco
from sg2image.data.vg import prepare_vg
from sg2image.pipeline import load_pipeline
from sg2image.training import load_config, train
from sg2image.training.config import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {
    "embed_dim": 16,
    "hidden_dim": 16,
    "triple_hidden_dim": 16,
    "num_layers": 1,
    "global_dim": 16,
}


@pytest.fixture(scope="module")
def models(tiny_sd):
    return tiny_sd  # shared (tests/conftest.py): read only


def prepare(name, root):
    if name == "coco256-sd14":
        raw = build_coco_fixture(root / "raw")
        prepare_coco(raw, root / "data")
        (root / "data" / "coco_images").write_text(str(raw / "images"))
    else:
        raw, images = write_raw_vg(root)
        prepare_vg(raw, root / "data", **SMALL)
        (root / "data" / "images").symlink_to(images)
    return root / "data"


@pytest.mark.parametrize("name", ["coco256-sd14", "vg256-sd14"])
def test_preset_runs_end_to_end(name, models, tmp_path):
    base, clip = models
    data = prepare(name, tmp_path)
    paper = load_config(resolve_config(type(tmp_path)(name)))
    assert paper.resolution == 256 and paper.finetune.lr == 5e-6 and paper.gca.lr == 2e-4
    assert paper.use_mmd == (name == "coco256-sd14")  # VG: 0.7 recon + 0.3 clip, no MMD
    assert paper.stages == ["gca", "finetune", "distill"] and paper.distill.guidance_scale == 7.5
    cfg = load_config(
        resolve_config(type(tmp_path)(name)),
        [
            f"base_model={base}", f"clip_model={clip}", f"data_root={data}",
            f"output_dir={tmp_path / 'run'}", "resolution=32", "mixed_precision=no",
            f"encoder={json.dumps(TINY)}", "gca.max_steps=2", "gca.batch_size=2",
            "finetune.max_steps=2", "finetune.batch_size=2", "train_size=4", "val_size=2",
            "distill.max_steps=2", "distill.batch_size=2",
        ],
    )  # fmt: skip
    pipeline = train(cfg)
    pipe = load_pipeline(pipeline)
    graphs = [make_dataset(cfg, "val")[0]["graph"]]
    out = pipe(graphs, num_inference_steps=2, sampler="full", output_type="np")
    assert out.images.shape == (1, 32, 32, 3)
    # the distilled student, in the same folder, is the default sampler
    assert pipe.has_student and pipe.config.fast_guidance == 7.5
    fast = pipe(graphs, output_type="np")
    assert fast.images.shape == (1, 32, 32, 3) and not (fast.images == out.images).all()
    metrics = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {m["stage"] for m in metrics if "stage" in m} >= {"gca", "finetune", "distill"}

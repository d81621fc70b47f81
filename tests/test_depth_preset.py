"""The depth presets (`--preset shapes-depth` and its rows) end to end with seconds-long
budgets: the depth world through base and method, the depth model's parts, and the
overrides of the depth table's rows."""

import dataclasses
import json
import shutil

import pytest
import torch
from tiny_settings import TINY_SHAPES_METHOD

from sg2image.data.shapes import make_split, world_predicates
from sg2image.graph import DEPTH_PREDICATES
from sg2image.pipeline import load_pipeline
from sg2image.training.base_model import ShapesBaseConfig, train_shapes_base
from sg2image.training.config import ConfigError
from sg2image.training.presets import base_budget, run_preset, shapes_method_config

pytestmark = pytest.mark.usefixtures("one_thread")
# tests/test_shapes_preset.py's tiny budgets, the layout map at the preset's own width
TINY_METHOD = [m for m in TINY_SHAPES_METHOD if not m.startswith("layout_encoder.")]


def tiny_depth_base() -> ShapesBaseConfig:
    return dataclasses.replace(ShapesBaseConfig.tiny(), world="depth")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("depth")
    return out, run_preset("shapes-depth", out, TINY_METHOD, tiny_depth_base())


def _depth_graph():
    """The first depth test scene with a depth triple."""
    for graph in make_split("test", n=20, world="depth"):
        if any(p in DEPTH_PREDICATES for _, p, _ in graph.relationships):
            return graph
    raise AssertionError("no depth triple in 20 depth test scenes")


def test_depth_chain_trains_a_depth_model(chain):
    out, pipeline = chain
    cfg = json.loads((out / "method" / "config.json").read_text())
    assert cfg["world"] == "depth" and cfg["stages"] == ["layout", "gca", "finetune", "distill"]
    assert cfg["layout_encoder"] == {"channels": 12, "depth_order": True}
    assert cfg["conditioner"]["object_tokens"] and "use_graph" not in cfg["conditioner"]
    assert json.loads((out / "shapes-base" / "config.json").read_text())["world"] == "depth"
    pipe = load_pipeline(pipeline)
    assert list(pipe.vocab.predicate_names[1:]) == list(world_predicates("depth"))
    assert len(pipe.vocab.predicate_names) - 1 == 8
    assert pipe.layout_encoder.config.depth_order
    assert pipe.unet.config.in_channels == 4 + 24  # the map and its depth-ordered half
    assert pipe.conditioner.config.object_tokens and pipe.conditioner.config.max_objects == 5
    # the base's tokenizer knows the depth captions' words
    caption = "a red circle in front of a blue square and a green triangle behind a cyan circle"
    assert pipe.tokenizer.unk_token_id not in pipe.tokenizer(caption).input_ids
    graph = _depth_graph()
    images = {}
    for layout in ("predicted", "given"):
        gen = torch.Generator().manual_seed(0)
        images[layout] = pipe([graph], num_inference_steps=2, generator=gen, layout=layout,
                              output_type="np").images  # fmt: skip
        assert images[layout].shape == (1, 64, 64, 3)
    # the given boxes are the graph's own, not the sampled ones: another map, another image
    assert abs(images["predicted"] - images["given"]).max() > 0
    # the layout stage was scored on depth graphs (box rules of the depth predicates)
    log = (out / "method" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in log]
    layout_eval = [m for m in rows if m["stage"] == "layout" and m.get("eval")]
    assert layout_eval and 0 <= layout_eval[0]["refined_relation_accuracy"] <= 1


def test_other_row_over_the_run_is_refused(chain):
    out, _ = chain
    with pytest.raises(ConfigError, match=r"conditioner"):
        run_preset("shapes-depth", out, [*TINY_METHOD, "conditioner.use_graph=false"],
                   tiny_depth_base())  # fmt: skip


def test_no_order_row_trains_on_a_copied_base(chain, tmp_path):
    """Row 3 (a map without depth order) in its own folder, skipping the base by a copy of
    the first run's, as presets.py's docstring says."""
    out, _ = chain
    shutil.copytree(out / "shapes-base", tmp_path / "shapes-base")
    index = tmp_path / "shapes-base" / "base" / "model_index.json"
    mtime = index.stat().st_mtime
    items = [*TINY_METHOD, "layout_encoder.depth_order=false"]
    pipe = load_pipeline(run_preset("shapes-depth", tmp_path, items, tiny_depth_base()))
    assert index.stat().st_mtime == mtime  # the base was not trained again
    assert not pipe.layout_encoder.config.depth_order
    assert pipe.unet.config.in_channels == 4 + 12
    assert pipe.conditioner.config.object_tokens  # the graph is its only source of order
    gen = torch.Generator().manual_seed(0)
    image = pipe([_depth_graph()], num_inference_steps=2, generator=gen, output_type="np")
    assert image.images.shape == (1, 64, 64, 3)


def test_row_overrides_give_the_expected_configs(tmp_path):
    def method(preset, *items):
        return shapes_method_config(tmp_path / "b", tmp_path / "c", tmp_path / "o", items, preset)

    full = method("shapes-depth")
    assert full.world == "depth" and full.layout_encoder == {"channels": 12, "depth_order": True}
    assert full.conditioner == {"fusion": "concat", "tokens": "global+local", "max_triples": 10,
                                "object_tokens": True}  # fmt: skip
    no_graph = method("shapes-depth", "conditioner.use_graph=false")
    assert no_graph.conditioner == {**full.conditioner, "use_graph": False}
    assert no_graph.layout_encoder == full.layout_encoder and no_graph.world == "depth"
    no_order = method("shapes-depth", "layout_encoder.depth_order=false")
    assert no_order.layout_encoder == {"channels": 12, "depth_order": False}
    assert no_order.conditioner == full.conditioner
    paper = method("shapes-depth-paper")
    assert paper.world == "depth" and paper.layout_encoder is None
    assert paper.stages == ["gca", "finetune"] and "object_tokens" not in paper.conditioner
    # every row has the same budgets and the same base
    for row in (no_graph, no_order):
        assert dataclasses.asdict(row.finetune) == dataclasses.asdict(full.finetune)
        assert dataclasses.asdict(row.layout) == dataclasses.asdict(full.layout)
    assert dataclasses.asdict(paper.finetune) == dataclasses.asdict(full.finetune)
    assert base_budget("shapes-depth") == base_budget("shapes-depth-paper")
    assert base_budget("shapes-depth").world == "depth" and base_budget("shapes").world == "plain"
    # the GPU variant: shapes-gpu's sizes on the depth world
    gpu, plain_gpu = method("shapes-gpu-depth"), method("shapes-gpu")
    assert gpu.world == "depth" and gpu.layout_encoder == full.layout_encoder
    assert dataclasses.asdict(gpu.finetune) == dataclasses.asdict(plain_gpu.finetune)
    assert gpu.train_size == plain_gpu.train_size and gpu.mixed_precision == "bf16"
    gpu_base, plain_gpu_base = base_budget("shapes-gpu-depth"), base_budget("shapes-gpu")
    gpu_base.unet.size.attention = plain_gpu_base.unet.size.attention  # see the test below
    assert gpu_base.world == "depth" and dataclasses.replace(gpu_base, world="plain") == (
        plain_gpu_base
    )
    # the plain presets stay as they were
    assert method("shapes").world == "plain" and method("shapes").layout_encoder == {"channels": 12}


def test_world_is_checked(tmp_path):
    from sg2image.training.config import load_config

    with pytest.raises(ConfigError, match=r"world: 'deep' is not one of"):
        load_config(None, ["world=deep"])
    with pytest.raises(ConfigError, match=r"world: 'depth' is a Shapes world; dataset 'coco'"):
        load_config(None, ["dataset=coco", "world=depth"])
    assert load_config(None, ["world=depth"]).world == "depth"
    bad_base = dataclasses.replace(ShapesBaseConfig.tiny(), world="deep")
    with pytest.raises(ConfigError, match=r"base\.world: 'deep' is not one of"):
        train_shapes_base(tmp_path / "base", bad_base)


def test_a_setting_missing_from_an_older_run_counts_as_its_default(tmp_path):
    from sg2image.training.config import TrainConfig, saved_settings_differ

    saved = dataclasses.asdict(TrainConfig())
    del saved["world"]  # a run saved before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert saved_settings_differ(tmp_path / "config.json", TrainConfig()) == []
    assert saved_settings_differ(tmp_path / "config.json", TrainConfig(world="depth")) == ["world"]


def test_overlap_weights_mark_where_a_depth_pair_overlaps():
    from sg2image.graph import SceneGraph
    from sg2image.training.stages import depth_overlap_weights, weighted_mse

    boxes = [(0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75), (0.8, 0.8, 1.0, 1.0)]
    objects = ["red square", "blue circle", "green triangle"]
    depth = SceneGraph(objects=objects, relationships=[(0, "in front of", 1), (1, "left of", 2)],
                       boxes=boxes)  # fmt: skip
    flat = SceneGraph(objects=objects, relationships=[(0, "left of", 1), (1, "left of", 2)],
                      boxes=boxes)  # fmt: skip
    w = depth_overlap_weights([depth, flat], (8, 8), 3.0)
    assert w.shape == (2, 1, 8, 8)
    expected = torch.ones(8, 8)
    expected[2:4, 2:4] = 4.0  # the two boxes meet on [0.25, 0.5) of each side: pixels 2, 3
    assert torch.equal(w[0, 0], expected) and torch.equal(w[1, 0], torch.ones(8, 8))
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    plain = torch.nn.functional.mse_loss(pred, target)
    assert torch.allclose(weighted_mse(pred, target, torch.ones(2, 1, 8, 8)), plain)
    # the overlap's errors count 4x: an error there alone moves the loss more than elsewhere
    inside, outside = torch.zeros_like(pred), torch.zeros_like(pred)
    inside[0, :, 2, 2], outside[0, :, 6, 6] = 1.0, 1.0
    assert weighted_mse(inside, target * 0, w) == 4 * weighted_mse(outside, target * 0, w)


def test_slot_bound_no_order_row_trains_and_samples(chain, tmp_path):
    """The graph-only row with instance slots: a map without order that paints each object's
    index, and object and triple tokens that carry the same indices (the binding of tokens to
    boxes)."""
    out, _ = chain
    shutil.copytree(out / "shapes-base", tmp_path / "shapes-base")
    items = [*TINY_METHOD, "layout_encoder.depth_order=false", "layout_encoder.instance_slots=5",
             "conditioner.object_slots=true", "conditioner.triple_slots=true"]  # fmt: skip
    pipe = load_pipeline(run_preset("shapes-depth", tmp_path, items, tiny_depth_base()))
    assert pipe.layout_encoder.config.instance_slots == 5 and pipe.conditioner.config.object_slots
    assert pipe.conditioner.config.triple_slots
    assert not pipe.layout_encoder.config.depth_order and pipe.unet.config.in_channels == 4 + 12
    gen = torch.Generator().manual_seed(0)
    image = pipe([_depth_graph()], num_inference_steps=2, generator=gen, output_type="np")
    assert image.images.shape == (1, 64, 64, 3)


def test_depth_bases_attend_at_every_unet_level():
    """The depth presets' bases put cross-attention at the 16 x 16 level too (a depth pair's
    overlap is finer than 8 x 8); the plain bases keep theirs."""
    from sg2image.models.shapes_base import build_unet
    from sg2image.training.presets import base_budget

    for name in ("shapes-depth", "shapes-depth-paper", "shapes-gpu-depth"):
        size = base_budget(name).unet.size
        unet = build_unet(dataclasses.replace(size, channels=(8, 16, 16), head_dim=8), 8, 16)
        assert [type(b).__name__ for b in unet.down_blocks][0] == "CrossAttnDownBlock2D", name
    assert base_budget("shapes").unet.size.attention == (False, True, True)


def test_factor2_preset_differs_from_gpu_depth_only_in_its_vae():
    """shapes-gpu-depth-f2: shapes-gpu-depth's method and base, with a two-level VAE (one
    halving: 64 x 64 -> 32 x 32 latents), so the UNet it trains works at 32 x 32."""
    from sg2image.models.base import vae_downsampling
    from sg2image.models.shapes_base import build_vae
    from sg2image.training.config import load_config
    from sg2image.training.presets import METHODS, base_budget

    f2, gpu = base_budget("shapes-gpu-depth-f2"), base_budget("shapes-gpu-depth")
    assert vae_downsampling(build_vae(f2.vae.size)) == 2
    assert vae_downsampling(build_vae(gpu.vae.size)) == 4
    same_vae = dataclasses.replace(f2.vae, size=gpu.vae.size)  # its steps, lr, ... kept
    assert dataclasses.replace(f2, vae=same_vae) == gpu
    assert load_config(None, METHODS["shapes-gpu-depth-f2"]) == load_config(
        None, METHODS["shapes-gpu-depth"]
    )

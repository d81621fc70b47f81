"""The attention-localisation loss (finetune.localise_weight): box masks, the loss's two
terms, the recording processor (same outputs as diffusers' own), and a training run."""

import json

import numpy as np
import pytest
import torch

from sg2image.graph import SceneGraph, Vocab
from sg2image.models.base import load_base
from sg2image.pipeline import build_context, pipeline_from_base
from sg2image.training import ConfigError, load_config, train
from sg2image.training.localisation import (
    box_masks,
    dense_boxes,
    localisation_loss,
    recording_cross_attention,
    visible_masks,
)

VOCAB = Vocab.build(["red circle", "blue square", "green triangle"], ["left of", "above"])
TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_box_masks_cover_every_pixel_a_box_touches():
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.75], [0.6, 0.1, 0.62, 0.12], [0, 0, 1, 1]]])
    m = box_masks(boxes, (4, 4))
    assert m.shape == (1, 3, 4, 4)
    want = torch.zeros(4, 4)
    want[1:3, 1] = 1  # x in [1, 2) pixels, y in [1, 3)
    assert torch.equal(m[0, 0], want)
    assert m[0, 1].sum() == 1 and m[0, 1, 0, 2] == 1  # a box inside one pixel owns it
    assert m[0, 2].sum() == 16


def test_loss_is_lowest_when_each_token_attends_inside_its_box():
    """Attention inside the box scores below uniform attention, which scores below attention
    outside; padding tokens and dropped graphs do not count."""
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    masks = box_masks(boxes, (4, 4)).flatten(2).transpose(1, 2)  # (1, 16, 2)
    inside = masks * 0.9  # each pixel pays 0.9 of its attention to the token whose box it is in
    uniform = torch.full_like(masks, 0.3)
    outside = masks.flip(-1) * 0.9
    valid = torch.tensor([[True, True]])
    losses = [float(localisation_loss([m], boxes, valid)) for m in (inside, uniform, outside)]
    assert losses[0] < losses[1] < losses[2], losses
    # the token term is 0 inside: what is left is the pixel term's 0.9-not-1 part
    assert losses[0] < 0.1
    # a padding token's map does not count, however bad it is
    noisy = torch.cat([inside, outside[..., :1]], -1)
    pad = torch.cat([boxes, boxes[:, :1]], 1)
    masked = localisation_loss([noisy], pad, torch.tensor([[True, True, False]]))
    assert torch.isclose(masked, torch.tensor(losses[0]))
    assert float(localisation_loss([inside], boxes, torch.zeros(1, 2, dtype=torch.bool))) == 0
    with pytest.raises(ValueError, match="square latent"):
        localisation_loss([torch.rand(1, 12, 2)], boxes, valid)
    with pytest.raises(ValueError, match="no cross-attention"):
        localisation_loss([], boxes, valid)


def test_visible_masks_give_the_overlap_to_the_front_object():
    """Object 1 is in front of object 0 and overlaps its right half: the overlap is object
    1's, not object 0's; a far object of a higher rank takes nothing; and where the front box
    covers the whole back box at a coarse level, the back object keeps its box."""
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.8, 0.8, 1.0, 1.0]]])
    ranks = torch.tensor([[0, 1, 5]])
    m = visible_masks(boxes, ranks, (4, 4))
    whole = box_masks(boxes, (4, 4))
    assert torch.equal(m[0, 1], whole[0, 1]) and torch.equal(m[0, 2], whole[0, 2])
    want = torch.zeros(4, 4)
    want[0:2, 0] = 1  # object 0 keeps x in [0, 1) only: [1, 2) is under object 1
    assert torch.equal(m[0, 0], want)
    # the same order reversed: the overlap goes to object 0
    back = visible_masks(boxes, torch.tensor([[1, 0, 0]]), (4, 4))[0, 1]
    assert torch.equal(back[0:2, 2], torch.ones(2)) and back[0:2, 1].sum() == 0
    # one coarse pixel: the back object would lose everything, so it keeps its box
    coarse = visible_masks(boxes, ranks, (1, 1))
    assert torch.equal(coarse, box_masks(boxes, (1, 1)))
    # the loss with ranks scores attention on the visible parts lowest
    maps = m.flatten(2).transpose(1, 2) * 0.9
    valid = torch.ones(1, 3, dtype=torch.bool)
    with_ranks = float(localisation_loss([maps], boxes, valid, ranks))
    assert with_ranks < float(localisation_loss([maps], boxes, valid, torch.tensor([[1, 0, 0]])))


def test_dense_boxes_follow_the_object_order():
    g = SceneGraph.model_validate({
        "objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]],
        "boxes": [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]]})  # fmt: skip
    out, ranks = dense_boxes([g, g], 3)
    assert out.shape == (2, 3, 4) and torch.allclose(out[1, 1], torch.tensor([0.5, 0.5, 0.9, 0.9]))
    assert (out[:, 2] == 0).all() and ranks.tolist() == [[0, 0, 0], [0, 0, 0]]
    front = g.model_copy(update={"relationships": [(1, "in front of", 0)]})
    assert dense_boxes([front], 3)[1].tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match=r"graphs\[1\]: the localisation loss needs boxes"):
        dense_boxes([g, g.model_copy(update={"boxes": None})], 3)


def test_recording_leaves_the_unet_output_unchanged(tiny_sd):
    """Recording computes diffusers' own attention (same output as the UNet's default
    processor), one (B, h * w, K) map per cross-attention layer, and gives the layers their
    processors back."""
    torch.manual_seed(0)
    p = pipeline_from_base(load_base(tiny_sd[0]), VOCAB, TINY_ENCODER,
                           conditioner_kwargs={"object_tokens": True}, max_objects=3)  # fmt: skip
    g = SceneGraph.model_validate({"objects": ["red circle", "blue square"],
                                   "relationships": [[0, "left of", 1]]})  # fmt: skip
    with torch.no_grad():
        ctx = build_context(p, [g, g])
        x = torch.randn(2, p.unet.config.in_channels, 8, 8)
        t = torch.tensor([10, 500])
        plain = p.unet(x, t, encoder_hidden_states=ctx.context, encoder_attention_mask=ctx.mask)
        before = dict(p.unet.attn_processors)
        cols = p.conditioner.object_columns(ctx.context.shape[1])
        with recording_cross_attention(p.unet, cols) as maps:
            rec = p.unet(x, t, encoder_hidden_states=ctx.context, encoder_attention_mask=ctx.mask)
    assert torch.allclose(plain.sample, rec.sample, atol=1e-5)
    assert {k: type(v) for k, v in p.unet.attn_processors.items()} == {
        k: type(v) for k, v in before.items()
    }
    assert cols == slice(ctx.context.shape[1] - 3, ctx.context.shape[1])
    assert len(maps) >= 1 and all(m.shape[0] == 2 and m.shape[2] == 3 for m in maps)
    assert all((m >= 0).all() and (m.sum(-1) <= 1 + 1e-5).all() for m in maps)
    # the third object slot is padding (two objects): masked keys get no attention
    assert all(float(m[..., 2].max()) < 1e-6 for m in maps)


def test_training_with_the_loss_pulls_attention_into_the_boxes(tiny_sd, tmp_path):
    base, clip = tiny_sd

    def config(*extra):
        return load_config(None, [
            f"base_model={base}", f"clip_model={clip}", f"output_dir={tmp_path}",
            "resolution=32", "train_size=4", "val_size=8", f"encoder={json.dumps(TINY_ENCODER)}",
            "conditioner.max_triples=8", "finetune.batch_size=4", "stages=finetune",
            "finetune.max_steps=40", "finetune.lr=1e-3", "checkpoint_every=40", *extra,
        ])  # fmt: skip

    with pytest.raises(ConfigError, match="conditioner.object_tokens=true"):
        config("finetune.localise_weight=1")
    cfg = config("finetune.localise_weight=1", "conditioner.object_tokens=true",
                 "conditioner.object_boxes=true")  # fmt: skip
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loc = [r["localise"] for r in rows]
    assert len(loc) == 40 and np.isfinite(loc).all()
    # Measured: 1.25 -> 0.92 (mean of the first and last five steps).
    assert np.mean(loc[-5:]) < 0.85 * np.mean(loc[:5]), loc


def test_localise_schedule_switches_weight_at_its_step(tiny_sd, tmp_path):
    """finetune.localise_steps: the loss weighs localise_weight for that many optimizer
    steps, then localise_weight_after; the logged total shows which weight each step used."""
    base, clip = tiny_sd
    common = [
        f"base_model={base}", f"clip_model={clip}", f"output_dir={tmp_path}",
        "resolution=32", "train_size=4", "val_size=8", f"encoder={json.dumps(TINY_ENCODER)}",
        "conditioner.max_triples=8", "finetune.batch_size=4", "stages=finetune",
        "conditioner.object_tokens=true", "use_clip_loss=false", "use_mmd=false",
        "log_every=1", "checkpoint_every=4", "finetune.max_steps=4",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="localise_steps"):
        load_config(None, [*common, "finetune.localise_weight_after=0.1"])
    no_tokens = [a for a in common if a != "conditioner.object_tokens=true"]
    with pytest.raises(ConfigError, match="object_tokens=true"):  # the weight after counts too
        load_config(None, [*no_tokens, "finetune.localise_steps=2",
                           "finetune.localise_weight_after=0.1"])  # fmt: skip
    cfg = load_config(None, [*common, "finetune.localise_weight=1", "finetune.localise_steps=2",
                             "finetune.localise_weight_after=0.25"])  # fmt: skip
    assert [cfg.finetune.localise_weight_at(s) for s in range(4)] == [1, 1, 0.25, 0.25]
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("stage") == "finetune" and "localise" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    lam = cfg.finetune.lambda_recon
    used = [(r["loss"] - lam * r["recon"]) / r["localise"] for r in rows]
    assert np.allclose(used, [1, 1, 0.25, 0.25], rtol=1e-3), used

"""SceneGraphPipeline on tiny components saved in the Stable Diffusion folder layout."""

import numpy as np
import pytest
import torch

from sg2image.graph import GraphValidationError, Vocab
from sg2image.models.base import ModelLoadError, build_tiny_base, load_base
from sg2image.models.conditioning import GraphConditioner
from sg2image.pipeline import SCHEDULERS, load_pipeline, pipeline_from_base

VOCAB = Vocab.build(["red circle", "blue square", "green triangle"], ["left of", "above"])
TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
GRAPHS = [
    {"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]},
    {"objects": ["green triangle"]},
    {
        "objects": ["blue square", "green triangle", "red circle"],
        "relationships": [[2, "above", 0]],
    },
]


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.fixture(scope="module")
def latent_base(tiny_sd):
    return tiny_sd[0]  # build_tiny_base(latent=True), shared (tests/conftest.py): read only


@pytest.fixture(scope="module")
def pipe(latent_base):
    torch.manual_seed(0)
    p = pipeline_from_base(
        load_base(latent_base), VOCAB, TINY_ENCODER, dict(max_triples=8), max_objects=4
    )
    p.set_progress_bar_config(disable=True)
    return p


def test_sample_shapes_and_range(pipe):
    out = pipe(GRAPHS, num_inference_steps=3, generator=gens(3), output_type="np")
    assert out.images.shape == (3, 32, 32, 3)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert np.isfinite(out.images).all()
    assert [g.objects for g in out.graphs] == [g["objects"] for g in GRAPHS]
    assert out.context.shape == (3, 32 + 1 + 8, 32)  # label tokens, global token, triple slots
    pil = pipe(GRAPHS[:1], num_inference_steps=2, generator=gens(1)).images
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"


def test_deterministic_and_batch_independent(pipe):
    a = pipe(GRAPHS, num_inference_steps=3, generator=gens(3), output_type="pt").images
    b = pipe(GRAPHS, num_inference_steps=3, generator=gens(3), output_type="pt").images
    assert torch.equal(a, b)
    # image i depends on its own generator only, not on what it was batched with
    alone = pipe(
        GRAPHS[2:], num_inference_steps=3, generator=gens(1, seed=2), output_type="pt"
    ).images
    torch.testing.assert_close(alone[0], a[2], atol=1e-4, rtol=0)
    c = pipe(GRAPHS, num_inference_steps=3, generator=gens(3, seed=10), output_type="pt").images
    assert not torch.allclose(a, c)


def test_step_callback_sees_every_step_and_can_stop_the_rest(pipe):
    seen = []

    def watch(p, i, t, kwargs):
        seen.append((i, int(t), kwargs["latents"].shape))

    full = pipe(GRAPHS, num_inference_steps=4, generator=gens(3), output_type="pt",
                callback_on_step_end=watch).images  # fmt: skip
    assert [i for i, _, _ in seen] == [0, 1, 2, 3] and seen[0][2] == (3, 4, 16, 16)
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()

    def stop_after_one(p, i, t, kwargs):
        seen.append(i)
        p._interrupt = True

    seen.clear()
    cut = pipe(GRAPHS, num_inference_steps=4, generator=gens(3), output_type="pt",
               callback_on_step_end=stop_after_one).images  # fmt: skip
    assert seen == [0] and pipe.interrupt and not torch.allclose(cut, full)
    again = pipe(GRAPHS, num_inference_steps=4, generator=gens(3), output_type="pt").images
    assert not pipe.interrupt and torch.equal(again, full)  # a new call starts uninterrupted

    def replace(p, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])}

    zeroed = pipe(GRAPHS, num_inference_steps=2, generator=gens(3), output_type="pt",
                  callback_on_step_end=replace).images  # fmt: skip
    # every image decodes the zeros (threads may round a batch's rows a little differently)
    torch.testing.assert_close(zeroed, zeroed[:1].expand_as(zeroed), atol=1e-4, rtol=0)


def test_graph_changes_the_image(pipe):
    """The conditioning path is live: another relation gives another image for the same noise."""
    g2 = [{"objects": ["red circle", "blue square"], "relationships": [[1, "above", 0]]}]
    a = pipe(GRAPHS[:1], num_inference_steps=3, generator=gens(1), output_type="pt")
    b = pipe(g2, num_inference_steps=3, generator=gens(1), output_type="pt")
    assert not torch.allclose(a.context, b.context)
    assert not torch.allclose(a.images, b.images)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_samples(pipe, name):
    original = pipe.scheduler
    try:
        pipe.set_scheduler(name)
        out = pipe(
            GRAPHS[:2],
            num_inference_steps=4,
            guidance_scale=3.0,
            generator=gens(2),
            output_type="np",
        )
        assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()
    finally:
        pipe.scheduler = original
    with pytest.raises(ValueError, match="unknown"):
        pipe.set_scheduler("nope")


def test_save_and_reload_gives_same_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    for sub in (
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "graph_encoder",
        "conditioner",
    ):
        assert (tmp_path / "pipe" / sub).is_dir()
    assert not list((tmp_path / "pipe").rglob("*.bin")) and not list(
        (tmp_path / "pipe").rglob("*.pt")
    )
    again = load_pipeline(tmp_path / "pipe")
    assert again.vocab == VOCAB and again.config.max_objects == 4
    a = pipe(GRAPHS, num_inference_steps=3, generator=gens(3), output_type="pt").images
    b = again(GRAPHS, num_inference_steps=3, generator=gens(3), output_type="pt").images
    assert torch.equal(a, b)


def test_pixel_space_base(tmp_path):
    base = load_base(build_tiny_base(tmp_path / "pixel", latent=False))
    assert base.vae is None
    p = pipeline_from_base(base, VOCAB, TINY_ENCODER, dict(fusion="interleave", tokens="global"))
    p.set_progress_bar_config(disable=True)
    out = p(GRAPHS, num_inference_steps=2, generator=gens(3), output_type="np")
    assert out.images.shape == (3, 32, 32, 3)
    p.save_pretrained(tmp_path / "saved")
    assert load_pipeline(tmp_path / "saved").vae is None


def test_bad_graphs_and_models_say_what_is_wrong(pipe, tmp_path):
    with pytest.raises(GraphValidationError) as info:
        pipe([{"objects": ["red circel", "blue square"], "relationships": [[0, "left off", 1]]}])
    assert info.value.problems == [
        "scenes[0].objects[0]: unknown object 'red circel' (did you mean 'red circle'?)",
        "scenes[0].relationships[0]: unknown predicate 'left off' (did you mean 'left of'?)",
    ]
    with pytest.raises(GraphValidationError, match="5 objects, this model accepts at most 4"):
        pipe([{"objects": ["red circle"] * 5}])
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_pipeline(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="hub id could not be reached"):
        load_pipeline("sg2image-test/does-not-exist")


# ------------------------------------------------------------------ conditioner fusion


def _conditioner(**kw):
    torch.manual_seed(0)
    return GraphConditioner(global_dim=8, triple_dim=12, text_dim=6, max_triples=4, **kw)


def test_concat_fusion_masks_padding_and_drop():
    c = _conditioner(fusion="concat", tokens="global+local")
    g, t = torch.randn(2, 8), torch.randn(3, 12)
    tokens, mask = c.graph_tokens(g, t, torch.tensor([0, 0, 1]), drop=torch.tensor([False, True]))
    assert tokens.shape == (2, 5, 6)
    assert mask.tolist() == [[True, True, True, False, False], [True, False, False, False, False]]
    assert torch.equal(tokens[1, 0], c.null_graph)
    ctx, ctx_mask = c.fuse(torch.randn(2, 7, 6), tokens, mask)
    assert (
        ctx.shape == (2, 12, 6)
        and ctx_mask[:, :7].all()
        and ctx_mask[:, 7:].tolist() == mask.tolist()
    )


def test_interleave_alternates_label_and_valid_graph_tokens():
    c = _conditioner(fusion="interleave", tokens="global+local")
    tokens, mask = c.graph_tokens(torch.randn(1, 8), torch.randn(2, 12), torch.tensor([0, 0]))
    labels = torch.randn(1, 7, 6)
    ctx, ctx_mask = c.fuse(labels, tokens, mask)
    assert ctx.shape == (1, 7, 6) and ctx_mask is None
    assert torch.equal(ctx[0, 0::2], labels[0, :4])
    # 3 valid graph tokens (global + 2 triples), cycled; padding never used
    assert torch.equal(ctx[0, 1], tokens[0, 0]) and torch.equal(ctx[0, 3], tokens[0, 1])
    assert torch.equal(ctx[0, 5], tokens[0, 2])


def test_ablation_switches():
    labels, g = torch.randn(2, 7, 6), torch.randn(2, 8)
    only_labels = _conditioner(tokens="global", use_graph=False)
    assert only_labels.fuse(labels, *only_labels.graph_tokens(g))[0] is labels
    only_graph = _conditioner(tokens="global", use_labels=False)
    ctx, _ = only_graph.fuse(labels, *only_graph.graph_tokens(g))
    assert ctx.shape == (2, 1, 6)
    with pytest.raises(ValueError, match="fusion"):
        _conditioner(fusion="sum")


def test_training_resolution_is_the_default_size_and_any_multiple_can_be_asked(
    latent_base, tmp_path
):
    """A pipeline fine-tuned at 48 px generates at 48 px by default (not its UNet's 32 px
    sample size), keeps that through save/load, and takes other sizes by height/width."""
    torch.manual_seed(0)
    p = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER, resolution=48)
    p.set_progress_bar_config(disable=True)
    assert p.default_size == (48, 48)
    out = p(GRAPHS[:1], num_inference_steps=2, generator=gens(1), output_type="np")
    assert out.images.shape == (1, 48, 48, 3)
    wide = p(GRAPHS[:1], num_inference_steps=2, generator=gens(1), output_type="np",
             height=32, width=64)  # fmt: skip
    assert wide.images.shape == (1, 32, 64, 3) and np.isfinite(wide.images).all()
    p.save_pretrained(tmp_path / "p")
    assert load_pipeline(tmp_path / "p").default_size == (48, 48)
    f = p.vae_scale_factor
    with pytest.raises(ValueError, match=rf"height 31: expected a positive multiple of {f} pixels"):
        p(GRAPHS[:1], num_inference_steps=1, generator=gens(1), height=31)
    # a pipeline saved before resolution was recorded: the UNet's own size, as before
    old = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER)
    assert old.default_size == (32, 32)


def test_object_tokens_carry_each_object_with_its_graph_context(latent_base):
    """With object_tokens, the context gains one token per object (after the triple slots),
    masked past the graph's objects and under drop; an object's token depends on its
    relations, not on its label alone (the context of 'circle left of square' differs from
    'square left of circle' in the circle's token)."""
    c = _conditioner(fusion="concat", tokens="global+local", object_tokens=True, obj_dim=5,
                     max_objects=3)  # fmt: skip
    g, t, o = torch.randn(2, 8), torch.randn(3, 12), torch.randn(4, 5)
    tokens, mask = c.graph_tokens(g, t, torch.tensor([0, 0, 1]), drop=torch.tensor([False, True]),
                                  obj_vecs=o, obj_to_img=torch.tensor([0, 0, 0, 1]))  # fmt: skip
    assert tokens.shape == (2, 1 + 4 + 3, 6) and c.num_graph_tokens == 8
    assert mask[0].tolist() == [True, True, True, False, False, True, True, True]
    assert mask[1].tolist() == [True] + [False] * 7  # dropped: the null token alone
    with pytest.raises(ValueError, match="obj_vecs"):
        c.graph_tokens(g, t, torch.tensor([0, 0, 1]))

    torch.manual_seed(0)
    p = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER,
                           conditioner_kwargs={"object_tokens": True}, max_objects=3)  # fmt: skip
    assert p.conditioner.config.max_objects == 3 and p.conditioner.config.obj_dim == 16
    from sg2image.graph import SceneGraph
    from sg2image.pipeline import build_context

    objs = ["red circle", "blue square"]
    a = SceneGraph.model_validate({"objects": objs, "relationships": [[0, "left of", 1]]})
    b = SceneGraph.model_validate({"objects": objs, "relationships": [[1, "left of", 0]]})
    with torch.no_grad():
        ctx = build_context(p, [a, b]).context
    n_obj = p.conditioner.config.max_objects
    first_obj = ctx.shape[1] - n_obj
    assert not torch.allclose(ctx[0, first_obj], ctx[1, first_obj])


def test_object_slots_give_object_token_k_the_slot_vector_k():
    """object_slots: object token k (in its image's packed order) gains slot vector k, the
    index the layout map paints; masked slots stay as they were; it needs object_tokens."""
    c = _conditioner(fusion="concat", tokens="global", object_tokens=True, obj_dim=5,
                     max_objects=3, object_slots=True)  # fmt: skip
    plain = _conditioner(fusion="concat", tokens="global", object_tokens=True, obj_dim=5,
                         max_objects=3)  # fmt: skip
    plain.load_state_dict({k: v for k, v in c.state_dict().items() if k != "object_slot"})
    g, o, owner = torch.randn(2, 8), torch.randn(3, 5), torch.tensor([0, 0, 1])
    with torch.no_grad():
        with_slots, mask = c.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
        without, _ = plain.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
    diff = with_slots - without
    assert torch.allclose(diff[0, 1], c.object_slot[0])
    assert torch.allclose(diff[0, 2], c.object_slot[1])
    assert torch.allclose(diff[1, 1], c.object_slot[0])  # image 1's first object: slot 0
    assert not mask[1, 2] and torch.all(diff[1, 2] == 0)  # a padded slot gets nothing
    with pytest.raises(ValueError, match="object_slots needs object_tokens"):
        _conditioner(object_slots=True)


def test_object_depth_gives_each_object_token_its_depth_rank_vector(latent_base):
    """object_depth: object token k gains the learned vector of its depth rank; build_context
    passes the ranks graph.depth_ranks gives (0 for an object in front of nothing)."""
    kw = dict(fusion="concat", tokens="global", object_tokens=True, obj_dim=5, max_objects=3)
    c = _conditioner(**kw, object_depth=True)
    plain = _conditioner(**kw)
    plain.load_state_dict({k: v for k, v in c.state_dict().items() if k != "depth_embed"})
    with torch.no_grad():
        c.depth_embed.normal_()
    g, o, owner = torch.randn(2, 8), torch.randn(3, 5), torch.tensor([0, 0, 1])
    ranks = torch.tensor([1, 0, 5])  # past the last vector (max_objects 3): the last one
    with torch.no_grad():
        with_depth, _ = c.graph_tokens(g, obj_vecs=o, obj_to_img=owner, obj_depth=ranks)
        without, _ = plain.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
    diff, vec = with_depth - without, c.depth_embed
    assert torch.allclose(diff[0, 1], vec[1]) and torch.allclose(diff[0, 2], vec[0])
    assert torch.allclose(diff[1, 1], vec[2])
    assert torch.all(diff[:, 0] == 0)  # the global token is unchanged
    with pytest.raises(ValueError, match=r"needs obj_depth \(O',\)"):
        c.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
    with pytest.raises(ValueError, match="object_depth needs object_tokens"):
        _conditioner(object_depth=True)

    from sg2image.data.shapes import shapes_vocab
    from sg2image.graph import SceneGraph
    from sg2image.pipeline import build_context

    torch.manual_seed(0)
    p = pipeline_from_base(load_base(latent_base), shapes_vocab("depth"), TINY_ENCODER,
                           conditioner_kwargs={"object_tokens": True, "object_depth": True},
                           max_objects=3)  # fmt: skip
    seen = []
    real = p.conditioner.graph_tokens
    p.conditioner.graph_tokens = lambda *a, **k: seen.append(k["obj_depth"]) or real(*a, **k)
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7], [0.2, 0.2, 0.6, 0.6]]
    graph = {"objects": ["red circle", "blue square", "green triangle"],
             "relationships": [[0, "in front of", 1], [2, "behind", 0]],
             "boxes": boxes}  # fmt: skip
    with torch.no_grad():
        build_context(p, [SceneGraph.model_validate(graph)])
    assert seen[0].tolist() == [1, 0, 0]  # red is in front of blue and of green


def test_triple_slots_give_a_triple_token_its_subjects_and_objects_slots(latent_base):
    """triple_slots: the token of triple (s, p, o) gains slot s + slot o (the indices among
    its image's objects, the ones the layout map paints), an image-node end gains nothing;
    build_context passes each triple's ends in that numbering."""
    kw = dict(fusion="concat", tokens="global+local", max_objects=3)
    c = _conditioner(**kw, triple_slots=True)
    plain = _conditioner(**kw)
    plain.load_state_dict({k: v for k, v in c.state_dict().items() if k != "object_slot"})
    g, t, owner = torch.randn(2, 8), torch.randn(3, 12), torch.tensor([0, 0, 1])
    ends = torch.tensor([[0, 1], [1, -1], [2, 0]])
    with torch.no_grad():
        with_slots, _ = c.graph_tokens(g, t, owner, triple_objs=ends)
        without, _ = plain.graph_tokens(g, t, owner)
    diff, slot = with_slots - without, c.object_slot
    assert torch.allclose(diff[0, 1], slot[0] + slot[1])
    assert torch.allclose(diff[0, 2], slot[1])  # (object 1, in image, image node)
    assert torch.allclose(diff[1, 1], slot[2] + slot[0])
    assert torch.all(diff[:, 0] == 0)  # the global token is unchanged
    with pytest.raises(ValueError, match="needs triple_objs"):
        c.graph_tokens(g, t, owner)
    with pytest.raises(ValueError, match="names object 3 of its image; .* 3 slots"):
        c.graph_tokens(g, t, owner, triple_objs=torch.tensor([[0, 3], [1, -1], [2, 0]]))
    with pytest.raises(ValueError, match=r"triple_slots needs tokens='global\+local'"):
        _conditioner(tokens="global", triple_slots=True)

    from sg2image.graph import SceneGraph
    from sg2image.pipeline import build_context

    torch.manual_seed(0)
    p = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER,
                           conditioner_kwargs={"triple_slots": True}, max_objects=3)  # fmt: skip
    seen = []
    real = p.conditioner.graph_tokens
    p.conditioner.graph_tokens = lambda *a, **k: seen.append(k["triple_objs"]) or real(*a, **k)
    graph = {"objects": ["red circle", "blue square"], "relationships": [[1, "left of", 0]]}
    two = [SceneGraph.model_validate(graph)] * 2
    with torch.no_grad():
        build_context(p, two)
    # per image: the relation, then one (object, in image, image node) per object
    assert seen[0].tolist() == [[1, 0], [0, -1], [1, -1]] * 2


def test_object_boxes_embed_each_objects_box_in_its_token(latent_base):
    """object_boxes: the box head gives every real object a valid box inside the canvas;
    object token k gains the embedding of the box it is handed (zero at the start, so a new
    model's tokens are those without boxes); build_context hands the graph's own boxes in
    training (true_boxes) and the box head's otherwise, and returns both for the box loss."""
    kw = dict(fusion="concat", tokens="global", object_tokens=True, obj_dim=5, max_objects=3)
    c = _conditioner(**kw, object_boxes=True)
    o, owner, g = torch.randn(3, 5), torch.tensor([0, 0, 1]), torch.randn(2, 8)
    boxes = c.predict_boxes(o)
    assert boxes.shape == (3, 4) and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    with torch.no_grad():
        zero_start, _ = c.graph_tokens(g, obj_vecs=o, obj_to_img=owner, obj_boxes=boxes)
        c.box_embed.weight.normal_()
        a, _ = c.graph_tokens(g, obj_vecs=o, obj_to_img=owner, obj_boxes=boxes)
        b, _ = c.graph_tokens(g, obj_vecs=o, obj_to_img=owner, obj_boxes=boxes.flip(0))
    plain = _conditioner(**kw)
    plain.load_state_dict(c.state_dict(), strict=False)
    with torch.no_grad():
        without, _ = plain.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
    assert torch.allclose(zero_start, without)
    assert not torch.allclose(a[0, 1], b[0, 1]) and torch.allclose(a[:, 0], b[:, 0])
    with pytest.raises(ValueError, match=r"needs obj_boxes \(O', 4\)"):
        c.graph_tokens(g, obj_vecs=o, obj_to_img=owner)
    with pytest.raises(ValueError, match="object_boxes needs object_tokens"):
        _conditioner(object_boxes=True)

    from sg2image.graph import SceneGraph
    from sg2image.pipeline import build_context

    torch.manual_seed(0)
    p = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER,
                           conditioner_kwargs={"object_tokens": True, "object_boxes": True},
                           max_objects=3)  # fmt: skip
    seen = []
    real = p.conditioner.graph_tokens
    p.conditioner.graph_tokens = lambda *a, **k: seen.append(k["obj_boxes"]) or real(*a, **k)
    given = [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]
    graph = SceneGraph.model_validate({"objects": ["red circle", "blue square"],
                                       "relationships": [[0, "left of", 1]], "boxes": given})
    with torch.no_grad():
        trained = build_context(p, [graph], true_boxes=True)
        sampled = build_context(p, [graph])
    assert torch.allclose(seen[0], torch.tensor(given))
    assert torch.equal(seen[1], sampled.boxes) and torch.equal(sampled.boxes, trained.boxes)
    assert torch.allclose(trained.target_boxes, torch.tensor(given))
    p.conditioner.graph_tokens = real
    p.set_progress_bar_config(disable=True)
    out = p([graph.model_copy(update={"boxes": None})], num_inference_steps=2, output_type="np",
            generator=gens(1))  # fmt: skip
    assert np.isfinite(out.images).all()  # layout-free: samples from the graph alone


def test_refined_token_boxes_hold_the_graphs_relations(latent_base):
    """conditioner.refine_boxes: when sampling, the box head's boxes are refined as a layout
    stage refines its samples before the tokens embed them, so they satisfy the graph's
    geometric predicates; the box loss still sees the head's own boxes."""
    from sg2image.graph import SceneGraph
    from sg2image.pipeline import build_context

    torch.manual_seed(0)
    kw = {"object_tokens": True, "object_boxes": True, "refine_boxes": {"steps": 50}}
    p = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER, conditioner_kwargs=kw,
                           max_objects=3)  # fmt: skip
    seen = []
    real = p.conditioner.graph_tokens
    p.conditioner.graph_tokens = lambda *a, **k: seen.append(k["obj_boxes"]) or real(*a, **k)
    graphs = [SceneGraph.model_validate({"objects": ["red circle", "blue square"],
                                         "relationships": [[i, "left of", 1 - i]]})
              for i in (0, 1)]  # fmt: skip
    with torch.no_grad():
        ctx = build_context(p, graphs)
    head, refined = ctx.boxes, seen[0]
    centre = (refined[:, 0] + refined[:, 2]) / 2  # objects 0, 1 of graph 0, then of graph 1
    assert centre[0] < centre[1] and centre[3] < centre[2]  # each subject left of its object
    assert not torch.allclose(head, refined)  # the untrained head's boxes did not hold both
    assert (refined >= 0).all() and (refined <= 1).all()


def test_position_grid_gives_a_layout_free_unet_each_pixels_place(latent_base):
    """position_grid: a layout-free model's conv_in gains 2 zero-initialised channels that
    read each pixel's x and y in [-1, 1]; at the start it samples what it did without them;
    saved and reloaded it keeps the grid; a layout model refuses it."""
    from sg2image.pipeline import position_grid

    grid = position_grid(3, (2, 4))
    assert grid.shape == (3, 2, 2, 4)
    assert grid[0, 0, 0].tolist() == pytest.approx([-0.75, -0.25, 0.25, 0.75])  # x, left to right
    assert grid[0, 1, :, 0].tolist() == pytest.approx([-0.5, 0.5])  # y, top to bottom
    torch.manual_seed(0)
    plain = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER)
    torch.manual_seed(0)
    gridded = pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER, position_grid=True)
    assert gridded.unet.config.in_channels == plain.unet.config.in_channels + 2
    for p in (plain, gridded):
        p.set_progress_bar_config(disable=True)
    graph = {"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}
    a = plain([graph], num_inference_steps=2, generator=gens(1), output_type="np").images
    b = gridded([graph], num_inference_steps=2, generator=gens(1), output_type="np").images
    assert np.allclose(a, b, atol=1e-5)  # zero weights: the grid changes nothing yet
    with torch.no_grad():
        gridded.unet.conv_in.weight[:, -2:].normal_()
    c = gridded([graph], num_inference_steps=2, generator=gens(1), output_type="np").images
    assert not np.allclose(b, c, atol=1e-3)  # once trained on, it is read
    with pytest.raises(ValueError, match="position_grid is for layout-free models"):
        pipeline_from_base(load_base(latent_base), VOCAB, TINY_ENCODER,
                           layout_encoder_kwargs={}, position_grid=True)  # fmt: skip

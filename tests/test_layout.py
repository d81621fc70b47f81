"""The layout pathway: box generator, refinement, layout map, widened UNet, pipeline."""

import math

import pytest
import torch

from sg2image.data.shapes import generate_scene, geometric_predicate, shapes_vocab, size_predicate
from sg2image.eval.layout import overlaps
from sg2image.graph import SceneGraph, Vocab, pack_graphs
from sg2image.models.base import build_tiny_base, load_base
from sg2image.models.layout import (
    LayoutEncoder,
    LayoutGenerator,
    fit_canvas,
    refine_boxes,
    to_boxes,
    to_params,
    widen_conv_in,
)
from sg2image.pipeline import load_pipeline, pipeline_from_base

VOCAB = Vocab.build(["red circle", "blue square", "green triangle"], ["left of", "above"])
TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
TINY_LAYOUT = dict(embed_dim=16, encoder_layers=1, head_layers=2, time_dim=8, sample_steps=4)
GRAPHS = [
    {
        "objects": ["red circle", "blue square"],
        "relationships": [[0, "left of", 1]],
        "boxes": [[0.1, 0.4, 0.3, 0.6], [0.6, 0.4, 0.9, 0.7]],
    },
    {"objects": ["green triangle"], "boxes": [[0.25, 0.25, 0.75, 0.75]]},
]


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_box_parameters_round_trip():
    boxes = torch.tensor([[0.1, 0.2, 0.4, 0.5], [0.5, 0.5, 0.7, 0.9]])
    assert torch.allclose(to_boxes(to_params(boxes, 4)), boxes)
    square = to_params(boxes[:1], 3)  # 0.3 x 0.3: centre and side
    assert torch.allclose(square, torch.tensor([[0.25, 0.35, 0.3]]))


def test_widened_conv_in_starts_as_the_base(tmp_path):
    base = load_base(build_tiny_base(tmp_path, latent=True))
    unet = base.unet
    x = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 5, unet.config.cross_attention_dim)
    before = unet(x, 10, encoder_hidden_states=ctx).sample
    widen_conv_in(unet, 3)
    assert unet.config.in_channels == 7 and unet.conv_in.in_channels == 7
    after = unet(torch.cat([x, torch.randn(2, 3, 8, 8)], 1), 10, encoder_hidden_states=ctx).sample
    assert torch.allclose(before, after, atol=1e-6)


def test_layout_map_covers_boxes_by_cell_share():
    enc = LayoutEncoder(num_objects=4, channels=2)
    with torch.no_grad():
        enc.label_embed.weight.copy_(torch.tensor([[9.0, 9], [1, 0], [0, 1], [1, 1]]))
    # object 1 covers cells x 0-1 fully and half of cell 2 (of 4), rows 0-1; image node skipped
    boxes = torch.tensor([[0.0, 0.0, 0.625, 0.5], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    objs, owner = torch.tensor([1, 0, 2]), torch.tensor([0, 0, 1])
    m = enc(boxes, objs, owner, 2, (4, 4))
    assert m.shape == (2, 2, 4, 4)
    assert m[0, 0, :2].tolist() == [[1, 1, 0.5, 0], [1, 1, 0.5, 0]]
    assert m[0, 0, 2:].abs().sum() == 0 and m[0, 1].abs().sum() == 0  # no image node, no bleed
    assert m[1, 1, 2:, 2:].eq(1).all() and m[1, 1].sum() == 4
    dropped = enc(boxes, objs, owner, 2, (4, 4), drop=torch.tensor([True, False]))
    assert dropped[0].abs().sum() == 0 and torch.equal(dropped[1], m[1])


@pytest.mark.parametrize("kind", ["flow", "regression"])
def test_layout_generator_trains_and_samples(kind):
    torch.manual_seed(0)
    vocab = shapes_vocab()
    gen = LayoutGenerator(vocab.num_objects, vocab.num_predicates, kind=kind, **TINY_LAYOUT)
    graphs = [generate_scene("train", i) for i in range(8)]
    batch = pack_graphs(graphs, vocab)
    n = batch.objs.shape[0]
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        g = torch.Generator().manual_seed(step)
        loss = gen.loss(batch, torch.randn(n, 4, generator=g), torch.rand(n, generator=g))
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns something on 8 graphs
    a = gen.sample(batch, torch.randn(n, 4, generator=torch.Generator().manual_seed(1)))
    b = gen.sample(batch, torch.randn(n, 4, generator=torch.Generator().manual_seed(2)))
    assert a.shape == (n, 4)
    image = batch.objs == 0
    assert torch.allclose(a[image], torch.tensor([0.0, 0.0, 1.0, 1.0]).expand_as(a[image]))
    if kind == "flow":
        assert not torch.allclose(a[~image], b[~image])  # another seed, another layout
    else:
        assert torch.equal(a, b)  # regression: one layout per graph


def _holds(pred, s, o):
    cs, co = ((s[0] + s[2]) / 2, (s[1] + s[3]) / 2), ((o[0] + o[2]) / 2, (o[1] + o[3]) / 2)
    if pred in ("bigger than", "smaller than"):
        return size_predicate((s[2] - s[0]) * 64, (o[2] - o[0]) * 64) == pred
    return geometric_predicate(cs, co) == pred


def test_refinement_satisfies_predicates_gap_and_canvas():
    vocab = shapes_vocab()
    # every box starts in the same wrong place: the refinement must pull them apart
    graph = SceneGraph(
        objects=["red circle", "blue square", "green triangle"],
        relationships=[(0, "left of", 1), (2, "above", 1), (0, "bigger than", 2)],
        boxes=[(0.4, 0.4, 0.6, 0.6)] * 3,
    )
    batch = pack_graphs([graph], vocab)
    start = batch.boxes + torch.randn_like(batch.boxes) * 0.01
    boxes = refine_boxes(start, batch, vocab.predicate_names, steps=300)
    b = boxes[:3].tolist()
    for s, p, o in graph.relationships:
        assert _holds(p, b[s], b[o]), (p, b[s], b[o])
    for i in range(3):
        side = (b[i][2] - b[i][0]) * 64
        assert 9.5 <= side <= 22.5 and min(b[i]) >= 1.5 / 64 and max(b[i]) <= 1 - 1.5 / 64
        for j in range(i + 1, 3):
            gap_x = max(b[i][0] - b[j][2], b[j][0] - b[i][2])
            gap_y = max(b[i][1] - b[j][3], b[j][1] - b[i][3])
            assert max(gap_x, gap_y) * 64 >= 1.9
    assert torch.equal(boxes[3], start[3])  # the image node is left alone


def test_refinement_of_a_graph_does_not_depend_on_its_batch():
    vocab = shapes_vocab()
    graphs = [generate_scene("test", i) for i in range(6)]
    g = torch.Generator().manual_seed(0)
    boxes = [torch.rand(len(s.objects) + 1, 2, generator=g) * 0.6 for s in graphs]
    boxes = [torch.cat([b, b + 0.3], 1) for b in boxes]  # 19 px boxes, overlapping at random

    def refine(idx):
        batch = pack_graphs([graphs[i] for i in idx], vocab)
        out = refine_boxes(torch.cat([boxes[i] for i in idx]), batch, vocab.predicate_names)
        return out.split([len(graphs[i].objects) + 1 for i in idx])

    together = refine(range(6))
    for i in range(6):
        assert torch.equal(refine([i])[0], together[i])
        assert not overlaps(together[i][:-1].tolist(), gap=2 / 64)


def test_refinement_settles_a_size_chain_at_the_side_bound():
    # 0 > 1 > 2 and 0 > 3 by 1.3, all starting at 10 px (the smallest side allowed): the
    # sides held at the bound must not soak up the steps (5 steps here; 10 if they did)
    vocab = shapes_vocab()
    graph = SceneGraph(
        objects=["red circle", "blue square", "green triangle", "red square"],
        relationships=[(0, "bigger than", 1), (1, "bigger than", 2), (3, "smaller than", 0)],
    )
    batch = pack_graphs([graph], vocab)
    corners = torch.tensor([[0.05, 0.4], [0.4, 0.4], [0.75, 0.4], [0.4, 0.75], [0.0, 0.0]])
    start = torch.cat([corners, corners + 0.15], 1)
    start[4] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # the image node
    boxes = refine_boxes(start, batch, vocab.predicate_names, steps=5)
    side = ((boxes[:, 2] - boxes[:, 0]) * 64).tolist()
    assert side[0] >= 1.3 * side[1] and side[1] >= 1.3 * side[2] and side[0] >= 1.3 * side[3]
    assert min(side[:4]) >= 10 - 1e-4 and max(side[:4]) <= 22 + 1e-4


def test_midpoint_sampler_follows_the_flow_closer_than_euler_at_equal_cost():
    vocab = shapes_vocab()
    with pytest.raises(ValueError, match="sampler: 'rk4' is not one of"):
        LayoutGenerator(vocab.num_objects, vocab.num_predicates, sampler="rk4")
    gen = LayoutGenerator(vocab.num_objects, vocab.num_predicates, **TINY_LAYOUT)
    # a flow with a known solution: centres turn a quarter round the canvas centre
    gen.velocity = lambda obj, pred, edges, x, t: (
        torch.stack([-x[:, 1], x[:, 0], 0 * x[:, 2], 0 * x[:, 3]], 1) * (math.pi / 2)
    )
    batch = pack_graphs([generate_scene("test", i) for i in range(4)], vocab)
    noise = torch.randn(batch.objs.shape[0], 4, generator=torch.Generator().manual_seed(0)) / 4
    turned = torch.stack([-noise[:, 1], noise[:, 0], noise[:, 2], noise[:, 3]], 1)
    exact = fit_canvas(to_boxes((turned + 1) / 2))
    real = batch.objs != 0

    def error(steps, sampler):
        gen.register_to_config(sample_steps=steps, sampler=sampler)
        return (gen.sample(batch, noise) - exact)[real].abs().mean()

    # 8 velocities each: second order against first
    assert error(4, "midpoint") < error(8, "euler") / 3


@pytest.fixture(scope="module")
def layout_pipe(tmp_path_factory):
    torch.manual_seed(0)
    base = load_base(build_tiny_base(tmp_path_factory.mktemp("base"), latent=True))
    p = pipeline_from_base(
        base, VOCAB, TINY_ENCODER, dict(max_triples=4), layout_encoder_kwargs=dict(channels=3)
    )
    # register_modules, not assignment: diffusers records a component set after a None one
    # in model_index.json only this way.
    p.register_modules(
        layout_generator=LayoutGenerator(
            VOCAB.num_objects,
            VOCAB.num_predicates,
            refine=dict(steps=5, side_range=None),
            **TINY_LAYOUT,
        )
    )
    with torch.no_grad():  # a trained model reads its map; an untrained one would ignore it
        p.unet.conv_in.weight[:, 4:].normal_(0, 0.5)
    p.set_progress_bar_config(disable=True)
    return p


def test_layout_pipeline_predicted_and_given(layout_pipe):
    p = layout_pipe
    assert p.has_layout and p.unet.config.in_channels == 4 + 3 and p.latent_channels == 4
    out = p(GRAPHS, num_inference_steps=2, generator=gens(2), output_type="pt")
    assert out.images.shape[0] == 2 and len(out.boxes) == 2 and len(out.boxes[0]) == 2
    again = p(GRAPHS, num_inference_steps=2, generator=gens(2), output_type="pt")
    assert torch.equal(out.images, again.images) and out.boxes == again.boxes
    given = p(GRAPHS, num_inference_steps=2, generator=gens(2), output_type="pt", layout="given")
    assert torch.allclose(torch.tensor(given.boxes[0]), torch.tensor(GRAPHS[0]["boxes"]))
    moved = [dict(GRAPHS[0], boxes=[[0.6, 0.4, 0.9, 0.7], [0.1, 0.4, 0.3, 0.6]]), GRAPHS[1]]
    other = p(moved, num_inference_steps=2, generator=gens(2), output_type="pt", layout="given")
    assert not torch.allclose(other.images[0], given.images[0])  # the map reaches the UNet
    assert torch.allclose(other.images[1], given.images[1], atol=1e-5)  # and only its image
    no_boxes = [{"objects": ["red circle"]}]
    with pytest.raises(ValueError, match=r"scenes\[0\]: layout='given' needs 'boxes'"):
        p(no_boxes, num_inference_steps=2, layout="given")
    with pytest.raises(ValueError, match="layout: 'drawn' is not one of"):
        p(no_boxes, num_inference_steps=2, layout="drawn")


def test_predicted_boxes_given_back_give_the_same_image(layout_pipe):
    p = layout_pipe
    graphs = [{k: v for k, v in g.items() if k != "boxes"} for g in GRAPHS]
    out = p(graphs, num_inference_steps=2, generator=gens(2), output_type="pt")
    back = [dict(g, boxes=b) for g, b in zip(graphs, out.boxes, strict=True)]
    again = p(back, num_inference_steps=2, generator=gens(2), output_type="pt", layout="given")
    # the same seed starts from the same latents whether the boxes were sampled or given
    assert torch.allclose(out.images, again.images, atol=1e-4)


def test_fit_canvas_moves_boxes_inside_without_slivers():
    boxes = torch.tensor([[-0.1, 0.2, 0.1, 0.4], [0.9, 0.95, 1.2, 1.0], [0.5, 0.5, 0.5, 0.6]])
    fitted = fit_canvas(boxes)
    assert fitted.min() >= 0 and fitted.max() <= 1
    assert torch.allclose(fitted[0], torch.tensor([0.0, 0.2, 0.2, 0.4]))  # moved, same size
    assert torch.allclose(fitted[1], torch.tensor([0.7, 0.95, 1.0, 1.0]))
    assert (fitted[:, 2:] - fitted[:, :2]).min() >= 1 / 64 - 1e-7  # no zero-width box


def test_layout_pipeline_save_load_round_trip(layout_pipe, tmp_path):
    layout_pipe.save_pretrained(tmp_path / "pipe")
    loaded = load_pipeline(tmp_path / "pipe")
    assert loaded.has_layout and loaded.layout_generator.config.refine == {
        "steps": 5,
        "side_range": None,
    }
    a = layout_pipe(GRAPHS, num_inference_steps=2, generator=gens(2), output_type="pt")
    b = loaded(GRAPHS, num_inference_steps=2, generator=gens(2), output_type="pt")
    assert torch.allclose(a.images, b.images, atol=1e-5) and a.boxes == b.boxes


def test_layout_free_pipeline_refuses_given_boxes(tmp_path):
    base = load_base(build_tiny_base(tmp_path, latent=True))
    p = pipeline_from_base(base, VOCAB, TINY_ENCODER, dict(max_triples=4))
    p.set_progress_bar_config(disable=True)
    assert not p.has_layout
    out = p(GRAPHS, num_inference_steps=2, generator=gens(2))
    assert out.boxes is None
    with pytest.raises(ValueError, match="layout-free"):
        p(GRAPHS, num_inference_steps=2, layout="given")
    assert math.isfinite(float(out.context.sum()))


def test_depth_ordered_map_paints_the_front_object_over_the_back_one():
    """depth_order adds a second half in which overlapping boxes show the nearer object's
    label alone; the first half is the order-free sum, unchanged; swapping the ranks swaps
    who is seen in the overlap; a depth-ordered encoder refuses to run without ranks."""
    enc = LayoutEncoder(num_objects=3, channels=2, depth_order=True)
    assert enc.out_channels == 4
    with torch.no_grad():
        enc.label_embed.weight.copy_(torch.tensor([[9.0, 9], [1, 0], [0, 1]]))
        enc.front_embed.weight.copy_(torch.tensor([[9.0, 9], [1, 0], [0, 1]]))
    # objects 1 and 2 overlap on the 2 x 2 cells of rows 1-2, columns 1-2 (of 4 x 4)
    boxes = torch.tensor([[0.0, 0.0, 0.75, 0.75], [0.25, 0.25, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    objs, owner = torch.tensor([1, 2, 0]), torch.tensor([0, 0, 0])
    front_1 = enc(boxes, objs, owner, 1, (4, 4), depth=torch.tensor([1, 0, 0]))
    front_2 = enc(boxes, objs, owner, 1, (4, 4), depth=torch.tensor([0, 1, 0]))
    plain = LayoutEncoder(num_objects=3, channels=2)
    with torch.no_grad():
        plain.label_embed.weight.copy_(enc.label_embed.weight)
    assert torch.allclose(front_1[:, :2], plain(boxes, objs, owner, 1, (4, 4)))
    overlap = (slice(None), slice(1, 3), slice(1, 3))
    assert torch.allclose(
        front_1[0, 2:][overlap], torch.tensor([1.0, 0])[:, None, None].expand(2, 2, 2), atol=1e-5
    )  # noqa: E501
    assert torch.allclose(
        front_2[0, 2:][overlap], torch.tensor([0.0, 1])[:, None, None].expand(2, 2, 2), atol=1e-5
    )  # noqa: E501
    # outside the overlap each box is seen whole in both orders
    assert front_1[0, 3, 3, 3] == 1 and front_2[0, 2, 0, 0] == 1
    with pytest.raises(ValueError, match="depth"):
        enc(boxes, objs, owner, 1, (4, 4))


def test_refinement_overlaps_depth_pairs_and_keeps_the_gap_elsewhere():
    """Depth pairs ('in front of' / 'behind') are pulled to overlap by 4 px each way, each box
    poking out of the other, and exempt from the gap; every other pair keeps it. Without the
    exemption the refinement pulled all depth pairs apart (0 of 638 overlapping)."""
    from sg2image.data.shapes import generate_scene, shapes_vocab
    from sg2image.eval.layout import score_layouts
    from sg2image.graph import pack_graphs
    from sg2image.pipeline import unpack_boxes

    vocab = shapes_vocab("depth")
    graphs = [generate_scene("test", i, "depth") for i in range(60)]
    batch = pack_graphs(graphs, vocab)
    torch.manual_seed(0)
    noisy = (batch.boxes + torch.randn_like(batch.boxes) * 0.03).clamp(0, 1)
    before = score_layouts(graphs, unpack_boxes(batch, noisy))
    refined = refine_boxes(noisy, batch, vocab.predicate_names, steps=50)
    after = score_layouts(graphs, unpack_boxes(batch, refined))
    assert before["relation_accuracy"] < 0.95 and before["overlap_rate"] > 0
    assert after["relation_accuracy"] == 1.0 and after["overlap_rate"] == 0.0
    assert sum(p in ("in front of", "behind") for g in graphs for _, p, _ in g.relationships) > 10


def test_instance_slots_paint_each_objects_index_and_carry_no_order():
    """instance_slots: object k of an image adds slot vector k over its box (its label's
    vector too); slots add up where boxes overlap, so swapping which object is first swaps
    nothing but the slots; an image with more objects than slots is refused."""
    from sg2image.models.layout import instance_index

    assert instance_index(torch.tensor([0, 0, 1, 1, 1, 2]), 3).tolist() == [0, 1, 0, 1, 2, 0]
    assert instance_index(torch.tensor([1, 1]), 3).tolist() == [0, 1]  # image 0 has none
    enc = LayoutEncoder(num_objects=3, channels=2, instance_slots=2)
    with torch.no_grad():
        enc.label_embed.weight.zero_()
        enc.slot_embed.weight.copy_(torch.tensor([[1.0, 0], [0, 1]]))
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]])
    objs, owner = torch.tensor([1, 2]), torch.tensor([0, 0])
    out = enc(boxes, objs, owner, 1, (2, 2))
    assert out[0, :, 0, 0].tolist() == [1.0, 0.0] and out[0, :, 0, 1].tolist() == [0.0, 1.0]
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)  # the same box twice: slots add up
    assert enc(whole, objs, owner, 1, (2, 2))[0, :, 1, 1].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="3 objects; this layout encoder has 2 instance slots"):
        enc(torch.cat([boxes, whole[:1]]), torch.tensor([1, 2, 1]), torch.zeros(3).long(), 1,
            (2, 2))  # fmt: skip

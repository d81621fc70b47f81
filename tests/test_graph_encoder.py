import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sg2image.graph import IN_IMAGE, SceneGraph, Vocab, pack_graphs
from sg2image.models.graph_encoder import GraphEncoderOutput, SceneGraphEncoder, local_tokens

OBJECTS = [f"obj{i}" for i in range(12)]
PREDICATES = ["left of", "right of", "above", "below", "on", "near"]
VOCAB = Vocab.build(OBJECTS, PREDICATES)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder(seed=0, **kw) -> SceneGraphEncoder:
    torch.manual_seed(seed)
    cfg = dict(embed_dim=16, hidden_dim=24, triple_hidden_dim=20, num_layers=2, global_dim=8)
    cfg.update(kw)
    return SceneGraphEncoder(VOCAB.num_objects, VOCAB.num_predicates, **cfg).eval()


def mixed_graphs() -> list[SceneGraph]:
    return [
        SceneGraph(
            objects=["obj0", "obj1", "obj2"], relationships=[(0, "left of", 1), (2, "on", 1)]
        ),
        SceneGraph(objects=["obj3", "obj4"]),  # no real relations: only __in_image__ triples
        SceneGraph(objects=["obj5"]),  # a single object
        SceneGraph(
            objects=[f"obj{i}" for i in range(9)],
            relationships=[(i, PREDICATES[i % 6], j) for i in range(9) for j in range(9) if i < j],
        ),
    ]


def random_graph(rng: random.Random, max_objects=6) -> SceneGraph:
    n = rng.randint(1, max_objects)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    rels = [
        (i, rng.choice(PREDICATES), j) for i, j in rng.sample(pairs, rng.randint(0, len(pairs)))
    ]
    return SceneGraph(objects=[rng.choice(OBJECTS) for _ in range(n)], relationships=rels)


def test_output_shapes_mixed_sizes():
    graphs = mixed_graphs()
    batch = pack_graphs(graphs, VOCAB)
    n_obj, n_tri, n_graph = batch.objs.numel(), batch.triples.shape[0], len(graphs)
    assert (n_obj, n_tri) == (3 + 2 + 1 + 9 + 4, (2 + 3) + 2 + 1 + (36 + 9))
    out = tiny_encoder().encode(batch)
    assert isinstance(out, GraphEncoderOutput)
    assert out.obj_vecs.shape == (n_obj, 16)
    assert out.pred_vecs.shape == (n_tri, 16)
    assert out.triple_vecs.shape == (n_tri, 48)
    assert out.global_vec.shape == (n_graph, 8)
    for t in (out.obj_vecs, out.pred_vecs, out.triple_vecs, out.global_vec):
        assert torch.isfinite(t).all()
    # triple_vecs is [s; p; o] of the final vectors
    s, o = batch.triples[:, 0], batch.triples[:, 2]
    torch.testing.assert_close(
        out.triple_vecs, torch.cat([out.obj_vecs[s], out.pred_vecs, out.obj_vecs[o]], 1)
    )


def test_batched_equals_alone_and_order_invariant():
    enc = tiny_encoder()
    graphs = mixed_graphs()
    with torch.no_grad():
        together = enc.encode(pack_graphs(graphs, VOCAB))
        reverse = enc.encode(pack_graphs(graphs[::-1], VOCAB))
        alone = [enc.encode(pack_graphs([g], VOCAB)) for g in graphs]
    torch.testing.assert_close(together.global_vec, torch.cat([a.global_vec for a in alone]))
    torch.testing.assert_close(together.obj_vecs, torch.cat([a.obj_vecs for a in alone]))
    torch.testing.assert_close(together.triple_vecs, torch.cat([a.triple_vecs for a in alone]))
    torch.testing.assert_close(reverse.global_vec, together.global_vec.flip(0))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_batched_equals_alone_random(seed, n_graphs):
    rng = random.Random(seed)
    graphs = [random_graph(rng) for _ in range(n_graphs)]
    enc = tiny_encoder(pooling=rng.choice(["avg", "sum"]))
    with torch.no_grad():
        together = enc.encode(pack_graphs(graphs, VOCAB)).global_vec
        alone = torch.cat([enc.encode(pack_graphs([g], VOCAB)).global_vec for g in graphs])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_save_load_roundtrip(tmp_path):
    enc = tiny_encoder(use_boxes=True, pooling="sum")
    enc.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert list(tmp_path.glob("*.safetensors"))
    loaded = SceneGraphEncoder.from_pretrained(tmp_path).eval()
    assert loaded.config.use_boxes and loaded.config.pooling == "sum"
    graphs = [
        SceneGraph(
            objects=["obj0", "obj1"],
            relationships=[(0, "above", 1)],
            boxes=[(0, 0, 0.5, 0.5), (0.2, 0.5, 1, 1)],
        ),
        SceneGraph(objects=["obj2"], boxes=[(0.1, 0.1, 0.9, 0.9)]),
    ]
    batch = pack_graphs(graphs, VOCAB)
    with torch.no_grad():
        a, b = enc.encode(batch), loaded.encode(batch)
    for name in ("obj_vecs", "pred_vecs", "triple_vecs", "global_vec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_boxes_matter_and_are_required():
    enc = tiny_encoder(use_boxes=True)
    g = [SceneGraph(objects=["obj0", "obj1"], relationships=[(0, "above", 1)])]
    batch = pack_graphs(g, VOCAB)
    with pytest.raises(ValueError, match="use_boxes"):
        enc.encode(batch)
    boxes = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]])
    with torch.no_grad():
        v1 = enc(
            batch.objs, batch.triples, batch.obj_to_img, batch.triple_to_img, 1, boxes
        ).global_vec
        v2 = enc(
            batch.objs, batch.triples, batch.obj_to_img, batch.triple_to_img, 1, boxes.flip(0)
        ).global_vec
    assert not torch.allclose(v1, v2)


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling"):
        tiny_encoder(pooling="max")


def test_paper_scale_init_keeps_signal_and_gradients():
    """6 stacked convs at width 512: activations stay O(1), graphs stay distinguishable and
    the embeddings get gradient (why no residual/LayerNorm is needed, with Kaiming init)."""
    torch.manual_seed(0)
    enc = SceneGraphEncoder(VOCAB.num_objects, VOCAB.num_predicates)
    assert len(enc.convs) == 6
    rng = random.Random(0)
    out = enc.encode(pack_graphs([random_graph(rng) for _ in range(8)], VOCAB))
    assert 0.1 < out.obj_vecs.std().item() < 10
    g = out.global_vec
    spread = (g - g.mean(0)).norm(dim=1).mean() / g.norm(dim=1).mean()
    assert spread > 0.05
    g.pow(2).mean().backward()
    assert enc.obj_embed.weight.grad.norm() > 1e-4
    assert enc.pred_embed.weight.grad.norm() > 1e-4


def test_local_tokens_padding_mask_and_truncation():
    graphs = mixed_graphs()  # triples per graph: 5, 2, 1, 45
    batch = pack_graphs(graphs, VOCAB)
    with torch.no_grad():
        out = tiny_encoder().encode(batch)
    tokens, mask = local_tokens(out.triple_vecs, batch.triple_to_img, batch.num_graphs, 4)
    assert tokens.shape == (4, 4, 48) and mask.shape == (4, 4) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [4, 2, 1, 4]
    assert (tokens[~mask] == 0).all()
    in_image = VOCAB.pred_idx(IN_IMAGE)
    starts = [0, 5, 7, 8]
    for b, start in enumerate(starts):
        n = int(mask[b].sum())
        torch.testing.assert_close(tokens[b, :n], out.triple_vecs[start : start + n])
    # what is kept: graph 0 its 2 real relations + 2 __in_image__, graph 3 real ones only
    kept_preds = [batch.triples[s : s + 4, 1] for s in (0, 8)]
    assert (kept_preds[0][:2] != in_image).all() and (kept_preds[0][2:] == in_image).all()
    assert (kept_preds[1] != in_image).all()
    # nothing dropped when max_triples is large enough
    tokens, mask = local_tokens(out.triple_vecs, batch.triple_to_img, batch.num_graphs, 45)
    assert mask.sum().item() == batch.triples.shape[0]
    torch.testing.assert_close(tokens[mask], out.triple_vecs)
    with pytest.raises(ValueError, match="sorted"):
        local_tokens(out.triple_vecs, batch.triple_to_img.flip(0), batch.num_graphs, 4)

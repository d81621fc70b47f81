"""The Shapes world's depth version: pinned splits, its constraints, drawing order, captions,
vocabulary, and the depth ranks of graph.py."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from test_shapes import PINNED_TEST_SHA256, canonical, pixel_squares

from sg2image.data import shapes as S
from sg2image.data.shapes_dataset import ShapesDataset
from sg2image.graph import GraphValidationError, SceneGraph, depth_ranks, parse_graphs

# sha256 of the first 20 scenes of each depth split (canonical JSON, then the renders'
# bytes). If one changes, the depth benchmark changed.
PINNED_DEPTH_SHA256 = {
    "test": "8a3e3e48713e8d0d783812b22d19cce0dfede1a177e56cd8ce776e67a6fa4b42",
    "val": "562d2828525621b5462f722743488678b00dffe629c9daf3f79fe09a6d9a8804",
    "train": "9124c9b3d88503d67d35fa6fdbab0d9746ff59cb0ba0bdcc401ced9fde675591",
}
PINNED_DEPTH_TEST_SCENE_0 = {
    "objects": ["red circle", "yellow square", "cyan triangle", "blue square"],
    "relationships": [
        [3, "smaller than", 0], [2, "below", 1], [1, "above", 2], [0, "right of", 3],
        [1, "behind", 0],
    ],
    "boxes": [
        [0.609375, 0.078125, 0.890625, 0.359375],
        [0.4375, 0.140625, 0.78125, 0.484375],
        [0.390625, 0.625, 0.671875, 0.90625],
        [0.109375, 0.578125, 0.3125, 0.78125],
    ],
}  # fmt: skip
PINNED_DEPTH_CAPTIONS = [
    "a yellow square above a cyan triangle, a blue square and a red circle",
    "a red triangle, a purple circle, a green circle in front of a red square and a yellow "
    "triangle",
]


def split_digest(scenes: list[SceneGraph]) -> str:
    digest = hashlib.sha256(json.dumps([canonical(g) for g in scenes], sort_keys=True).encode())
    for g in scenes:
        digest.update(S.render(g).tobytes())
    return digest.hexdigest()


def depth_pairs(g: SceneGraph) -> dict[frozenset, tuple[int, int]]:
    """{pair: (front, back)} from the graph's depth triples."""
    out = {}
    for s, p, o in g.relationships:
        if p in S.DEPTH_PREDICATES:
            front, back = (s, o) if p == "in front of" else (o, s)
            assert out.setdefault(frozenset((s, o)), (front, back)) == (front, back)
    return out


def mask(label: str, square: tuple[int, int, int]) -> np.ndarray:
    x, y, s = square
    return (S.render(S.SceneGraph(objects=[label], boxes=S._boxes([(x, y, s)]))) !=
            S.BACKGROUND).any(-1)  # fmt: skip


def check_depth_invariants(g: SceneGraph) -> None:
    k = len(g.objects)
    assert S.MIN_OBJECTS <= k <= S.MAX_OBJECTS and len(set(g.objects)) == k
    squares = pixel_squares(g)
    for x, y, s in squares:
        assert S.MIN_SIDE <= s <= S.MAX_SIDE
        assert x >= 2 and y >= 2 and x + s <= 62 and y + s <= 62
    pairs = depth_pairs(g)
    ends = [i for pair in pairs for i in pair]
    assert len(ends) == len(set(ends)), "overlapping pairs form a matching"
    image = S.render(g)
    for i in range(k):
        for j in range(i + 1, k):
            (x, y, s), (xo, yo, so) = squares[i], squares[j]
            gap = max(xo - (x + s), x - (xo + so), yo - (y + s), y - (yo + so))
            if frozenset((i, j)) not in pairs:
                assert gap >= 2, "objects not related by depth keep the plain world's gap"
                continue
            front, back = pairs[frozenset((i, j))]
            assert g.objects[i].split()[0] != g.objects[j].split()[0], "two colours"
            (fx, fy, fs), (bx, by, bs) = squares[front], squares[back]
            x0, y0 = max(fx, bx), max(fy, by)
            x1, y1 = min(fx + fs, bx + bs), min(fy + fs, by + bs)
            assert x1 - x0 >= S.MIN_OVERLAP and y1 - y0 >= S.MIN_OVERLAP
            mf, mb = mask(g.objects[front], squares[front]), mask(g.objects[back], squares[back])
            assert mf[y0:y1, x0:x1].mean() >= S.MIN_COVER <= mb[y0:y1, x0:x1].mean()
            visible = mb & ~mf
            assert visible.sum() >= S.MIN_VISIBLE * mb.sum()
            assert ndimage.label(visible)[1] == 1
            # drawn back to front: the front colour is what is seen where both are
            colour = S.COLOURS[g.objects[front].split()[0]]
            assert (image[mf & mb] == colour).all() and (mf & mb).any()
    for s_, p, o in g.relationships:
        assert s_ != o
        if p in S.DEPTH_PREDICATES:
            continue
        (xs, ys, ss), (xo, yo, so) = squares[s_], squares[o]
        if p in ("bigger than", "smaller than"):
            assert S.size_predicate(ss, so) == p
        else:
            centres = (xs + ss / 2, ys + ss / 2), (xo + so / 2, yo + so / 2)
            assert p == S.geometric_predicate(*centres)
    assert len(set(g.relationships)) == len(g.relationships)
    assert 1 <= len(g.relationships) <= k + len(pairs)


def test_vocabularies():
    plain, depth = S.shapes_vocab(), S.shapes_vocab("depth")
    assert plain == S.shapes_vocab("plain") and plain.num_predicates == 7
    assert depth.object_names == plain.object_names
    assert depth.predicate_names == [*plain.predicate_names, "in front of", "behind"]
    assert S.world_predicates("depth") == (*S.PREDICATES, "in front of", "behind")
    with pytest.raises(ValueError, match="unknown Shapes world 'deep'"):
        S.shapes_vocab("deep")


@pytest.mark.parametrize("split", ["test", "val", "train"])
def test_pinned_depth_splits(split):
    assert split_digest(S.make_split(split, 20, world="depth")) == PINNED_DEPTH_SHA256[split]


def test_pinned_depth_scene_and_captions():
    assert canonical(S.generate_scene("test", 0, "depth")) == PINNED_DEPTH_TEST_SCENE_0
    captions = [S.scene_caption("test", i, world="depth") for i in range(2)]
    assert captions == PINNED_DEPTH_CAPTIONS
    # the plain world is as it was, default world or named
    assert split_digest(S.make_split("test", 20, world="plain")) == PINNED_TEST_SHA256


def test_depth_splits_are_seeded_apart():
    for split in S.SPLITS:
        plain = S.make_split(split, 100)
        depth = S.make_split(split, 100, world="depth")
        assert not {json.dumps(canonical(g)) for g in plain} & {
            json.dumps(canonical(g)) for g in depth
        }
    assert S.generate_scene("test", 5, "depth") == S.generate_scene("test", 5, "depth")
    with pytest.raises(ValueError, match="unknown Shapes world"):
        S.make_split("test", 3, world="3d")


def test_depth_test_split_invariants_and_distribution():
    scenes = S.make_split("test", world="depth")
    assert len(scenes) == 1000
    for g in scenes:
        check_depth_invariants(g)
    with_pair = sum(bool(depth_pairs(g)) for g in scenes)
    assert with_pair == 503  # about half the scenes have an overlapping pair (OVERLAP_PROB)
    preds = {p for g in scenes for _, p, _ in g.relationships}
    assert preds == set(S.world_predicates("depth"))
    assert {len(g.objects) for g in scenes} == {2, 3, 4, 5}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**40))
def test_depth_invariants_on_any_train_scene(index):
    check_depth_invariants(S.generate_scene("train", index, "depth"))


def test_render_draws_back_to_front():
    boxes = [(10 / 64, 10 / 64, 30 / 64, 30 / 64), (20 / 64, 20 / 64, 40 / 64, 40 / 64)]
    objects = ["red square", "blue square"]
    for rels, top in (
        ([], "blue"),  # no depth triples: the graph's order, as the plain world draws
        ([(0, "in front of", 1)], "red"),
        ([(1, "behind", 0)], "red"),
        ([(0, "behind", 1)], "blue"),
    ):
        image = S.render(SceneGraph(objects=objects, relationships=rels, boxes=boxes))
        assert tuple(image[25, 25]) == S.COLOURS[top]
        assert tuple(image[15, 15]) == S.COLOURS["red"]
        assert tuple(image[35, 35]) == S.COLOURS["blue"]
    cycle = SceneGraph(objects=objects, relationships=[(0, "in front of", 1), (0, "behind", 1)],
                       boxes=boxes)  # fmt: skip
    with pytest.raises(ValueError, match=r"relationships\[1\]: 'behind' makes a depth cycle"):
        S.render(cycle)


def test_depth_captions():
    g = SceneGraph(objects=["red circle", "blue square"], relationships=[(0, "in front of", 1)])
    seen = {S.caption(g, np.random.default_rng(seed)) for seed in range(100)}
    assert "a red circle in front of a blue square" in seen
    g = SceneGraph(objects=["red circle", "blue square"], relationships=[(1, "behind", 0)])
    seen = {S.caption(g, np.random.default_rng(seed)) for seed in range(100)}
    assert "a blue square behind a red circle" in seen
    phrased = [S.scene_caption("val", i, world="depth") for i in range(300)]
    assert any(" in front of a " in c for c in phrased) and any(" behind a " in c for c in phrased)
    assert S.PREDICATE_PHRASES == {p: S.RELATION_PHRASES[p] for p in S.PREDICATES}


def test_depth_dataset():
    ds = ShapesDataset("test", size=4, world="depth")
    item = ds[1]
    assert item["graph"] == S.generate_scene("test", 1, "depth")
    assert item["caption"] == S.scene_caption("test", 1, world="depth")
    fresh = ShapesDataset("test", size=4, world="depth", caption_seed=3)[0]["caption"]
    assert fresh == ShapesDataset("test", size=4, world="depth", caption_seed=3)[0]["caption"]
    with pytest.raises(ValueError, match="unknown Shapes world"):
        ShapesDataset("test", size=4, world="flat")


def chain(*rels: tuple[int, str, int], n: int = 4) -> SceneGraph:
    return SceneGraph(objects=[f"o{i}" for i in range(n)], relationships=list(rels))


def test_depth_ranks():
    assert depth_ranks(chain()) == [0, 0, 0, 0]
    g = chain((0, "in front of", 1), (2, "behind", 1), (3, "left of", 0))
    assert depth_ranks(g) == [2, 1, 0, 0]  # 0 over 1 over 2
    g = chain((0, "in front of", 1), (0, "in front of", 3), (3, "in front of", 2))
    assert depth_ranks(g) == [2, 0, 0, 1]  # 1 + the largest rank below it
    with pytest.raises(GraphValidationError) as err:
        depth_ranks(chain((0, "in front of", 2), (2, "in front of", 1), (1, "left of", 0),
                          (1, "in front of", 0)))  # fmt: skip
    assert err.value.problems == [
        "relationships[3]: 'in front of' makes a depth cycle between objects 1 and 0"
    ]
    with pytest.raises(GraphValidationError, match=r"relationships\[1\]: 'behind' makes a "
                       r"depth cycle between objects 0 and 1"):  # fmt: skip
        depth_ranks(chain((0, "in front of", 1), (0, "behind", 1)))


def test_validation_checks_depth_order_with_a_depth_vocabulary():
    scene = {
        "objects": ["red circle", "blue square", "green triangle"],
        "relationships": [[0, "in front of", 1], [1, "in front of", 2], [2, "in front of", 0]],
    }
    with pytest.raises(GraphValidationError) as err:
        parse_graphs([scene], vocab=S.shapes_vocab("depth"))
    assert err.value.problems == [
        "scenes[0].relationships[2]: 'in front of' makes a depth cycle between objects 2 and 0"
    ]
    # a vocabulary without depth predicates says they are unknown, not a cycle
    with pytest.raises(GraphValidationError, match="unknown predicate 'in front of'"):
        parse_graphs(scene, vocab=S.shapes_vocab())
    scene["relationships"] = [[0, "in front of", 1], [2, "behind", 1]]
    assert parse_graphs(scene, vocab=S.shapes_vocab("depth"))[0].relationships[1][1] == "behind"

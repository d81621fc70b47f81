"""The Shapes world: determinism (pinned), the spec's invariants, renderer, captions, dataset."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sg2image.data import shapes as S
from sg2image.data.shapes_dataset import ShapesDataset
from sg2image.graph import SceneGraph

# sha256 of the first 20 test scenes (canonical JSON) followed by their renders' bytes.
# If this changes, the benchmark changed: every published number would be incomparable.
PINNED_TEST_SHA256 = "28c11aef6481d4060c63b6be3f47d66e7ade288eeba3586292b1d8ee53d498f5"
PINNED_TEST_SCENE_0 = {
    "objects": ["yellow circle", "yellow square", "green triangle"],
    "relationships": [[2, "right of", 0], [0, "above", 1], [0, "left of", 2]],
    "boxes": [
        [0.21875, 0.109375, 0.5, 0.390625],
        [0.640625, 0.625, 0.921875, 0.90625],
        [0.609375, 0.078125, 0.890625, 0.359375],
    ],
}
PINNED_TEST_CAPTIONS = [
    "a yellow square, a yellow circle and a green triangle",
    "a red triangle, a blue triangle and a yellow triangle",
    "a purple triangle, a cyan circle, a blue circle, a red triangle and a green circle",
]


def canonical(g: SceneGraph) -> dict:
    # Our own serialisation, so the pin does not depend on SceneGraph.to_json's format.
    return {
        "objects": list(g.objects),
        "relationships": [list(r) for r in g.relationships],
        "boxes": [list(b) for b in g.boxes],
    }


def pixel_squares(g: SceneGraph) -> list[tuple[int, int, int]]:
    out = []
    for x0, y0, x1, y1 in g.boxes:
        px = [v * S.IMAGE_SIZE for v in (x0, y0, x1, y1)]
        assert all(v == int(v) for v in px), "boxes must be exact pixel coordinates / 64"
        assert px[2] - px[0] == px[3] - px[1], "bounding boxes are squares"
        out.append((int(px[0]), int(px[1]), int(px[2] - px[0])))
    return out


def check_invariants(g: SceneGraph) -> None:
    assert S.MIN_OBJECTS <= len(g.objects) <= S.MAX_OBJECTS
    assert len(set(g.objects)) == len(g.objects)
    assert all(o in S.OBJECT_NAMES for o in g.objects)
    squares = pixel_squares(g)
    for x, y, s in squares:
        assert S.MIN_SIDE <= s <= S.MAX_SIDE
        assert x >= 2 and y >= 2 and x + s <= 62 and y + s <= 62
    for i, (x, y, s) in enumerate(squares):
        for xo, yo, so in squares[i + 1 :]:
            gap_x = max(xo - (x + s), x - (xo + so))
            gap_y = max(yo - (y + s), y - (yo + so))
            assert max(gap_x, gap_y) >= 2, "bounding squares at least 2 px apart"
    assert 1 <= len(g.relationships) <= len(g.objects)
    assert len(set(g.relationships)) == len(g.relationships)
    for s_, p, o in g.relationships:
        assert s_ != o
        (xs, ys, ss), (xo, yo, so) = squares[s_], squares[o]
        if p in ("bigger than", "smaller than"):
            assert S.size_predicate(ss, so) == p
        else:
            assert p == S.geometric_predicate(
                (xs + ss / 2, ys + ss / 2), (xo + so / 2, yo + so / 2)
            )


def test_constants_follow_the_spec():
    assert S.COLOURS == {
        "red": (220, 50, 50),
        "green": (50, 170, 60),
        "blue": (50, 90, 220),
        "yellow": (235, 215, 60),
        "purple": (150, 70, 200),
        "cyan": (60, 200, 210),
    }
    assert S.BACKGROUND == (128, 128, 128) and S.IMAGE_SIZE == 64
    assert len(S.OBJECT_NAMES) == 18 and S.OBJECT_NAMES[:4] == (
        "red circle",
        "red square",
        "red triangle",
        "green circle",
    )
    assert S.PREDICATES == ("left of", "right of", "above", "below", "bigger than", "smaller than")
    vocab = S.shapes_vocab()
    assert vocab.num_objects == 19 and vocab.num_predicates == 7
    assert vocab.object_names[1:] == list(S.OBJECT_NAMES)


def test_pinned_test_split():
    scenes = S.make_split("test", 20)
    assert canonical(scenes[0]) == PINNED_TEST_SCENE_0
    digest = hashlib.sha256(json.dumps([canonical(g) for g in scenes], sort_keys=True).encode())
    for g in scenes:
        digest.update(S.render(g).tobytes())
    assert digest.hexdigest() == PINNED_TEST_SHA256
    assert [S.scene_caption("test", i) for i in range(3)] == PINNED_TEST_CAPTIONS


def test_generation_is_a_pure_function():
    for split in S.SPLITS:
        assert S.generate_scene(split, 7) == S.generate_scene(split, 7)
    assert S.generate_scene("train", 0) != S.generate_scene("val", 0)
    assert S.make_split("val", 5, start=3) == [S.generate_scene("val", i) for i in range(3, 8)]
    assert len(S.make_split("test")) == S.TEST_SIZE == 1000
    assert len(S.make_split("test", start=990)) == 10


def test_split_errors():
    with pytest.raises(ValueError, match="unknown Shapes split"):
        S.generate_scene("dev", 0)
    with pytest.raises(ValueError, match="outside"):
        S.generate_scene("test", 1000)
    with pytest.raises(ValueError, match="outside"):
        S.make_split("val", 1001)
    with pytest.raises(ValueError, match="no fixed size"):
        S.make_split("train")


def test_invariants_on_the_test_split():
    scenes = S.make_split("test")
    for g in scenes:
        check_invariants(g)
    # the distribution the spec asks for: every count, label and predicate occurs
    assert {len(g.objects) for g in scenes} == {2, 3, 4, 5}
    assert {o for g in scenes for o in g.objects} == set(S.OBJECT_NAMES)
    assert {p for g in scenes for _, p, _ in g.relationships} == set(S.PREDICATES)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**40))
def test_invariants_on_any_train_scene(index):
    check_invariants(S.generate_scene("train", index))


def test_geometric_and_size_rules():
    # image y points down: a subject whose centre is lower is "below"
    assert S.geometric_predicate((0, 0), (10, 0)) == "left of"
    assert S.geometric_predicate((10, 0), (0, 0)) == "right of"
    assert S.geometric_predicate((0, 0), (0, 10)) == "above"
    assert S.geometric_predicate((0, 10), (0, 0)) == "below"
    # sg2im's boundaries: theta = pi/4 is "below", -pi/4 "right of", +-3pi/4 "left of"
    assert S.geometric_predicate((1, 1), (0, 0)) == "below"
    assert S.geometric_predicate((1, -1), (0, 0)) == "right of"
    assert S.geometric_predicate((-1, -1), (0, 0)) == "left of"
    assert S.geometric_predicate((-1, 1), (0, 0)) == "left of"
    assert S.size_predicate(20, 16) == "bigger than"
    assert S.size_predicate(16, 20) == "smaller than"
    assert S.size_predicate(19, 16) is None


def one(label: str, x: int, y: int, s: int) -> SceneGraph:
    return SceneGraph(objects=[label], boxes=[(x / 64, y / 64, (x + s) / 64, (y + s) / 64)])


def test_render_shapes_exactly():
    bg = np.array(S.BACKGROUND)
    im = S.render(one("blue square", 5, 7, 12))
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    mask = (im != bg).any(-1)
    assert mask.sum() == 144 and mask[7:19, 5:17].all()
    assert (im[mask] == S.COLOURS["blue"]).all()

    im = S.render(one("red circle", 10, 10, 20))
    mask = (im != bg).any(-1)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 10, 29)
    assert abs(mask.sum() - math.pi * 100) < 20
    assert not mask[10, 10] and mask[20, 20]

    im = S.render(one("green triangle", 10, 10, 21))
    mask = (im != bg).any(-1)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 30, 10, 30)
    assert np.flatnonzero(mask[10]).tolist() == [20]  # apex: middle of the top edge
    assert mask[30, 10:31].all()  # base: the whole bottom edge
    assert abs(mask.sum() - 21 * 21 / 2) < 15


def test_render_other_sizes_and_errors():
    g = S.generate_scene("test", 3)
    big = S.render(g, 128)
    assert big.shape == (128, 128, 3)
    # a 2x render covers the same shapes: its 2x2 subsampling matches the 64 render closely
    assert (big[::2, ::2] == S.render(g)).all(-1).mean() > 0.97
    with pytest.raises(ValueError, match="boxes"):
        S.render(SceneGraph(objects=["red circle"]))
    with pytest.raises(ValueError, match="not a Shapes label"):
        S.render(SceneGraph(objects=["sheep"], boxes=[(0.1, 0.1, 0.5, 0.5)]))


def test_render_is_fast():
    import time

    scenes = S.make_split("test")
    t = time.perf_counter()
    for g in scenes:
        S.render(g)
    assert time.perf_counter() - t < 3.0  # ~0.2 s; generous so a loaded machine passes


def test_captions():
    with_relation = 0
    for i in range(300):
        g = S.generate_scene("val", i)
        text = S.scene_caption("val", i)
        assert text == S.scene_caption("val", i, g)
        for label in g.objects:
            assert len(re.findall(rf"\ba {label}\b", text)) == 1, (label, text)
        phrases = [p for p in S.PREDICATE_PHRASES.values() if f" {p} a " in text]
        assert len(phrases) <= 1
        with_relation += bool(phrases)
        items = len(g.objects) - len(phrases)  # a phrased relation names two objects
        assert text.count(" and ") == (items > 1) and text.count(", ") == max(items - 2, 0)
        if phrases:
            # the phrased relation is one of the graph's, subject first
            m = re.search(rf"a ([a-z]+ [a-z]+) {phrases[0]} a ([a-z]+ [a-z]+)", text)
            s, o = g.objects.index(m.group(1)), g.objects.index(m.group(2))
            preds = [p for s_, p, o_ in g.relationships if (s_, o_) == (s, o)]
            assert phrases[0] in [S.PREDICATE_PHRASES[p] for p in preds]
    assert 0.4 < with_relation / 300 < 0.6


def test_caption_format():
    g = SceneGraph(
        objects=["red circle", "blue square", "yellow triangle"],
        relationships=[(0, "left of", 1)],
        boxes=None,
    )
    seen = {S.caption(g, np.random.default_rng(seed)) for seed in range(200)}
    assert "a red circle, a blue square and a yellow triangle" in seen
    assert "a red circle to the left of a blue square and a yellow triangle" in seen
    assert "a yellow triangle and a red circle to the left of a blue square" in seen
    assert S.caption(SceneGraph(objects=["red circle"]), np.random.default_rng(0)) == (
        "a red circle"
    )


def test_dataset_items():
    ds = ShapesDataset("test", size=8, start=4)
    assert len(ds) == 8
    item = ds[0]
    assert set(item) == {"pixel_values", "graph", "caption", "index"}
    x = item["pixel_values"]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert item["index"] == 4 and item["graph"] == S.generate_scene("test", 4)
    assert item["caption"] == S.scene_caption("test", 4)
    expected = torch.from_numpy(S.render(item["graph"])).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(x, expected)
    with pytest.raises(IndexError):
        ds[8]

    assert ShapesDataset("test", size=2, image_size=32)[1]["pixel_values"].shape == (3, 32, 32)
    assert len(ShapesDataset("val")) == 1000
    with pytest.raises(ValueError):
        ShapesDataset("test", size=10, start=995)
    with pytest.raises(ValueError):
        ShapesDataset("train")


def test_dataset_fresh_captions():
    ds = ShapesDataset("train", size=50, caption_seed=123)
    first = [ds[i]["caption"] for i in range(50)]
    assert first == [ds[i]["caption"] for i in range(50)]  # reproducible
    ds.set_epoch(1)
    second = [ds[i]["caption"] for i in range(50)]
    assert first != second
    assert all(ds[i]["graph"] == S.generate_scene("train", i) for i in range(3))

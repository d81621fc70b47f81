"""Layout scores of the depth world: depth triples judged on boxes (the two boxes overlap),
and the overlap rate without the pairs that must overlap."""

import pytest

from sg2image.data.shapes import make_split
from sg2image.eval.layout import box_relation_holds, depth_pairs, overlaps, score_layouts
from sg2image.graph import DEPTH_PREDICATES, SceneGraph

PX = 1 / 64


@pytest.mark.parametrize("pred", DEPTH_PREDICATES)
def test_depth_triples_hold_where_boxes_overlap_by_the_worlds_minimum(pred):
    a = [10 * PX, 10 * PX, 30 * PX, 30 * PX]
    four = [26 * PX, 12 * PX, 40 * PX, 26 * PX]  # 4 px of a's width, 14 of its height
    three = [27 * PX, 12 * PX, 40 * PX, 26 * PX]
    apart = [34 * PX, 10 * PX, 50 * PX, 26 * PX]
    assert box_relation_holds(pred, a, four) and box_relation_holds(pred, four, a)
    assert box_relation_holds(pred, a, three) is False
    assert box_relation_holds(pred, a, apart) is False
    assert box_relation_holds("next to", a, four) is None  # no rule: not judged


def test_true_depth_boxes_score_one_and_no_overlap():
    graphs = make_split("test", n=200, world="depth")
    boxes = [[list(b) for b in g.boxes] for g in graphs]
    with_pairs = [g for g in graphs if depth_pairs(g)]
    assert len(with_pairs) > 50  # about half of the depth scenes have an overlapping pair
    scores = score_layouts(graphs, boxes)
    depth_triples = sum(p in DEPTH_PREDICATES for g in graphs for _, p, _ in g.relationships)
    plain_judged = score_layouts(
        [SceneGraph(objects=g.objects, boxes=g.boxes,
                    relationships=[r for r in g.relationships if r[1] not in DEPTH_PREDICATES])
         for g in graphs],  # fmt: skip
        boxes,
    )["judged"]
    assert scores["judged"] == plain_judged + depth_triples  # every depth triple judged
    assert scores["relation_accuracy"] == 1.0
    # depth pairs overlap on purpose; every other pair keeps the world's gap
    assert scores["overlap_rate"] == 0.0
    assert all(overlaps([list(b) for b in g.boxes]) for g in with_pairs)


def test_overlap_rate_counts_other_pairs_that_overlap():
    g = SceneGraph(
        objects=["red circle", "blue square", "green triangle"],
        relationships=[(0, "in front of", 1), (2, "left of", 1)],
    )
    assert depth_pairs(g) == {(0, 1)}
    front_back = [[0.1, 0.1, 0.4, 0.4], [0.3, 0.3, 0.6, 0.6]]
    assert score_layouts([g], [[*front_back, [0.7, 0.7, 0.9, 0.9]]])["overlap_rate"] == 0.0
    # the third box now overlaps the second: that pair has no depth triple
    assert score_layouts([g], [[*front_back, [0.5, 0.5, 0.9, 0.9]]])["overlap_rate"] == 1.0

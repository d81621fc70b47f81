"""The oracle on the depth world: exact on ground truth, tells front from back, finds a
partly hidden object by its visible part and loses it when it is not drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_oracle import degrade

from sg2image.data import shapes as S
from sg2image.eval import oracle as O
from sg2image.graph import SceneGraph

SWAP = {"in front of": "behind", "behind": "in front of"}


@pytest.fixture(scope="module")
def depth_split():
    graphs = S.make_split("test", world="depth")
    return graphs, [S.render(g) for g in graphs]


def backs(g: SceneGraph) -> set[int]:
    return {s if p == "behind" else o for s, p, o in g.relationships if p in SWAP}


def test_ground_truth_depth_renders(depth_split):
    graphs, images = depth_split
    report = O.score_images(images, graphs)
    depth_triples = sum(p in SWAP for g in graphs for _, p, _ in g.relationships)
    assert report.occlusion_judged == depth_triples == 638
    # measured: recall 0.9997, relations 0.9980, occlusion 0.9969, placement 0.9979
    assert report.object_recall >= 0.99 and report.relation_accuracy >= 0.99
    assert report.occlusion_accuracy >= 0.99 and report.placement >= 0.99
    assert set(report.per_predicate) == set(S.world_predicates("depth"))
    for counts in report.per_predicate.values():
        assert counts["accuracy"] >= 0.99
    # partly hidden objects found by their visible part: most of the 580 back objects
    # (the others still look like their own shape)
    assert 300 < report.hidden_matches <= sum(len(backs(g)) for g in graphs) == 580
    occl = [report.per_predicate[p] for p in SWAP]
    assert report.occlusion_accuracy == sum(c["correct"] for c in occl) / depth_triples
    # placement stays over the six size and geometric predicates
    json.dumps(report.to_json())


def test_swapped_drawing_order_fails_depth_triples(depth_split):
    graphs, _ = depth_split
    paired = [g for g in graphs if backs(g)]
    swapped = [
        S.render(SceneGraph(objects=g.objects, boxes=g.boxes,
                            relationships=[(s, SWAP.get(p, p), o) for s, p, o in g.relationships]))
        for g in paired
    ]  # fmt: skip
    report = O.score_images(swapped, paired)
    assert report.occlusion_judged == 638 and report.occlusion_accuracy <= 0.02  # measured 0


def test_back_object_not_drawn_is_lost(depth_split):
    graphs, _ = depth_split
    paired = [g for g in graphs if backs(g)]
    for g in paired[:200]:
        keep = [i for i in range(len(g.objects)) if i not in backs(g)]
        drawn = SceneGraph(objects=[g.objects[i] for i in keep], boxes=[g.boxes[i] for i in keep])
        score = O.score_image(S.render(drawn), g)
        assert [m is None for m in score.matches] == [i in backs(g) for i in range(len(g.objects))]
        assert score.occlusion_counts == (0, sum(p in SWAP for _, p, _ in g.relationships))


def test_blurred_noisy_depth_renders(depth_split):
    graphs, images = depth_split
    rng = np.random.default_rng(0)
    report = O.score_images([degrade(im, rng) for im in images], graphs)
    # measured: recall 0.9974, relations 0.9832, occlusion 0.9592
    assert report.object_recall >= 0.98 and report.relation_accuracy >= 0.97
    assert report.occlusion_accuracy >= 0.93


def test_other_sizes_depth(depth_split):
    graphs, _ = depth_split
    report = O.score_images([S.render(g, 128) for g in graphs[:100]], graphs[:100])
    assert report.object_recall >= 0.99 and report.occlusion_accuracy >= 0.97


BOXES = [(10 / 64, 10 / 64, 30 / 64, 30 / 64), (22 / 64, 14 / 64, 40 / 64, 32 / 64)]


def test_depth_rule():
    # a red square over the left part of a blue square
    g = SceneGraph(objects=["red square", "blue square"], relationships=[(0, "in front of", 1)],
                   boxes=BOXES)  # fmt: skip
    image = S.render(g)
    score = O.score_image(image, g)
    assert score.object_recall == 1 and score.occlusion_counts == (1, 1)
    assert score.hidden_matches == 1  # the blue part left visible is no square: found as a part
    assert score.detections[score.matches[1]].label == "blue"
    behind = SceneGraph(objects=g.objects, relationships=[(1, "behind", 0)], boxes=BOXES)
    assert O.score_image(image, behind).occlusion_counts == (1, 1)
    wrong = SceneGraph(objects=g.objects, relationships=[(0, "behind", 1)], boxes=BOXES)
    assert O.score_image(image, wrong).occlusion_counts == (0, 1)
    # apart: no overlap, no depth relation; the same colour: none either
    apart = [(2 / 64, 2 / 64, 14 / 64, 14 / 64), (40 / 64, 40 / 64, 60 / 64, 60 / 64)]
    far = SceneGraph(objects=g.objects, relationships=g.relationships, boxes=apart)
    assert O.score_image(S.render(far), far).occlusion_counts == (0, 1)
    red = SceneGraph(objects=["red square", "red circle"], relationships=[(0, "in front of", 1)],
                     boxes=BOXES)  # fmt: skip
    assert O.score_image(S.render(red), red).occlusion_counts == (0, 1)
    # depth triples are not placement's: judged 0 here
    assert O.score_image(image, g).placement_judged == 0


def test_hidden_part_must_touch_its_front():
    # the graph puts the blue square behind the red one, but the blue part drawn is a bar
    # (no shape) far from the red square: not found
    image = S.render(SceneGraph(objects=["red square"], boxes=BOXES[:1]))
    image[50:54, 30:60] = S.COLOURS["blue"]
    g = SceneGraph(objects=["red square", "blue square"], relationships=[(1, "behind", 0)])
    score = O.score_image(image, g)
    assert score.matches[1] is None and score.hidden_matches == 0
    # the same bar touching the red square is taken as the blue square's visible part
    image[30:34, 12:40] = S.COLOURS["blue"]
    score = O.score_image(image, g)
    assert score.hidden_matches == 1 and score.detections[score.matches[1]].bbox == (12, 30, 40, 34)
    # without a depth triple, a bar is no blue square
    apart = SceneGraph(objects=g.objects, relationships=[(1, "below", 0)])
    assert O.score_image(image, apart).matches[1] is None


def test_plain_world_reports_no_occlusion():
    g = S.generate_scene("test", 0)
    report = O.score_images([S.render(g)], [g])
    assert report.occlusion_accuracy is None and report.occlusion_judged == 0
    assert report.hidden_matches == 0

"""benchmarks/box_tokens.py: on the world's own renders, the true boxes hold every relation,
each blob sits on its box, and renders of the mirrored boxes move every object that has a
side; the same image for both follows nothing."""

import numpy as np
import torch
from test_shapes_base import _benchmark_script

from sg2image.data.shapes import make_split, render

box_tokens = _benchmark_script("box_tokens")


def test_renders_sit_on_their_boxes_and_follow_the_mirror():
    graphs = make_split("test", n=24, world="depth")
    boxes = [np.array(g.boxes) for g in graphs]
    mirrors = [g.model_copy(update={"boxes": box_tokens.mirrored(torch.tensor(g.boxes)).tolist()})
               for g in graphs]  # fmt: skip
    renders = [render(g) for g in graphs]
    mirror_renders = [render(m) for m in mirrors]
    truth = box_tokens.scores(graphs, boxes, renders, mirror_renders)
    assert truth["box_relations"] == 1.0 and truth["relations_judged"] >= 24
    assert truth["centre_error"] < 0.03 and truth["objects"] >= 40
    assert truth["moves"] >= 0.95 and truth["objects_movable"] >= 20
    ignored = box_tokens.scores(graphs, boxes, renders, renders)
    assert ignored["moves"] == 0.0
    shifted = [b + np.array([0.2, 0, 0.2, 0]) for b in boxes]  # boxes that are not drawn
    assert box_tokens.scores(graphs, shifted, renders, renders)["centre_error"] > 0.15

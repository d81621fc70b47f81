"""How good are layouts: relation accuracy of the boxes themselves, overlaps, spread, diversity.

Boxes are judged by the rules that made the Shapes graphs (sg2im's angle rule on the box
centres; "bigger than" when one side is at least 1.25 times the other; the depth world's
"in front of" / "behind" when the two boxes overlap by at least MIN_OVERLAP pixels each
way, which boxes can show; which one is in front they cannot), so true Shapes boxes score
1.0. Predicates without such a rule are not judged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sg2image.data.shapes import IMAGE_SIZE, MIN_OVERLAP, geometric_predicate, size_predicate
from sg2image.graph import DEPTH_PREDICATES, SceneGraph, Vocab, pack_graphs
from sg2image.pipeline import unpack_boxes

GEOMETRIC = ("left of", "right of", "above", "below")
SIZE = ("bigger than", "smaller than")


def box_relation_holds(pred: str, s: Sequence[float], o: Sequence[float]) -> bool | None:
    """Whether ``pred`` holds between boxes s and o (x0, y0, x1, y1); None: no rule."""
    if pred in GEOMETRIC:
        cs, co = ((s[0] + s[2]) / 2, (s[1] + s[3]) / 2), ((o[0] + o[2]) / 2, (o[1] + o[3]) / 2)
        return geometric_predicate(cs, co) == pred
    if pred in SIZE:
        side = lambda b: float(np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0)))  # noqa: E731
        return size_predicate(side(s), side(o)) == pred
    if pred in DEPTH_PREDICATES:
        # The intersection's width and height, against the world's minimum (1e-9: true
        # boxes are pixel multiples that meet it exactly).
        w, h = min(s[2], o[2]) - max(s[0], o[0]), min(s[3], o[3]) - max(s[1], o[1])
        return min(w, h) >= MIN_OVERLAP / IMAGE_SIZE - 1e-9
    return None


def depth_pairs(graph: SceneGraph) -> set[tuple[int, int]]:
    """The (i, j), i < j, of every pair a depth triple relates: boxes that must overlap."""
    return {
        (min(s, o), max(s, o)) for s, p, o in graph.relationships if p in DEPTH_PREDICATES
    }


def overlaps(
    boxes: Sequence[Sequence[float]], gap: float = 0.0, exempt: set[tuple[int, int]] = frozenset()
) -> bool:
    """True when two boxes are closer than ``gap`` (or overlap); the pairs (i, j), i < j, in
    ``exempt`` (depth pairs) are not counted."""
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if (i, j) in exempt:
                continue
            a, b = boxes[i], boxes[j]
            sep = max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])
            if sep < gap:
                return True
    return False


def score_layouts(graphs: Sequence[SceneGraph], boxes: Sequence[Sequence]) -> dict:
    """Relation accuracy over the judged triples, their count, the share of scenes with
    overlapping boxes (depth pairs left out: they must overlap), and the standard deviation
    of box sides (pixels of a 64 canvas)."""
    correct = judged = overlapping = 0
    sides = []
    for g, bs in zip(graphs, boxes, strict=True):
        for s, p, o in g.relationships:
            ok = box_relation_holds(p, bs[s], bs[o])
            if ok is not None:
                judged += 1
                correct += int(ok)
        overlapping += int(overlaps(bs, exempt=depth_pairs(g)))
        sides += [np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0)) * 64 for b in bs]
    return {
        "relation_accuracy": correct / judged if judged else None,
        "judged": judged,
        "overlap_rate": overlapping / len(graphs) if graphs else None,
        "side_std_px": float(np.std(sides)) if sides else None,
    }


@torch.no_grad()
def sample_layouts(
    generator, graphs: Sequence[SceneGraph], vocab: Vocab, seed: int, refine: bool = True
) -> list[list[list[float]]]:
    """Boxes of each graph sampled as the pipeline samples them (graph i's noise from a
    generator seeded ``seed + i``), refined with the generator's own settings if ``refine``."""
    batch = pack_graphs(graphs, vocab).to(generator.device)
    dims = generator.config.box_dims
    noise = torch.cat(
        [
            torch.randn(len(g.objects) + 1, dims, generator=torch.Generator().manual_seed(seed + i))
            for i, g in enumerate(graphs)
        ]
    )
    return unpack_boxes(batch, generator.layout(batch, noise, vocab.predicate_names, refine))


def centre_shift(a: Sequence, b: Sequence) -> float:
    """Mean distance (pixels of a 64 canvas) between the box centres of two layouts of the
    same graphs: how much a layout changes with the seed."""
    d = []
    for ga, gb in zip(a, b, strict=True):
        for x, y in zip(ga, gb, strict=True):
            cx = ((x[0] + x[2]) - (y[0] + y[2])) / 2
            cy = ((x[1] + x[3]) - (y[1] + y[3])) / 2
            d.append(np.hypot(cx, cy) * 64)
    return float(np.mean(d)) if d else 0.0


def layout_report(
    generator, graphs: Sequence[SceneGraph], vocab: Vocab, seed: int = 0, batch: int = 500
) -> dict:
    """Raw and refined scores of sampled layouts, their spread against the true boxes, and
    the centre shift between two seeds (refined)."""
    report: dict = {"graphs": len(graphs)}

    def sample(refine: bool, s: int):
        out = []
        for i in range(0, len(graphs), batch):
            out += sample_layouts(generator, graphs[i : i + batch], vocab, s + i, refine)
        return out

    raw, refined, other = sample(False, seed), sample(True, seed), sample(True, seed + 10**6)
    for name, layouts in (("raw", raw), ("refined", refined)):
        report.update({f"{name}_{k}": v for k, v in score_layouts(graphs, layouts).items()})
    if all(g.boxes is not None for g in graphs):
        true = score_layouts(graphs, [[list(b) for b in g.boxes] for g in graphs])
        report["true_side_std_px"] = true["side_std_px"]
    report["centre_shift_px"] = centre_shift(refined, other)
    return report

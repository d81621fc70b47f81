"""Do position-aware graph tokens place objects? A layout-free model with
``conditioner.object_boxes`` predicts a box per object from the graph and embeds it in the
object's token; this asks where its errors come from.

On the first ``--n`` depth test graphs (the benchmark's seeds and sampler: the model's
default), for each object whose colour occurs once in its graph:

* ``box_relations``: the share of the six geometric and size triples that the box head's
  boxes satisfy (``eval.layout.box_relation_holds``): can the boxes be right at all;
* ``centre_error``: the mean distance, in image widths, between the object's drawn blob
  (the oracle's largest blob of its colour) and the centre of the box its token embeds;
* the mirror test: the same graphs and noise, every token's box mirrored left to right
  (x -> 1 - x). ``moves``: of the objects found in both images whose box centre lies at
  least 0.15 from the middle, the share whose blob changes side with it. 0: the drawn
  position does not depend on the tokens' boxes; 1: every object follows its box.

    python benchmarks/box_tokens.py NAME=PIPELINE ... [--n 160]
    # -> benchmarks/results/box_tokens/NAME.json, and one line per model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sg2image.data.shapes import make_split
from sg2image.eval.layout import GEOMETRIC, SIZE, box_relation_holds
from sg2image.eval.oracle import colour_blobs, colour_of
from sg2image.graph import SceneGraph
from sg2image.pipeline import SceneGraphPipeline, build_context
from sg2image.sampling import named_pipeline, sample_arrays

OUT = Path(__file__).resolve().parent / "results" / "box_tokens"
SIDE_MARGIN = 0.15  # a box this close to the middle has no clear side to move to


def mirrored(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes reflected left to right."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([1 - x1, y0, 1 - x0, y1], -1)


@torch.no_grad()
def predicted_boxes(pipe, graphs: list[SceneGraph]) -> list[np.ndarray]:
    """The box head's (objects, 4) boxes of each graph."""
    boxes = build_context(pipe, graphs).boxes.cpu().numpy()
    counts = np.cumsum([len(g.objects) for g in graphs])[:-1]
    return np.split(boxes, counts)


@torch.no_grad()
def draw(pipe, graphs, batch_size: int, mirror: bool) -> list[np.ndarray]:
    head = pipe.conditioner.predict_boxes
    if mirror:  # the tokens embed the mirrored boxes; nothing else changes
        pipe.conditioner.predict_boxes = lambda vecs: mirrored(head(vecs))
    try:
        return sample_arrays(pipe, graphs, batch_size)
    finally:
        pipe.conditioner.predict_boxes = head


def scores(graphs, boxes, images, mirror_images) -> dict:
    held = judged = 0
    errors, moved, movable = [], 0, 0
    for g, b, im, mim in zip(graphs, boxes, images, mirror_images, strict=True):
        for s, p, o in g.relationships:
            if p in GEOMETRIC or p in SIZE:
                judged += 1
                held += bool(box_relation_holds(p, b[s], b[o]))
        colours = [colour_of(name) for name in g.objects]
        blobs, mirror_blobs = colour_blobs(im), colour_blobs(mim)
        size = im.shape[1]
        for i, c in enumerate(colours):
            if colours.count(c) != 1 or c not in blobs:
                continue
            cx, cy = ((b[i][0] + b[i][2]) / 2, (b[i][1] + b[i][3]) / 2)
            bx, by = (v / size for v in blobs[c].centre)
            errors.append(float(np.hypot(bx - cx, by - cy)))
            if abs(cx - 0.5) >= SIDE_MARGIN and c in mirror_blobs:
                movable += 1
                mx = mirror_blobs[c].centre[0] / size
                moved += (bx - 0.5) * (mx - 0.5) < 0 and (mx - 0.5) * (cx - 0.5) < 0
    return {"box_relations": round(held / judged, 4), "relations_judged": judged,
            "centre_error": round(float(np.mean(errors)), 4), "objects": len(errors),
            "moves": round(moved / movable, 4) if movable else None,
            "objects_movable": movable}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", metavar="NAME=PIPELINE")
    ap.add_argument("--n", type=int, default=160, help="depth test graphs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    graphs = [g.model_copy(update={"boxes": None}) for g in make_split("test", n=args.n,
                                                                       world="depth")]
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        models = [named_pipeline(spec) for spec in args.models]
    except ValueError as err:
        ap.error(str(err))
    for name, path in models:
        pipe = SceneGraphPipeline.from_pretrained(path, dtype=torch.float32)
        if pipe.conditioner.box_head is None:
            ap.error(f"{name}: {path} has no box head (conditioner.object_boxes)")
        pipe.set_progress_bar_config(disable=True)
        boxes = predicted_boxes(pipe, graphs)
        images = draw(pipe, graphs, args.batch_size, mirror=False)
        mirror_images = draw(pipe, graphs, args.batch_size, mirror=True)
        result = {"name": name, "pipeline": str(path), "graphs": args.n,
                  "sampler": pipe.default_sampler, "threads": args.threads,
                  **scores(graphs, boxes, images, mirror_images)}  # fmt: skip
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: box head's boxes hold {result['box_relations']:.3f} of "
              f"{result['relations_judged']} triples; blob to box centre "
              f"{result['centre_error']:.3f}; mirrored boxes move {result['moves']} of "
              f"{result['objects_movable']} objects")  # fmt: skip


if __name__ == "__main__":
    main()

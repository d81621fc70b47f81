"""Does a model's depth order come from its graph? Sample each graph twice, as it is and with
every depth relation reversed, from the same boxes and the same noise.

For the first ``--n`` depth test graphs that have a depth triple, the "flipped" graph says
``b in front of a`` wherever the graph says ``a in front of b`` (each depth triple keeps its
subject and object and swaps its predicate, ``in front of`` <-> ``behind``). Both are drawn
from the graph's true boxes (``layout="given"``; boxes carry no order) with the same seeds, so
the two images can differ only through what the model reads from the relations.

For each depth triple whose two objects differ in colour, the drawn front is the colour
with more pixels where the two true boxes overlap (the oracle's depth region and palette):

* ``right`` / ``right_flipped``: the share of depth triples drawn in the order their graph
  says, in each image (unlike the oracle's occlusion accuracy, a pair counts even when an
  outline is lost);
* ``follows``: the share whose drawn front changes from one object to the other when the
  graph is flipped. 0 when the order drawn does not depend on the graph (a fixed order, or
  the map's); 1 when every pair follows it. The oracle's occlusion accuracy on both sets
  is kept as well.

    python benchmarks/depth_flip.py NAME=PIPELINE ... [--n 160]
    # -> benchmarks/results/depth_flip/NAME.json, and one line per model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sg2image.data.shapes import COLOURS, depth_region, generate_scene
from sg2image.eval.oracle import _colour_map, colour_of, score_images
from sg2image.graph import DEPTH_PREDICATES, SceneGraph
from sg2image.pipeline import SceneGraphPipeline
from sg2image.sampling import named_pipeline, sample_arrays

OUT = Path(__file__).resolve().parent / "results" / "depth_flip"
FRONT, BEHIND = "in front of", "behind"
assert set(DEPTH_PREDICATES) == {FRONT, BEHIND}
PALETTE = list(COLOURS)  # the oracle's colour map: entry k + 1 is COLOURS[k]


def depth_test_graphs(n: int) -> list[SceneGraph]:
    """The first ``n`` depth test graphs that have a depth triple, with their true boxes."""
    out, i = [], 0
    while len(out) < n:
        g = generate_scene("test", i, "depth")
        if any(p in DEPTH_PREDICATES for _, p, _ in g.relationships):
            out.append(g)
        i += 1
    return out


def flipped(graph: SceneGraph) -> SceneGraph:
    """The same graph with every depth relation stating the reverse order."""
    swap = {FRONT: BEHIND, BEHIND: FRONT}
    data = graph.to_json()
    data["relationships"] = [[s, swap.get(p, p), o] for s, p, o in graph.relationships]
    return SceneGraph(**data)


def fronts(image: np.ndarray, graph: SceneGraph) -> list[tuple[int | None, int]]:
    """Per depth triple whose two objects differ in colour: (the object whose colour has more
    pixels where the two true boxes overlap, None for neither or a tie; the object the graph
    puts in front)."""
    colours = _colour_map(image)
    size = max(colours.shape)
    out = []
    for s, p, o in graph.relationships:
        cs, co = colour_of(graph.objects[s]), colour_of(graph.objects[o])
        region = depth_region(*(tuple(round(v * size) for v in graph.boxes[i]) for i in (s, o)),
                              size)  # fmt: skip
        if p not in DEPTH_PREDICATES or cs == co or region is None:
            continue
        x0, y0, x1, y1 = region
        seen_s, seen_o = (int((colours[y0:y1, x0:x1] == PALETTE.index(c) + 1).sum())
                          for c in (cs, co))  # fmt: skip
        drawn = s if seen_s > seen_o else o if seen_o > seen_s else None
        out.append((drawn, s if p == FRONT else o))
    return out


def order_scores(images, flipped_images, graphs, flipped_graphs) -> dict:
    right = right_flipped = changed = total = 0
    for im, fim, g, fg in zip(images, flipped_images, graphs, flipped_graphs, strict=True):
        for (a, want), (b, fwant) in zip(fronts(im, g), fronts(fim, fg), strict=True):
            total += 1
            right += a == want
            right_flipped += b == fwant
            changed += a is not None and b is not None and a != b
    return {"depth_triples": total, "right": round(right / total, 4),
            "right_flipped": round(right_flipped / total, 4),
            "follows": round(changed / total, 4)}  # fmt: skip


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", metavar="NAME=PIPELINE")
    ap.add_argument("--n", type=int, default=160, help="depth test graphs with a depth triple")
    ap.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        models = [named_pipeline(spec) for spec in args.models]
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(args.threads)
    graphs = depth_test_graphs(args.n)
    reversed_graphs = [flipped(g) for g in graphs]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, path in models:
        pipe = SceneGraphPipeline.from_pretrained(path, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        call = dict(layout="given", num_inference_steps=args.steps, guidance_scale=args.guidance)
        images = sample_arrays(pipe, graphs, args.batch_size, **call)
        flipped_images = sample_arrays(pipe, reversed_graphs, args.batch_size, **call)
        order = order_scores(images, flipped_images, graphs, reversed_graphs)
        as_is = score_images(images, graphs).to_json()
        flip = score_images(flipped_images, reversed_graphs).to_json()
        result = {"name": name, "pipeline": str(path), "graphs": args.n,
                  "sampler": f"DPM-Solver++ {args.steps} steps, guidance {args.guidance}",
                  "layout": "given (true boxes)", "threads": args.threads, **order,
                  "occlusion": as_is["occlusion_accuracy"],
                  "occlusion_flipped": flip["occlusion_accuracy"],
                  "oracle": as_is, "oracle_flipped": flip}  # fmt: skip
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: drawn as the graph says {order['right']:.3f} as is, "
              f"{order['right_flipped']:.3f} flipped; follows the flip {order['follows']:.3f} "
              f"({order['depth_triples']} depth triples); occlusion "
              f"{result['occlusion']:.3f} / {result['occlusion_flipped']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

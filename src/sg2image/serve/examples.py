"""Example graphs for the editor's "load an example": Shapes test scenes when the model knows
the Shapes names (the depth world's when it knows depth order), else small graphs made from the
model's own vocabulary."""

from __future__ import annotations

from sg2image.graph import (
    DEPTH_PREDICATES,
    IMAGE_OBJECT,
    IN_IMAGE,
    GraphValidationError,
    Vocab,
    parse_graphs,
)


def _shapes_examples(vocab: Vocab, max_objects: int, n: int, boxes: bool) -> list[dict]:
    from sg2image.data.shapes import make_split

    depth = all(vocab.has_predicate(p) for p in DEPTH_PREDICATES)
    world, name = ("depth", "Shapes depth test scene") if depth else ("plain", "Shapes test scene")
    out = []
    for i, g in enumerate(make_split("test", n=3 * n, world=world)):
        data = g.to_json()
        if not boxes:  # a layout-free model has no use for them
            data.pop("boxes", None)
        try:
            parse_graphs(data, vocab=vocab, max_objects=max_objects)
        except GraphValidationError:
            continue
        out.append({"name": f"{name} {i}", "graph": data})
        if len(out) == n:
            break
    return out


def _vocab_examples(vocab: Vocab, max_objects: int, n: int) -> list[dict]:
    objects = [o for o in vocab.object_names if o != IMAGE_OBJECT]
    preds = [p for p in vocab.predicate_names if p != IN_IMAGE]
    out: list[dict] = []
    for k in range(n):
        count = min(max_objects, len(objects), 2 + k % 2)
        names = [objects[(2 * k + j) % len(objects)] for j in range(count)]
        rels = [[j, preds[(k + j) % len(preds)], j + 1] for j in range(count - 1)] if preds else []
        graph = {"objects": names, "relationships": rels}
        if all(e["graph"] != graph for e in out):
            out.append({"name": f"Example {len(out) + 1}", "graph": graph})
    return out


def examples_for(vocab: Vocab, max_objects: int, n: int = 4, boxes: bool = False) -> list[dict]:
    """``boxes``: keep the Shapes scenes' true boxes (for a layout model's layout 'given')."""
    found = _shapes_examples(vocab, max_objects, n, boxes)
    return found or _vocab_examples(vocab, max_objects, n)

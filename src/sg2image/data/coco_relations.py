"""sg2im's synthetic COCO relations: one spatial triple per real object, from the boxes
and the mask-weighted centres (see :mod:`sg2image.data.coco`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sg2image.data.shapes import geometric_predicate


def synthetic_predicate(
    subj_box: Sequence[float],
    obj_box: Sequence[float],
    subj_centre: Sequence[float],
    obj_centre: Sequence[float],
) -> str:
    """sg2im's rule. Boxes are (x0, y0, x1, y1), centres (x, y), image y pointing down.

    Subject box strictly containing the object box -> "surrounding"; strictly inside it ->
    "inside"; else the angle of (subject centre - object centre): |theta| >= 3pi/4 "left
    of", [-3pi/4, -pi/4) "above", [-pi/4, pi/4) "right of", [pi/4, 3pi/4) "below".
    """
    sx0, sy0, sx1, sy1 = subj_box
    ox0, oy0, ox1, oy1 = obj_box
    if sx0 < ox0 and sy0 < oy0 and sx1 > ox1 and sy1 > oy1:
        return "surrounding"
    if sx0 > ox0 and sy0 > oy0 and sx1 < ox1 and sy1 < oy1:
        return "inside"
    return geometric_predicate(tuple(subj_centre), tuple(obj_centre))


def synthetic_relations(
    boxes: Sequence[Sequence[float]],
    centres: Sequence[Sequence[float]],
    rng: np.random.Generator,
) -> list[list[Any]]:
    """One relation per real object, as sg2im draws them: for object i a random other
    object j and a random order, (i, j) or (j, i). A triple may repeat an earlier one
    (sg2im keeps those too); with under 2 objects there is none."""
    n = len(boxes)
    triples: list[list[Any]] = []
    if n < 2:
        return triples
    for i in range(n):
        j = int(rng.integers(n - 1))
        j += j >= i  # a random *other* object
        s, o = (i, j) if rng.random() < 0.5 else (j, i)
        triples.append([s, synthetic_predicate(boxes[s], boxes[o], centres[s], centres[o]), o])
    return triples


def image_rng(seed: int, image_id: int) -> np.random.Generator:
    """The relation rng of one image: a pure function of (seed, image id)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_id)]))

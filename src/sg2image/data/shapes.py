"""The Shapes world: a generated scene-graph domain whose ground truth can be checked exactly.

Specification: /work/shared/reference/shapes.md (colours, sizes, spacing, predicate rules).
Every number here is part of the benchmark: changing one changes the test split, so the
pinned checksum in tests/test_shapes.py fails on purpose.
"""

from __future__ import annotations

import math

import numpy as np

from sg2image.graph import SceneGraph, Vocab

IMAGE_SIZE = 64
BACKGROUND = (128, 128, 128)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 170, 60),
    "blue": (50, 90, 220),
    "yellow": (235, 215, 60),
    "purple": (150, 70, 200),
    "cyan": (60, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
OBJECT_NAMES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
PREDICATES = ("left of", "right of", "above", "below", "bigger than", "smaller than")
PREDICATE_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "bigger than": "bigger than",
    "smaller than": "smaller than",
}

SPLITS = ("train", "val", "test")
TEST_SIZE = 1000
VAL_SIZE = 1000
SPLIT_SIZES: dict[str, int | None] = {"train": None, "val": VAL_SIZE, "test": TEST_SIZE}

MIN_OBJECTS, MAX_OBJECTS = 2, 5
MIN_SIDE, MAX_SIDE = 10, 22
GAP = 2  # px between bounding squares, and between a square and the canvas edge
SIZE_RATIO = 1.25
SIZE_PREDICATE_PROB = 0.3
RELATION_CAPTION_PROB = 0.5

# Placement is rejection sampling; five large squares may not fit, so after
# _TRIES_PER_OBJECT failures the whole layout (sizes included) is drawn again.
_TRIES_PER_OBJECT = 100
_MAX_RESTARTS = 1000

# Child seed-sequence keys: the layout and the caption of a scene draw from separate
# streams, so adding caption randomness never changes the scenes themselves.
_SCENE_STREAM, _CAPTION_STREAM, _DENSE_STREAM = 0, 1, 2


def shapes_vocab() -> Vocab:
    return Vocab.build(list(OBJECT_NAMES), list(PREDICATES))


# ----------------------------------------------------------------------------- predicates


def geometric_predicate(subj_centre: tuple[float, float], obj_centre: tuple[float, float]) -> str:
    """sg2im's rule on centres (x, y), with the image y axis pointing down."""
    theta = math.atan2(subj_centre[1] - obj_centre[1], subj_centre[0] - obj_centre[0])
    if abs(theta) >= 3 * math.pi / 4:
        return "left of"
    if theta < -math.pi / 4:
        return "above"
    if theta < math.pi / 4:
        return "right of"
    return "below"


def size_predicate(s_subj: float, s_obj: float) -> str | None:
    if s_subj >= SIZE_RATIO * s_obj:
        return "bigger than"
    if s_obj >= SIZE_RATIO * s_subj:
        return "smaller than"
    return None


# ----------------------------------------------------------------------------- generation


def _default_size(split: str, start: int) -> int:
    _check_split(split, start)
    if SPLIT_SIZES[split] is None:
        raise ValueError(f"split {split!r} has no fixed size; say how many scenes")
    return SPLIT_SIZES[split] - start


def _check_split(split: str, index: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown Shapes split {split!r}; expected one of {', '.join(SPLITS)}")
    limit = SPLIT_SIZES[split]
    if index < 0 or (limit is not None and index >= limit):
        raise ValueError(f"scene index {index} outside the {split!r} split (size {limit})")


def _split_code(split: str) -> int:
    # The name's bytes, not hash() (salted per process): the same seed on every machine.
    return int.from_bytes(split.encode("utf-8"), "little")


def _seed_sequence(split: str, index: int, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([_split_code(split), index], spawn_key=(stream,))


def _place(rng: np.random.Generator, k: int) -> list[tuple[int, int, int]]:
    """k bounding squares (x0, y0, side) in pixels, GAP apart and GAP inside the canvas."""
    for _ in range(_MAX_RESTARTS):
        sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=k)
        placed: list[tuple[int, int, int]] = []
        for s in sides.tolist():
            for _ in range(_TRIES_PER_OBJECT):
                x, y = rng.integers(GAP, IMAGE_SIZE - GAP - s + 1, size=2).tolist()
                if all(
                    x >= px + ps + GAP
                    or px >= x + s + GAP
                    or y >= py + ps + GAP
                    or py >= y + s + GAP
                    for px, py, ps in placed
                ):
                    placed.append((x, y, s))
                    break
            else:
                break
        if len(placed) == k:
            return placed
    raise RuntimeError("could not place the Shapes objects")  # practically unreachable


def _relations(
    rng: np.random.Generator, squares: list[tuple[int, int, int]]
) -> list[tuple[int, str, int]]:
    centres = [(x + s / 2, y + s / 2) for x, y, s in squares]
    k = len(squares)
    triples: list[tuple[int, str, int]] = []
    for i in range(k):
        j = int(rng.integers(k - 1))
        j += j >= i  # a random *other* object
        s, o = (i, j) if rng.random() < 0.5 else (j, i)
        pred = size_predicate(squares[s][2], squares[o][2])
        if pred is None or rng.random() >= SIZE_PREDICATE_PROB:
            pred = geometric_predicate(centres[s], centres[o])
        if (s, pred, o) not in triples:
            triples.append((s, pred, o))
    return triples


def generate_scene(split: str, index: int) -> SceneGraph:
    """Scene `index` of `split`: a pure function of its arguments."""
    _check_split(split, index)
    rng = np.random.default_rng(_seed_sequence(split, index, _SCENE_STREAM))
    k = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    labels = [OBJECT_NAMES[i] for i in rng.choice(len(OBJECT_NAMES), size=k, replace=False)]
    squares = _place(rng, k)
    # Pixel coordinates / 64 are exact binary fractions, so render(graph) is lossless.
    boxes = [
        (x / IMAGE_SIZE, y / IMAGE_SIZE, (x + s) / IMAGE_SIZE, (y + s) / IMAGE_SIZE)
        for x, y, s in squares
    ]
    return SceneGraph(objects=labels, relationships=_relations(rng, squares), boxes=boxes)


def dense_scene(split: str, index: int) -> SceneGraph | None:
    """Scene ``index`` of ``split`` with more relations: the same objects and boxes, every
    object in 2 or 3 triples (a target drawn per object), by the same predicate rules; None
    for a scene of 2 objects, which cannot have that. Not one of the specification's
    splits: a harder test of layouts, where each box must satisfy several relations."""
    scene = generate_scene(split, index)
    k = len(scene.objects)
    if k < 3:
        return None
    rng = np.random.default_rng(_seed_sequence(split, index, _DENSE_STREAM))
    squares = [
        (round(b[0] * IMAGE_SIZE), round(b[1] * IMAGE_SIZE), round((b[2] - b[0]) * IMAGE_SIZE))
        for b in scene.boxes
    ]
    centres = [(x + s / 2, y + s / 2) for x, y, s in squares]
    target = rng.integers(2, 4, size=k).tolist()
    degree = [0] * k
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    order = rng.permutation(len(pairs)).tolist()
    triples: list[tuple[int, str, int]] = []
    # First pairs that both ends still want; then any pair that lifts an end to 2.
    wanted = lambda i, j: degree[i] < target[i] and degree[j] < target[j]  # noqa: E731
    lifts = lambda i, j: min(degree[i], degree[j]) < 2 and max(degree[i], degree[j]) < 3  # noqa: E731
    for fits in (wanted, lifts):
        for n in order:
            i, j = pairs[n]
            if any({s, o} == {i, j} for s, _, o in triples) or not fits(i, j):
                continue
            s, o = (i, j) if rng.random() < 0.5 else (j, i)
            pred = size_predicate(squares[s][2], squares[o][2])
            if pred is None or rng.random() >= SIZE_PREDICATE_PROB:
                pred = geometric_predicate(centres[s], centres[o])
            triples.append((s, pred, o))
            degree[i], degree[j] = degree[i] + 1, degree[j] + 1
    return SceneGraph(objects=list(scene.objects), relationships=triples, boxes=scene.boxes)


def make_dense_split(n: int | None = None, split: str = "test") -> list[SceneGraph]:
    """The dense versions of the scenes of ``split`` that have 3 or more objects (the first
    ``n`` of them; all by default: 740 of the 1,000 test scenes)."""
    out = []
    for index in range(_default_size(split, 0)):
        scene = dense_scene(split, index)
        if scene is not None:
            out.append(scene)
        if n is not None and len(out) == n:
            return out
    if n is not None:
        raise ValueError(f"the {split!r} split has only {len(out)} scenes of 3 or more objects")
    return out


def make_split(split: str, n: int | None = None, start: int = 0) -> list[SceneGraph]:
    if n is None:
        n = _default_size(split, start)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_split(split, start + max(n - 1, 0))
    return [generate_scene(split, i) for i in range(start, start + n)]


# ----------------------------------------------------------------------------- rendering


def render(graph: SceneGraph, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of the graph's boxes and labels.

    A pixel belongs to a shape when its centre lies inside it. At size 64 this reproduces
    the generated scene exactly; other sizes draw natively at that resolution.
    """
    if graph.boxes is None:
        raise ValueError("render needs a graph with boxes")
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    for label, box in zip(graph.objects, graph.boxes, strict=True):
        colour, _, shape = label.partition(" ")
        if colour not in COLOURS or shape not in SHAPES:
            raise ValueError(f"not a Shapes label: {label!r}")
        x0, y0, x1, y1 = (v * size for v in box)
        c0, r0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        c1, r1 = min(int(math.ceil(x1)), size), min(int(math.ceil(y1)), size)
        if c1 <= c0 or r1 <= r0:
            continue
        px = np.arange(c0, c1)[None, :] + 0.5
        py = np.arange(r0, r1)[:, None] + 0.5
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside = (px >= x0) & (px < x1) & (py >= y0) & (py < y1)
        if shape == "circle":
            inside &= ((px - cx) / (w / 2)) ** 2 + ((py - cy) / (h / 2)) ** 2 < 1
        elif shape == "triangle":
            # half-width grows linearly from 0 at the apex (top) to w/2 at the base
            inside &= np.abs(px - cx) < (w / 2) * (py - y0) / h
        image[r0:r1, c0:c1][inside] = COLOURS[colour]
    return image


# ----------------------------------------------------------------------------- captions


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(graph: SceneGraph, rng: np.random.Generator) -> str:
    """Every object named once in random order; with prob. 0.5 one relation in English."""
    order = rng.permutation(len(graph.objects)).tolist()
    names = {i: f"a {graph.objects[i]}" for i in order}
    # The coin is always drawn, so one rng stream gives the same object order either way.
    use_relation = rng.random() < RELATION_CAPTION_PROB
    relations = [r for r in graph.relationships if r[1] in PREDICATE_PHRASES and r[0] != r[2]]
    if use_relation and relations:
        s, p, o = relations[int(rng.integers(len(relations)))]
        phrase = f"{names[s]} {PREDICATE_PHRASES[p]} {names[o]}"
        first = min(order.index(s), order.index(o))
        order = [i for i in order if i not in (s, o)]
        items = [names[i] for i in order]
        items.insert(first, phrase)
        return _join(items)
    return _join([names[i] for i in order])


def scene_caption(split: str, index: int, graph: SceneGraph | None = None) -> str:
    """The fixed caption of scene `index` (pass `graph` to skip regenerating it)."""
    if graph is None:
        graph = generate_scene(split, index)
    rng = np.random.default_rng(_seed_sequence(split, index, _CAPTION_STREAM))
    return caption(graph, rng)

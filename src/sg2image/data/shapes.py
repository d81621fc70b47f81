"""The Shapes world: a generated scene-graph domain whose ground truth can be checked exactly.

Specification: docs/shapes.md (colours, sizes, spacing, predicate rules, depth order).
Every number here is part of the benchmark: changing one changes a split, so the pinned
checksums in tests/test_shapes.py fail on purpose.

Two versions of the world: "plain" (the default; six predicates, every object apart) and
"depth" (the same plus "in front of" / "behind": overlapping pairs drawn back to front).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sg2image.graph import BEHIND, DEPTH_PREDICATES, FRONT, SceneGraph, Vocab, depth_ranks

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
# Kept apart from PREDICATE_PHRASES: that one is the plain world's (and the shipped
# model's tokenizer words); captions phrase every relation of RELATION_PHRASES.
DEPTH_PHRASES = {FRONT: "in front of", BEHIND: "behind"}
RELATION_PHRASES = {**PREDICATE_PHRASES, **DEPTH_PHRASES}

WORLDS = ("plain", "depth")
DEFAULT_WORLD = "plain"

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


# The depth world: an object placed after others overlaps one of them with this
# probability (when one without a partner, of another colour, is there); about half of
# the scenes then have at least one overlapping pair (measured: docs/shapes.md).
OVERLAP_PROB = 0.35
MIN_OVERLAP = 4  # px: the two bounding squares' intersection, at least this each way
MIN_COVER = 0.6  # share of that intersection each of the two shapes covers
MIN_VISIBLE = 0.4  # share of the back shape's pixels left visible (one component)
# The image must tell front from back as the oracle looks (docs/shapes.md): in the
# intersection of the front shape's bounding box and that of the back one's visible part,
# the front colour's share of the two colours' pixels is at least this; drawn the other
# way round, at most 1 - this.
MIN_FRONT_SEEN = 0.6
# The oracle compares the colours where the two boxes overlap, each box grown by this many
# pixels (at 64 x 64; scaled with the image): a back shape's visible part ends where the
# front one begins, and blur leaves a seam of background between two colours.
DEPTH_MARGIN_64 = 2


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown Shapes world {world!r}; expected one of {', '.join(WORLDS)}")


def world_predicates(world: str = DEFAULT_WORLD) -> tuple[str, ...]:
    _check_world(world)
    return PREDICATES + DEPTH_PREDICATES if world == "depth" else PREDICATES


def shapes_vocab(world: str = DEFAULT_WORLD) -> Vocab:
    """The world's vocabulary: 18 objects; 6 predicates (plain, the shipped model's) or 8
    (depth: the plain ones, then "in front of", "behind")."""
    return Vocab.build(list(OBJECT_NAMES), list(world_predicates(world)))


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


def _split_code(split: str, world: str = DEFAULT_WORLD) -> int:
    # The name's bytes, not hash() (salted per process): the same seed on every machine.
    # A depth split's code is that of "depth <split>": seeded apart from the plain one's.
    _check_world(world)
    name = split if world == DEFAULT_WORLD else f"{world} {split}"
    return int.from_bytes(name.encode("utf-8"), "little")


def _seed_sequence(
    split: str, index: int, stream: int, world: str = DEFAULT_WORLD
) -> np.random.SeedSequence:
    return np.random.SeedSequence([_split_code(split, world), index], spawn_key=(stream,))


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


# ----------------------------------------------------------------------------- depth world

Square = tuple[int, int, int]  # x0, y0, side in pixels


def _apart(rng: np.random.Generator, placed: list[Square], s: int) -> Square | None:
    """A square of side s GAP apart from every placed one, as the plain world places."""
    for _ in range(_TRIES_PER_OBJECT):
        x, y = rng.integers(GAP, IMAGE_SIZE - GAP - s + 1, size=2).tolist()
        if all(_gap_between((x, y, s), q) for q in placed):
            return (x, y, s)
    return None


def _gap_between(a: Square, b: Square) -> bool:
    (x, y, s), (px, py, ps) = a, b
    return x >= px + ps + GAP or px >= x + s + GAP or y >= py + ps + GAP or py >= y + s + GAP


def _canvas_mask(label: str, square: Square) -> np.ndarray:
    """The shape's (64, 64) mask, as render draws it."""
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    r0, c0, inside = shape_mask(_split_label(label)[1], _boxes([square])[0])
    out[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
    return out


def _mask_box(mask: np.ndarray) -> tuple[tuple[float, float], int]:
    """(centre, larger side) of a mask's bounding box: what the oracle measures."""
    x0, y0, x1, y1 = _bbox(mask)
    return ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0)


def _occludes(front: np.ndarray, back: np.ndarray, f: Square, b: Square) -> bool:
    """Whether the pair meets the depth world's overlap constraints (docs/shapes.md)."""
    (fx, fy, fs), (bx, by, bs) = f, b
    x0, y0 = max(fx, bx), max(fy, by)
    x1, y1 = min(fx + fs, bx + bs), min(fy + fs, by + bs)
    if x1 - x0 < MIN_OVERLAP or y1 - y0 < MIN_OVERLAP:
        return False
    if (x0, y0, x1, y1) in ((fx, fy, fx + fs, fy + fs), (bx, by, bx + bs, by + bs)):
        return False  # one square inside the other: the pair overlaps, it does not nest
    if min(front[y0:y1, x0:x1].mean(), back[y0:y1, x0:x1].mean()) < MIN_COVER:
        return False
    visible = back & ~front
    if visible.sum() < MIN_VISIBLE * back.sum() or ndimage.label(visible)[1] != 1:
        return False
    return (
        _front_seen(front, visible) >= MIN_FRONT_SEEN
        and _front_seen(front & ~back, back) <= 1 - MIN_FRONT_SEEN
    )


def _front_seen(front: np.ndarray, back: np.ndarray) -> float:
    """The front colour's share of the two colours' pixels in the intersection of the
    bounding boxes of two drawn (disjoint) masks: the oracle's depth rule, as a number."""
    region = depth_region(_bbox(front), _bbox(back), IMAGE_SIZE)
    if region is None:
        return 0.0
    x0, y0, x1, y1 = region
    seen_front = front[y0:y1, x0:x1].sum()
    seen = seen_front + back[y0:y1, x0:x1].sum()
    return seen_front / seen if seen else 0.0


def depth_region(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int], size: int
) -> tuple[int, int, int, int] | None:
    """Where a depth relation is judged: the intersection of two pixel boxes (x0, y0, x1,
    y1, x1/y1 exclusive), each grown by DEPTH_MARGIN_64 (scaled to ``size``) and clipped
    to the image; None when they do not meet."""
    m = max(1, round(DEPTH_MARGIN_64 * size / IMAGE_SIZE))
    x0, y0 = max(a[0], b[0]) - m, max(a[1], b[1]) - m
    x1, y1 = min(a[2], b[2]) + m, min(a[3], b[3]) + m
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlapping(
    rng: np.random.Generator, labels: list[str], placed: list[Square], t: int, s: int,
    j: int, t_in_front: bool,
) -> Square | None:  # fmt: skip
    """A square of side s for object t overlapping object j's as the constraints say (t in
    front or behind), GAP apart from every other placed square."""
    jx, jy, js = placed[j]
    mask_j = _canvas_mask(labels[j], placed[j])
    lo = [max(GAP, v - s + MIN_OVERLAP) for v in (jx, jy)]
    hi = [min(IMAGE_SIZE - GAP - s, v + js - MIN_OVERLAP) for v in (jx, jy)]
    if lo[0] > hi[0] or lo[1] > hi[1]:
        return None
    for _ in range(_TRIES_PER_OBJECT):
        x = int(rng.integers(lo[0], hi[0] + 1))
        y = int(rng.integers(lo[1], hi[1] + 1))
        square = (x, y, s)
        if not all(_gap_between(square, q) for n, q in enumerate(placed) if n != j):
            continue
        mask = _canvas_mask(labels[t], square)
        if t_in_front:
            fits = _occludes(mask, mask_j, square, placed[j])
        else:
            fits = _occludes(mask_j, mask, placed[j], square)
        if fits:
            return square
    return None


def _depth_layout(
    rng: np.random.Generator, labels: list[str]
) -> tuple[list[Square], list[tuple[int, int]]]:
    """Squares and overlapping (front, back) pairs: each object after the first overlaps,
    with probability OVERLAP_PROB, one earlier object of another colour that has no
    partner yet (if it can), else keeps the plain world's gaps from everything."""
    k = len(labels)
    colours = [_split_label(label)[0] for label in labels]
    for _ in range(_MAX_RESTARTS):
        sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=k).tolist()
        placed: list[Square] = []
        pairs: list[tuple[int, int]] = []
        for t, s in enumerate(sides):
            paired = {n for pair in pairs for n in pair}
            free = [j for j in range(t) if j not in paired and colours[j] != colours[t]]
            square = None
            if free and rng.random() < OVERLAP_PROB:
                j = free[int(rng.integers(len(free)))]
                t_in_front = bool(rng.random() < 0.5)
                square = _overlapping(rng, labels, placed, t, s, j, t_in_front)
                if square is not None:
                    pairs.append((t, j) if t_in_front else (j, t))
            if square is None:
                square = _apart(rng, placed, s)
            if square is None:
                break
            placed.append(square)
        if len(placed) == k:
            return placed, pairs
    raise RuntimeError("could not place the Shapes objects")  # practically unreachable


def _depth_relations(
    rng: np.random.Generator, squares: list[Square], pairs: list[tuple[int, int]]
) -> list[tuple[int, str, int]]:
    """The plain world's rule, with the depth predicate for an overlapping pair; then the
    depth triple of every pair the rule did not relate (random direction)."""
    fronts = {f for f, _ in pairs}
    partner = {f: b for f, b in pairs} | {b: f for f, b in pairs}
    centres = [(x + s / 2, y + s / 2) for x, y, s in squares]
    k = len(squares)
    triples: list[tuple[int, str, int]] = []
    for i in range(k):
        j = int(rng.integers(k - 1))
        j += j >= i
        s, o = (i, j) if rng.random() < 0.5 else (j, i)
        if partner.get(s) == o:
            pred = FRONT if s in fronts else BEHIND
        else:
            pred = size_predicate(squares[s][2], squares[o][2])
            if pred is None or rng.random() >= SIZE_PREDICATE_PROB:
                pred = geometric_predicate(centres[s], centres[o])
        if (s, pred, o) not in triples:
            triples.append((s, pred, o))
    for f, b in pairs:
        if not any({s, o} == {f, b} for s, _, o in triples):
            s, o = (f, b) if rng.random() < 0.5 else (b, f)
            triples.append((s, FRONT if s == f else BEHIND, o))
    return triples


def _holds_on_visible_parts(
    labels: list[str], squares: list[Square], pairs: list[tuple[int, int]],
    triples: list[tuple[int, str, int]],
) -> bool:  # fmt: skip
    """Whether every size or geometric triple with a partly hidden end also holds on the
    bounding boxes of what is seen (the oracle measures those)."""
    hidden = {b: f for f, b in pairs}
    seen: dict[int, tuple[tuple[float, float], int]] = {}

    def measured(i: int) -> tuple[tuple[float, float], int]:
        if i not in seen:
            mask = _canvas_mask(labels[i], squares[i])
            if i in hidden:
                mask &= ~_canvas_mask(labels[hidden[i]], squares[hidden[i]])
            seen[i] = _mask_box(mask)
        return seen[i]

    for s, p, o in triples:
        if p in DEPTH_PREDICATES or (s not in hidden and o not in hidden):
            continue
        (cs, ss), (co, so) = measured(s), measured(o)
        if p == "bigger than":
            ok = ss > so
        elif p == "smaller than":
            ok = ss < so
        else:
            ok = geometric_predicate(cs, co) == p
        if not ok:
            return False
    return True


def _depth_scene(
    rng: np.random.Generator, labels: list[str]
) -> tuple[list[Square], list[tuple[int, str, int]]]:
    for _ in range(_MAX_RESTARTS):
        squares, pairs = _depth_layout(rng, labels)
        triples = _depth_relations(rng, squares, pairs)
        if _holds_on_visible_parts(labels, squares, pairs, triples):
            return squares, triples
    raise RuntimeError("could not make a depth scene")  # practically unreachable


def _boxes(squares: list[tuple[int, int, int]]) -> list[tuple[float, float, float, float]]:
    # Pixel coordinates / 64 are exact binary fractions, so render(graph) is lossless.
    return [
        (x / IMAGE_SIZE, y / IMAGE_SIZE, (x + s) / IMAGE_SIZE, (y + s) / IMAGE_SIZE)
        for x, y, s in squares
    ]


def generate_scene(split: str, index: int, world: str = DEFAULT_WORLD) -> SceneGraph:
    """Scene `index` of `split` of `world`: a pure function of its arguments."""
    _check_world(world)
    _check_split(split, index)
    rng = np.random.default_rng(_seed_sequence(split, index, _SCENE_STREAM, world))
    k = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    labels = [OBJECT_NAMES[i] for i in rng.choice(len(OBJECT_NAMES), size=k, replace=False)]
    if world == "depth":
        squares, triples = _depth_scene(rng, labels)
        return SceneGraph(objects=labels, relationships=triples, boxes=_boxes(squares))
    squares = _place(rng, k)
    return SceneGraph(objects=labels, relationships=_relations(rng, squares), boxes=_boxes(squares))


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
    ``n`` of them; all by default: 738 of the 1,000 test scenes)."""
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


def make_split(
    split: str, n: int | None = None, start: int = 0, world: str = DEFAULT_WORLD
) -> list[SceneGraph]:
    _check_world(world)
    if n is None:
        n = _default_size(split, start)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_split(split, start + max(n - 1, 0))
    return [generate_scene(split, i, world) for i in range(start, start + n)]


# ----------------------------------------------------------------------------- rendering


def _split_label(label: str) -> tuple[str, str]:
    colour, _, shape = label.partition(" ")
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"not a Shapes label: {label!r}")
    return colour, shape


def shape_mask(
    shape: str, box: tuple[float, float, float, float], size: int = IMAGE_SIZE
) -> tuple[int, int, np.ndarray] | None:
    """(row0, col0, mask) of a shape in its box (fractions of the image) drawn at ``size``:
    the pixels whose centre lies inside it, cropped to the box; None if none can be."""
    x0, y0, x1, y1 = (v * size for v in box)
    c0, r0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
    c1, r1 = min(int(math.ceil(x1)), size), min(int(math.ceil(y1)), size)
    if c1 <= c0 or r1 <= r0:
        return None
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
    return r0, c0, inside


def drawing_order(graph: SceneGraph) -> list[int]:
    """Object indices back to front: by depth rank (graph.depth_ranks), ties in the
    graph's order (so a graph without depth triples draws in its own order). Raises
    ValueError, located, when its depth triples contradict each other."""
    ranks = depth_ranks(graph)
    return sorted(range(len(graph.objects)), key=lambda i: (ranks[i], i))


def render(graph: SceneGraph, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of the graph's boxes and labels, drawn back to front.

    A pixel belongs to a shape when its centre lies inside it. At size 64 this reproduces
    the generated scene exactly; other sizes draw natively at that resolution.
    """
    if graph.boxes is None:
        raise ValueError("render needs a graph with boxes")
    labels = [_split_label(label) for label in graph.objects]
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    for i in drawing_order(graph):
        colour, shape = labels[i]
        drawn = shape_mask(shape, graph.boxes[i], size)
        if drawn is None:
            continue
        r0, c0, inside = drawn
        image[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]][inside] = COLOURS[colour]
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
    relations = [r for r in graph.relationships if r[1] in RELATION_PHRASES and r[0] != r[2]]
    if use_relation and relations:
        s, p, o = relations[int(rng.integers(len(relations)))]
        phrase = f"{names[s]} {RELATION_PHRASES[p]} {names[o]}"
        first = min(order.index(s), order.index(o))
        order = [i for i in order if i not in (s, o)]
        items = [names[i] for i in order]
        items.insert(first, phrase)
        return _join(items)
    return _join([names[i] for i in order])


def scene_caption(
    split: str, index: int, graph: SceneGraph | None = None, world: str = DEFAULT_WORLD
) -> str:
    """The fixed caption of scene `index` (pass `graph` to skip regenerating it)."""
    if graph is None:
        graph = generate_scene(split, index, world)
    rng = np.random.default_rng(_seed_sequence(split, index, _CAPTION_STREAM, world))
    return caption(graph, rng)

"""The Shapes oracle: detects the shapes in an image and checks them against a scene graph.

Specification: docs/shapes.md, "Checking an image against a graph".
Everything is relative to the image size, so images other than 64 x 64 work too.
Beyond the plain world's rules, and leaving its numbers as they are: placement
(``placement_counts``), the same relation rules on each colour's largest blob, shape
ignored, so that where objects stand is measured apart from whether their outlines came
out; and the depth world's rules: a depth triple holds where the front colour is the one
seen in the two boxes' overlap (``depth_holds``), and an object the graph puts behind
another is found by its visible part (``match_hidden``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from sg2image.data.shapes import (
    BACKGROUND,
    COLOURS,
    DEPTH_MARGIN_64,
    IMAGE_SIZE,
    depth_region,
    geometric_predicate,
)
from sg2image.graph import BEHIND, DEPTH_PREDICATES, FRONT, IN_IMAGE, SceneGraph

# A pixel takes a palette colour if it is nearer to it than to the background and other
# colours, and within this RGB distance (rejects off-palette colours; the background is
# 95..154 away from the colours, so blurred edges split at their midpoint as usual).
COLOUR_THRESHOLD = 80.0
# Components smaller than this, at 64 x 64, are noise (the smallest shape has ~50 px).
MIN_AREA_64 = 16
# Shape by fill ratios (pixel area / bounding box area, overall or in parts of the box).
# Overall fill alone (triangle ~0.5, circle ~0.79, square 1.0) does not survive blur: it
# cuts a small triangle's apex and corners until the rest fills ~0.72 of a smaller box,
# and noise spurs widen a square's box until it fills ~0.8. So ("blurred": Gaussian blur
# sigma 1 px plus noise sigma 10, as in tests/test_oracle.py):
# - triangle: its top half is far emptier than its bottom half (clean ~0.35, blurred
#   <= 0.68; circles and squares ~1 either way);
# - square vs circle: fill of the box's four corner triangles (|u| + |v| > 1.5 in box
#   coordinates -1..1, outside the inscribed circle): circle 0 (blurred <= 0.05),
#   square 1 (blurred >= 0.2).
# Components outside these bounds (too sparse, too elongated) are no shape of this world.
TRIANGLE_MAX_TOP_BOTTOM = 0.72
SQUARE_MIN_CORNER_FILL = 0.15
CORNER_REGION = 1.5
MIN_FILL = {"triangle": 0.4, "circle": 0.6, "square": 0.7}
MAX_ASPECT = 2.0

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)
_GEOMETRIC = ("left of", "right of", "above", "below")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Detection:
    label: str  # "<colour> <shape>"
    centre: tuple[float, float]  # (x, y) in pixels, bbox centre
    size: float  # larger side of the bbox, pixels
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    area: int  # pixels


def _classify(mask: np.ndarray) -> str | None:
    """Shape of one component, given its mask cropped to its bounding box."""
    h, w = mask.shape
    if max(h, w) > MAX_ASPECT * min(h, w) or min(h, w) < 2:
        return None
    top, bottom = mask[: h // 2].mean(), mask[h - h // 2 :].mean()
    if top < TRIANGLE_MAX_TOP_BOTTOM * bottom:
        shape = "triangle"
    else:
        u = np.abs((np.arange(w) + 0.5) / w * 2 - 1)
        v = np.abs((np.arange(h) + 0.5) / h * 2 - 1)
        corners = mask[u[None, :] + v[:, None] > CORNER_REGION]
        square = corners.size and corners.mean() >= SQUARE_MIN_CORNER_FILL
        shape = "square" if square else "circle"
    return shape if mask.mean() >= MIN_FILL[shape] else None


def _colour_map(image: np.ndarray) -> np.ndarray:
    """(H, W) int: each pixel's palette entry, 0 = background (COLOUR_THRESHOLD)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} {image.dtype}"
        )
    h, w = image.shape[:2]
    pixels = image.reshape(-1, 3).astype(np.float32)
    # squared distances to every palette entry, expanded so it is one small matmul
    dist2 = (pixels**2).sum(1, keepdims=True) - 2 * pixels @ _PALETTE.T + (_PALETTE**2).sum(1)
    nearest = dist2.argmin(1)  # 0 = background
    nearest[dist2[np.arange(len(nearest)), nearest] >= COLOUR_THRESHOLD**2] = 0
    return nearest.reshape(h, w)


def _min_area(h: int, w: int) -> int:
    return max(4, round(MIN_AREA_64 * h * w / IMAGE_SIZE**2))


@dataclass
class _Scan:
    """One pass over an image. ``parts``: every colour component above the minimum area,
    as a Detection labelled by its colour alone, with its id in ``labels[colour]`` (the
    colour's component map); ``found``: the shapes recognised, ``found_parts[n]`` the part
    of found[n]; ``blobs``: the largest part of each colour."""

    colour_map: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    parts: list[tuple[Detection, int]] = field(default_factory=list)
    found: list[Detection] = field(default_factory=list)
    found_parts: list[int] = field(default_factory=list)
    blobs: dict[str, Detection] = field(default_factory=dict)


def _scan(image: np.ndarray) -> _Scan:
    nearest = _colour_map(image)
    scan = _Scan(colour_map=nearest)
    min_area = _min_area(*nearest.shape)
    for k, colour in enumerate(_PALETTE_NAMES, start=1):
        mask = nearest == k
        if not mask.any():
            continue
        components, _ = ndimage.label(mask)
        scan.labels[colour] = components
        for index, sl in enumerate(ndimage.find_objects(components), start=1):
            # Stray pixels inside a shape (noise, artefacts) would lower its fill.
            crop = ndimage.binary_fill_holes(components[sl] == index)
            area = int(crop.sum())
            if area < min_area:
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            blob = Detection(
                label=colour,
                centre=((x0 + x1) / 2, (y0 + y1) / 2),
                size=float(max(x1 - x0, y1 - y0)),
                bbox=(x0, y0, x1, y1),
                area=area,
            )
            scan.parts.append((blob, index))
            if colour not in scan.blobs or blob.area > scan.blobs[colour].area:
                scan.blobs[colour] = blob
            shape = _classify(crop)
            if shape is not None:
                scan.found.append(replace(blob, label=f"{colour} {shape}"))
                scan.found_parts.append(len(scan.parts) - 1)
    return scan


def detect(image: np.ndarray) -> list[Detection]:
    """Shapes found in an (H, W, 3) uint8 RGB image."""
    return _scan(image).found


def colour_blobs(image: np.ndarray) -> dict[str, Detection]:
    """The largest component of each palette colour in an (H, W, 3) uint8 RGB image, shape
    ignored (also components no shape was recognised in): colour -> Detection labelled by
    the colour alone. Colours with no component above the minimum area are absent."""
    return _scan(image).blobs


def match(
    graph: SceneGraph, detections: Sequence[Detection], image_size: tuple[int, int] = (64, 64)
) -> list[int | None]:
    """For each graph object, the index of its detection (same label, each used once) or None.

    With boxes, the closest (graph box centre, detection centre) pairs are taken first;
    without, a label's largest detections go to its objects in order.
    """
    h, w = image_size
    result: list[int | None] = [None] * len(graph.objects)
    for label in dict.fromkeys(graph.objects):
        objs = [i for i, o in enumerate(graph.objects) if o == label]
        dets = [j for j, d in enumerate(detections) if d.label == label]
        candidates = []  # (distance, -area, object, detection): best first once sorted
        for i in objs:
            for j in dets:
                d = detections[j]
                dist = 0.0
                if graph.boxes is not None:
                    x0, y0, x1, y1 = graph.boxes[i]
                    dist = ((x0 + x1) / 2 - d.centre[0] / w) ** 2
                    dist += ((y0 + y1) / 2 - d.centre[1] / h) ** 2
                candidates.append((dist, -d.area, i, j))
        used: set[int] = set()
        for _, _, i, j in sorted(candidates):
            if result[i] is None and j not in used:
                result[i] = j
                used.add(j)
    return result


def _fronts(graph: SceneGraph) -> list[list[int]]:
    """Per object, the objects the graph puts it behind."""
    fronts: list[list[int]] = [[] for _ in graph.objects]
    for s, p, o in graph.relationships:
        if p == BEHIND:
            fronts[s].append(o)
        elif p == FRONT:
            fronts[o].append(s)
    return fronts


def _touching(scan: _Scan, part: int, colour: str) -> set[int]:
    """Ids of ``colour``'s components that touch component ``part``: within the depth
    margin (DEPTH_MARGIN_64 px at 64 x 64, scaled; 8-neighbour steps) of one of its
    pixels, so that a seam of blur between the two colours does not part them."""
    if colour not in scan.labels:
        return set()
    det, index = scan.parts[part]
    h, w = scan.colour_map.shape
    m = max(1, round(DEPTH_MARGIN_64 * max(h, w) / IMAGE_SIZE))
    x0, y0, x1, y1 = det.bbox
    sl = np.s_[max(y0 - m, 0) : min(y1 + m, h), max(x0 - m, 0) : min(x1 + m, w)]
    grown = ndimage.binary_dilation(
        scan.labels[det.label][sl] == index, np.ones((3, 3), bool), iterations=m
    )
    ids = scan.labels[colour][sl][grown]
    return set(ids[ids > 0].tolist())


def match_hidden(
    graph: SceneGraph, scan: _Scan, matches: list[int | None]
) -> tuple[list[Detection], list[int | None], int]:
    """The partly hidden rule (docs/shapes.md): an object left unmatched that the graph
    puts behind a matched object is found by the largest component of its colour (at
    least the minimum area, used by no other match, any shape or none) that touches
    (``_touching``) the component matched to an object it is behind; its shape is not
    judged.

    Returns the detections (``scan.found``, then the parts found this way, labelled by
    their colour alone), the matches into them, and how many objects were found this way.
    """
    detections = list(scan.found)
    parts = list(scan.found_parts)  # the part behind each detection
    matches = list(matches)
    fronts = _fronts(graph)
    hidden = 0
    changed = True
    while changed:  # again after a find: a chain (c behind b behind a) finds b, then c
        changed = False
        used = {parts[m] for m in matches if m is not None}
        for i, label in enumerate(graph.objects):
            if matches[i] is not None or not fronts[i]:
                continue
            colour = colour_of(label)
            touching: set[int] = set()
            for f in fronts[i]:
                if matches[f] is not None:
                    touching |= _touching(scan, parts[matches[f]], colour)
            candidates = [
                n
                for n, (det, index) in enumerate(scan.parts)
                if det.label == colour and index in touching and n not in used
            ]
            if not candidates:
                continue
            best = max(candidates, key=lambda n: scan.parts[n][0].area)
            detections.append(scan.parts[best][0])
            parts.append(best)
            matches[i] = len(detections) - 1
            used.add(best)
            hidden += 1
            changed = True
    return detections, matches, hidden


def depth_holds(predicate: str, subj: Detection, obj: Detection, colour_map: np.ndarray) -> bool:
    """A depth triple holds when, where the two detections' bounding boxes overlap (each
    grown by a margin: shapes.depth_region), the front object's colour has more pixels
    than the back object's. No overlap, no pixels of either colour there, or the same
    colour for both: it does not hold."""
    front, back = (subj, obj) if predicate == FRONT else (obj, subj)
    cf, cb = colour_of(front.label), colour_of(back.label)
    found = depth_region(front.bbox, back.bbox, max(colour_map.shape))
    if cf == cb or found is None:
        return False
    x0, y0, x1, y1 = found
    region = colour_map[y0:y1, x0:x1]
    seen_front = int((region == _PALETTE_NAMES.index(cf) + 1).sum())
    seen_back = int((region == _PALETTE_NAMES.index(cb) + 1).sum())
    return seen_front > seen_back


def can_judge(predicate: str) -> bool:
    """Whether relation_holds has a rule for this predicate (others it calls False). Depth
    predicates are judged on the image (depth_holds), not on boxes: not here."""
    return predicate in _GEOMETRIC or predicate in ("bigger than", "smaller than")


def relation_holds(predicate: str, subj: Detection, obj: Detection) -> bool:
    if predicate in _GEOMETRIC:
        return geometric_predicate(subj.centre, obj.centre) == predicate
    if predicate == "bigger than":
        return subj.size > obj.size
    if predicate == "smaller than":
        return subj.size < obj.size
    return False  # a predicate the Shapes world cannot show


def colour_of(label: str) -> str:
    """The colour word of an object label: "red" of "red circle"."""
    return label.split(" ", 1)[0]


def placement_counts(graph: SceneGraph, blobs: dict[str, Detection]) -> tuple[int, int]:
    """(correct, judged) triples of the placement measure: does each object stand where the
    graph says, whether or not its shape came out right?

    A triple is judged when its subject's and object's colours each occur once among the
    graph's objects; the largest blob of each colour (``colour_blobs``) stands for the
    object, and relation_holds judges the pair. A missing blob fails the triple. Triples
    with a repeated colour are left out: which blob is which object would be a guess; so
    are depth triples: placement is over the six size and geometric predicates.
    """
    colours = [colour_of(o) for o in graph.objects]
    once = {c for c, k in Counter(colours).items() if k == 1}
    correct = judged = 0
    for s, p, o in graph.relationships:
        if p == IN_IMAGE or p in DEPTH_PREDICATES:
            continue
        if colours[s] not in once or colours[o] not in once:
            continue
        judged += 1
        bs, bo = blobs.get(colours[s]), blobs.get(colours[o])
        correct += bs is not None and bo is not None and relation_holds(p, bs, bo)
    return correct, judged


@dataclass
class ImageScore:
    num_objects: int
    matched_objects: int
    per_predicate: dict[str, list[int]]  # predicate -> [correct, total]
    detections: list[Detection] = field(default_factory=list)
    matches: list[int | None] = field(default_factory=list)
    matched_relations: int = 0  # scored triples whose two ends were both found
    placement_correct: int = 0  # placement_counts: triples placed right, by colour blobs
    placement_judged: int = 0  # triples whose two colours occur once in the graph
    hidden_matches: int = 0  # objects found by their visible part (match_hidden)

    @property
    def occlusion_counts(self) -> tuple[int, int]:
        """(correct, total) over the depth triples."""
        stats = [self.per_predicate.get(p, [0, 0]) for p in DEPTH_PREDICATES]
        return sum(c for c, _ in stats), sum(t for _, t in stats)

    @property
    def num_relations(self) -> int:
        return sum(t for _, t in self.per_predicate.values())

    @property
    def correct_relations(self) -> int:
        return sum(c for c, _ in self.per_predicate.values())

    @property
    def object_recall(self) -> float:
        return self.matched_objects / self.num_objects if self.num_objects else 1.0

    @property
    def relation_accuracy(self) -> float | None:
        total = self.num_relations
        return self.correct_relations / total if total else None


def score_image(image: np.ndarray, graph: SceneGraph) -> ImageScore:
    image = np.asarray(image)
    scan = _scan(image)
    matches = match(graph, scan.found, image.shape[:2])
    detections, matches, hidden = match_hidden(graph, scan, matches)
    per_predicate: dict[str, list[int]] = {}
    both_found = 0
    for s, p, o in graph.relationships:
        if p == IN_IMAGE:
            continue
        counts = per_predicate.setdefault(p, [0, 0])
        counts[1] += 1
        ds, do = matches[s], matches[o]
        if ds is None or do is None:
            continue
        both_found += 1
        if p in DEPTH_PREDICATES:
            holds = depth_holds(p, detections[ds], detections[do], scan.colour_map)
        else:
            holds = relation_holds(p, detections[ds], detections[do])
        counts[0] += holds
    placed, judged = placement_counts(graph, scan.blobs)
    return ImageScore(
        num_objects=len(graph.objects),
        matched_objects=sum(m is not None for m in matches),
        per_predicate=per_predicate,
        detections=detections,
        matches=matches,
        matched_relations=both_found,
        placement_correct=placed,
        placement_judged=judged,
        hidden_matches=hidden,
    )


@dataclass
class OracleReport:
    num_images: int
    num_objects: int
    matched_objects: int
    num_relations: int
    correct_relations: int
    object_recall: float | None
    relation_accuracy: float | None  # micro: over all scored triples of all images
    per_predicate: dict[str, dict[str, float | int | None]]
    # Placement alone: accuracy over the triples whose two ends were both found. Recall
    # caps relation_accuracy; this says whether found objects stand where the graph says
    # (a placement-blind generator scores ~0.25 on geometric predicates, ~0.5 on size).
    matched_relations: int = 0
    relation_accuracy_matched: float | None = None
    # Placement with the shape ignored (placement_counts): whether objects stand where the
    # graph says even when their outlines are wrong, over the triples it could judge.
    placement: float | None = None
    placement_judged: int = 0
    # The depth world: accuracy over the depth triples ("in front of", "behind"; None
    # without any), and the objects found by their visible part (match_hidden).
    occlusion_accuracy: float | None = None
    occlusion_judged: int = 0
    hidden_matches: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def aggregate(scores: Sequence[ImageScore]) -> OracleReport:
    per: dict[str, list[int]] = {}
    for sc in scores:
        for p, (c, t) in sc.per_predicate.items():
            acc = per.setdefault(p, [0, 0])
            acc[0] += c
            acc[1] += t
    n_obj = sum(sc.num_objects for sc in scores)
    n_match = sum(sc.matched_objects for sc in scores)
    n_rel = sum(t for _, t in per.values())
    n_ok = sum(c for c, _ in per.values())
    n_both = sum(sc.matched_relations for sc in scores)
    n_placed = sum(sc.placement_correct for sc in scores)
    n_judged = sum(sc.placement_judged for sc in scores)
    n_depth_ok = sum(sc.occlusion_counts[0] for sc in scores)
    n_depth = sum(sc.occlusion_counts[1] for sc in scores)
    return OracleReport(
        num_images=len(scores),
        num_objects=n_obj,
        matched_objects=n_match,
        num_relations=n_rel,
        correct_relations=n_ok,
        object_recall=n_match / n_obj if n_obj else None,
        relation_accuracy=n_ok / n_rel if n_rel else None,
        per_predicate={
            p: {"correct": c, "total": t, "accuracy": c / t if t else None}
            for p, (c, t) in sorted(per.items())
        },
        matched_relations=n_both,
        relation_accuracy_matched=n_ok / n_both if n_both else None,
        placement=n_placed / n_judged if n_judged else None,
        placement_judged=n_judged,
        occlusion_accuracy=n_depth_ok / n_depth if n_depth else None,
        occlusion_judged=n_depth,
        hidden_matches=sum(sc.hidden_matches for sc in scores),
    )


def score_images(images: Sequence[np.ndarray], graphs: Sequence[SceneGraph]) -> OracleReport:
    if len(images) != len(graphs):
        raise ValueError(f"{len(images)} images for {len(graphs)} graphs")
    return aggregate([score_image(im, g) for im, g in zip(images, graphs, strict=True)])


# "12", "00012" or "00012_3" (sample 3 of graph 12); other names, such as the CLI's
# "00012_with_graph.png" drawings, are not samples and are ignored.
_STEM_INDEX = re.compile(r"^(\d+)(?:_\d+)?$")


def find_images(images_dir: str | Path, num_graphs: int) -> dict[int, list[Path]]:
    """Image files per graph index: stems "12", "00012", "00012_1", ... belong to graph 12."""
    root = Path(images_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    found: dict[int, list[Path]] = {i: [] for i in range(num_graphs)}
    for path in sorted(root.iterdir()):
        m = _STEM_INDEX.match(path.stem)
        if m and path.suffix.lower() in _IMAGE_SUFFIXES and int(m.group(1)) < num_graphs:
            found[int(m.group(1))].append(path)
    missing = [i for i, paths in found.items() if not paths]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        raise ValueError(
            f"{root}: {len(missing)} of {num_graphs} graphs have no image "
            f"(expected files like {0:05d}.png or {0:05d}_1.png); missing indices: {shown}"
        )
    return found


def load_image(path: str | Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e


def check_folder(graphs: Sequence[SceneGraph], images_dir: str | Path) -> OracleReport:
    """Score every image in `images_dir` against its graph (all samples of a graph count)."""
    files = find_images(images_dir, len(graphs))
    return aggregate(
        [score_image(load_image(p), graphs[i]) for i, paths in files.items() for p in paths]
    )

"""The Shapes oracle: detects the shapes in an image and checks them against a scene graph.

Specification: /work/shared/reference/shapes.md, "Checking an image against a graph".
Everything is relative to the image size, so images other than 64 x 64 work too.
Beyond the specification, and leaving its numbers as they are: placement
(``placement_counts``), the same relation rules on each colour's largest blob, shape
ignored, so that where objects stand is measured apart from whether their outlines came out.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from sg2image.data.shapes import BACKGROUND, COLOURS, IMAGE_SIZE, geometric_predicate
from sg2image.graph import IN_IMAGE, SceneGraph

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


def _components(image: np.ndarray) -> Iterator[tuple[str, np.ndarray, Detection]]:
    """Every colour component of an (H, W, 3) uint8 RGB image above the minimum area:
    (colour, its hole-filled mask cropped to its bounding box, a Detection labelled by the
    colour alone)."""
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
    nearest = nearest.reshape(h, w)
    min_area = max(4, round(MIN_AREA_64 * h * w / IMAGE_SIZE**2))

    for k, colour in enumerate(_PALETTE_NAMES, start=1):
        mask = nearest == k
        if not mask.any():
            continue
        components, _ = ndimage.label(mask)
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
            yield colour, crop, blob


def _scan(image: np.ndarray) -> tuple[list[Detection], dict[str, Detection]]:
    """The shapes found (detect) and the largest blob of each colour (colour_blobs), from
    one pass over the image."""
    found: list[Detection] = []
    blobs: dict[str, Detection] = {}
    for colour, crop, blob in _components(image):
        if colour not in blobs or blob.area > blobs[colour].area:
            blobs[colour] = blob
        shape = _classify(crop)
        if shape is not None:
            found.append(replace(blob, label=f"{colour} {shape}"))
    return found, blobs


def detect(image: np.ndarray) -> list[Detection]:
    """Shapes found in an (H, W, 3) uint8 RGB image."""
    return _scan(image)[0]


def colour_blobs(image: np.ndarray) -> dict[str, Detection]:
    """The largest component of each palette colour in an (H, W, 3) uint8 RGB image, shape
    ignored (also components no shape was recognised in): colour -> Detection labelled by
    the colour alone. Colours with no component above the minimum area are absent."""
    return _scan(image)[1]


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


def can_judge(predicate: str) -> bool:
    """Whether relation_holds has a rule for this predicate (others it calls False)."""
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
    with a repeated colour are left out: which blob is which object would be a guess.
    """
    colours = [colour_of(o) for o in graph.objects]
    once = {c for c, k in Counter(colours).items() if k == 1}
    correct = judged = 0
    for s, p, o in graph.relationships:
        if p == IN_IMAGE or colours[s] not in once or colours[o] not in once:
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
    detections, blobs = _scan(image)
    matches = match(graph, detections, image.shape[:2])
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
        if relation_holds(p, detections[ds], detections[do]):
            counts[0] += 1
    placed, judged = placement_counts(graph, blobs)
    return ImageScore(
        num_objects=len(graph.objects),
        matched_objects=sum(m is not None for m in matches),
        per_predicate=per_predicate,
        detections=detections,
        matches=matches,
        matched_relations=both_found,
        placement_correct=placed,
        placement_judged=judged,
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

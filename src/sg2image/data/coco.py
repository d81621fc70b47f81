"""COCO-Stuff 2017 scene graphs: preparation from the raw annotations, and the dataset.

Specification: /work/shared/reference/datasets.md (the sg2im / SGDiff COCO-Stuff protocol).

Preparation (:func:`prepare_coco`) reads, under ``src``::

    annotations/instances_{train,val}2017.json   # COCO "things" (polygons, RLE for crowds)
    annotations/stuff_{train,val}2017.json       # COCO-Stuff (compressed RLE)
    deprecated-challenge2017/{train,val}-ids.txt # only for split_protocol="deprecated-2017"

and writes, under ``out``::

    train.json, val.json, test.json   # lists of scenes (below)
    vocab.json                        # Vocab.to_json()
    counts.json                       # the counts report that prepare_coco returns

Filters, in this order, per image:

1. ``split_protocol="deprecated-2017"``: the image id must be in the split's deprecated id
   list (train2017 -> train-ids.txt, val2017 -> val-ids.txt); ``"full"`` keeps every image.
2. stuff_only: the image must have at least one annotation in the stuff file (any, "other"
   included, as sg2im counts it).
3. Per annotation: dropped if its category is "other" (include_other False), if its box
   area ``w * h / (W * H)`` is not above 0.02 (min_object_size, strictly greater as in
   sg2im) or, with ``drop_iscrowd=True`` (LostGAN / LayoutDiffusion), if ``iscrowd`` is 1.
4. The image is kept when 3 to 8 annotations (both inclusive) survive step 3.

Objects are in annotation order: the instances file's annotations first, then the stuff
file's, each in file order.

Splits: train = the kept train2017 images; the kept val2017 images sorted by image id give
val (the first 1,024) and test (the rest). On the real data the deprecated protocol gives
24,972 / 1,024 / 2,048 (a warning is logged when it does not).

Vocabulary: object index == COCO category id, so checkpoints line up with sg2im / SGDiff.
Index 0 is ``__image__``, ids 1..max_id are the category names, and ids with no category
(COCO's gaps, e.g. 12, 26, 91) are named ``__unused_<id>__`` (never used by a scene). On
the real data max_id is 183 ("other", kept in the vocabulary but never in a scene), so
num_objects is 184, SGDiff's num_objs. Predicates (7): ``__in_image__``, left of, right of,
above, below, inside, surrounding.

Synthetic relations (drawn once, at preparation, so the graphs are reproducible): for each
real object i in order, an rng seeded by ``(seed, image_id)`` picks a random other object j
and a random order (subject, object) = (i, j) or (j, i); the predicate is
:func:`synthetic_predicate`. A triple equal to an earlier one of the same image is dropped
(SceneGraph rejects duplicates), so an image may have fewer relations than objects.

Mask-weighted centre: the mean pixel position of the annotation's mask. Polygons are
rasterised with PIL ImageDraw (PIL puts the vertex (x, y) on pixel (x, y), so the centre
is the mean pixel index); RLE masks (list counts or the compressed string) are decoded
here (a pixel (x, y) covers [x, x+1) x [y, y+1), so the centre is the mean index + 0.5).
An annotation with an empty or missing mask falls back to its box centre. Centres are
normalised by the image width and height.

A scene (the sg2im JSON convention plus extra keys)::

    {"image_id": 9, "file_name": "train2017/000000000009.jpg", "width": 640, "height": 480,
     "objects": ["bowl", "broccoli", ...],           # category names
     "relationships": [[0, "left of", 2], ...],
     "boxes": [[x0, y0, x1, y1], ...],              # normalised to [0, 1]
     "category_ids": [51, 56, ...],                 # == vocabulary indices
     "centres": [[cx, cy], ...]}                    # mask-weighted, normalised

``file_name`` is relative to the COCO images folder (the one holding train2017/ and
val2017/), which the dataset takes as ``image_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from sg2image.data import load_image
from sg2image.data.shapes import geometric_predicate
from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, SceneGraph, Vocab
from sg2image.models.conditioning import label_prompt

log = logging.getLogger(__name__)

PREDICATES = ("left of", "right of", "above", "below", "inside", "surrounding")
MIN_OBJECT_SIZE = 0.02
MIN_OBJECTS, MAX_OBJECTS = 3, 8
OTHER_NAME = "other"  # COCO-Stuff category 183, dropped (include_other False)
VAL_SIZE = 1024
EXPECTED_DEPRECATED_SIZES = {"train": 24972, "val": 1024, "test": 2048}
PROTOCOLS = ("deprecated-2017", "full")
SPLITS = ("train", "val", "test")
UNUSED_NAME = "__unused_{}__"


# ----------------------------------------------------------------------------- RLE masks


def decode_rle_string(s: str) -> list[int]:
    """The run lengths of a COCO compressed-RLE string (pycocotools' LEB128-like format:
    5 bits a character, offset by 48, 0x20 = more follows, 0x10 = sign of the last one;
    from the third count on, each is stored as the difference to the count two before)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle_string(counts: Sequence[int]) -> str:
    """The inverse of :func:`decode_rle_string` (pycocotools' rleToString)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_to_mask(rle: dict) -> np.ndarray:
    """(h, w) bool mask of a COCO RLE dict (``counts`` a list or a compressed string;
    runs alternate background / foreground, starting with background, column-major)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = decode_rle_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h} * {w} = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def _polygon_centre(polygons: list, box: Sequence[float], width: int, height: int):
    """Mean pixel position of the polygons, rasterised in the box's region (None if empty)."""
    bx, by, bw, bh = box
    x0 = max(int(math.floor(bx)) - 1, 0)
    y0 = max(int(math.floor(by)) - 1, 0)
    x1 = min(int(math.ceil(bx + bw)) + 2, width)
    y1 = min(int(math.ceil(by + bh)) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) < 6:
            continue
        pts = [(poly[k] - x0, poly[k + 1] - y0) for k in range(0, len(poly) - 1, 2)]
        draw.polygon(pts, fill=1)
    ys, xs = np.nonzero(np.asarray(canvas))
    if len(xs) == 0:
        return None
    return float(xs.mean() + x0), float(ys.mean() + y0)


def mask_centre(ann: dict, width: int, height: int) -> tuple[float, float]:
    """The annotation's mask-weighted centre (cx, cy) normalised by the image size; the
    box centre when it has no (or an empty) mask."""
    seg = ann.get("segmentation")
    centre = None
    if isinstance(seg, list) and seg:
        centre = _polygon_centre(seg, ann["bbox"], width, height)
    elif isinstance(seg, dict) and "counts" in seg:
        mask = rle_to_mask(seg)
        ys, xs = np.nonzero(mask)
        if len(xs):
            centre = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    if centre is None:
        x, y, w, h = ann["bbox"]
        centre = (x + w / 2, y + h / 2)
    return centre[0] / width, centre[1] / height


# ----------------------------------------------------------------------------- relations


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
    """One relation per object (duplicates of an earlier triple dropped), [s, pred, o]."""
    n = len(boxes)
    triples: list[list[Any]] = []
    if n < 2:
        return triples
    for i in range(n):
        j = int(rng.integers(n - 1))
        j += j >= i  # a random *other* object
        s, o = (i, j) if rng.random() < 0.5 else (j, i)
        pred = synthetic_predicate(boxes[s], boxes[o], centres[s], centres[o])
        if [s, pred, o] not in triples:
            triples.append([s, pred, o])
    return triples


def image_rng(seed: int, image_id: int) -> np.random.Generator:
    """The relation rng of one image: a pure function of (seed, image id)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_id)]))


# ----------------------------------------------------------------------------- preparation


def build_vocab(categories: Sequence[dict]) -> Vocab:
    """Object index == category id; gaps named ``__unused_<id>__``; 0 is ``__image__``."""
    by_id: dict[int, str] = {}
    for cat in categories:
        cid, name = int(cat["id"]), str(cat["name"])
        if cid <= 0:
            raise ValueError(f"category id {cid} ({name!r}): ids must be >= 1 (0 is __image__)")
        if by_id.get(cid, name) != name:
            raise ValueError(f"category id {cid} named both {by_id[cid]!r} and {name!r}")
        by_id[cid] = name
    max_id = max(by_id, default=0)
    names = [IMAGE_OBJECT] + [by_id.get(i, UNUSED_NAME.format(i)) for i in range(1, max_id + 1)]
    return Vocab(names, [IN_IMAGE, *PREDICATES])


def read_ids(path: Path) -> set[int]:
    """Image ids of a deprecated-challenge2017 list: one a line; the last digit run of each
    line is the id, so "9", "000000000009" and "000000000009.jpg" all read as 9."""
    ids = set()
    for line in Path(path).read_text().splitlines():
        digits = re.findall(r"\d+", Path(line.strip()).stem)
        if digits:
            ids.add(int(digits[-1]))
    return ids


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: COCO annotation file not found") from None


def _prepare_year_split(
    src: Path,
    name: str,
    keep_ids: set[int] | None,
    drop_iscrowd: bool,
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """The kept scenes of train2017 or val2017 (sorted by image id), and the categories."""
    inst = _load(src / "annotations" / f"instances_{name}.json")
    stuff = _load(src / "annotations" / f"stuff_{name}.json")
    categories = list(inst.get("categories", [])) + list(stuff.get("categories", []))
    cat_name = {int(c["id"]): str(c["name"]) for c in categories}
    images = {int(im["id"]): im for im in stuff.get("images", [])}
    images.update({int(im["id"]): im for im in inst.get("images", [])})

    with_stuff = {int(a["image_id"]) for a in stuff.get("annotations", [])}
    per_image: dict[int, list[dict]] = {}
    for ann in list(inst.get("annotations", [])) + list(stuff.get("annotations", [])):
        per_image.setdefault(int(ann["image_id"]), []).append(ann)

    scenes = []
    for image_id in sorted(images):
        if keep_ids is not None and image_id not in keep_ids:
            continue
        if image_id not in with_stuff:
            continue
        im = images[image_id]
        width, height = int(im["width"]), int(im["height"])
        kept = []
        for ann in per_image.get(image_id, []):
            cid = int(ann["category_id"])
            if cat_name.get(cid) == OTHER_NAME:
                continue
            if drop_iscrowd and int(ann.get("iscrowd", 0)) == 1:
                continue
            _, _, w, h = ann["bbox"]
            if w * h / (width * height) <= MIN_OBJECT_SIZE:
                continue
            kept.append(ann)
        if not MIN_OBJECTS <= len(kept) <= MAX_OBJECTS:
            continue
        boxes, centres = [], []
        for ann in kept:
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = [
                min(max(x / width, 0.0), 1.0),
                min(max(y / height, 0.0), 1.0),
                min(max((x + w) / width, 0.0), 1.0),
                min(max((y + h) / height, 0.0), 1.0),
            ]
            boxes.append(box)
            centres.append(list(mask_centre(ann, width, height)))
        scenes.append(
            {
                "image_id": image_id,
                "file_name": f"{name}/{im['file_name']}",
                "width": width,
                "height": height,
                "objects": [cat_name[int(a["category_id"])] for a in kept],
                "relationships": synthetic_relations(boxes, centres, image_rng(seed, image_id)),
                "boxes": boxes,
                "category_ids": [int(a["category_id"]) for a in kept],
                "centres": centres,
            }
        )
    return scenes, categories


def _counts(scenes: list[dict]) -> dict[str, int]:
    return {
        "images": len(scenes),
        "objects": sum(len(s["objects"]) for s in scenes),
        "relations": sum(len(s["relationships"]) for s in scenes),
    }


def prepare_coco(
    src: str | Path,
    out: str | Path,
    split_protocol: str = "deprecated-2017",
    drop_iscrowd: bool = False,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Prepare the COCO-Stuff 2017 scene graphs (see the module docstring); returns
    ``{split: {"images", "objects", "relations"}}``, also logged and saved as counts.json."""
    if split_protocol not in PROTOCOLS:
        raise ValueError(f"split_protocol {split_protocol!r} is not one of {list(PROTOCOLS)}")
    src, out = Path(src), Path(out)
    keep: dict[str, set[int] | None] = {"train2017": None, "val2017": None}
    if split_protocol == "deprecated-2017":
        for name, stem in (("train2017", "train"), ("val2017", "val")):
            path = src / "deprecated-challenge2017" / f"{stem}-ids.txt"
            if not path.exists():
                raise FileNotFoundError(f"{path}: needed by split_protocol='deprecated-2017'")
            keep[name] = read_ids(path)

    train, cats_train = _prepare_year_split(src, "train2017", keep["train2017"], drop_iscrowd, seed)
    val_all, cats_val = _prepare_year_split(src, "val2017", keep["val2017"], drop_iscrowd, seed)
    splits = {"train": train, "val": val_all[:VAL_SIZE], "test": val_all[VAL_SIZE:]}
    vocab = build_vocab(cats_train + cats_val)

    out.mkdir(parents=True, exist_ok=True)
    for split, scenes in splits.items():
        (out / f"{split}.json").write_text(json.dumps(scenes))
    vocab.save(out / "vocab.json")
    counts = {split: _counts(scenes) for split, scenes in splits.items()}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    for split, c in counts.items():
        log.info(
            "coco %s: %d images, %d objects, %d relations",
            split,
            c["images"],
            c["objects"],
            c["relations"],
        )
    if split_protocol == "deprecated-2017":
        for split, expected in EXPECTED_DEPRECATED_SIZES.items():
            if counts[split]["images"] != expected:
                log.warning(
                    "coco %s: %d images, the deprecated-2017 protocol gives %d on the real "
                    "data (wrong annotation version or id lists?)",
                    split,
                    counts[split]["images"],
                    expected,
                )
    return counts


# ----------------------------------------------------------------------------- dataset


class CocoSceneGraphDataset(Dataset):
    """A prepared split (``root/{split}.json``) with its images (``image_dir/file_name``).

    Items, as ShapesDataset's: {"pixel_values": float (3, image_size, image_size) in
    [-1, 1] (the whole image resized, no crop, bicubic), "graph": SceneGraph (category
    names, normalised boxes, the synthetic relations), "caption": the label prompt (object
    names, comma separated, as models.conditioning.label_prompt), "index": position in the
    split}.

    ``max_objects`` counts the ``__image__`` node the model adds, so a graph keeps at most
    ``max_objects - 1`` real objects (the first ones, in annotation order) and the
    relations among them. sg2im / SGDiff keep max_objects real objects and then add the
    image node, one more than the limit: this is the fix of that off-by-one.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_dir: str | Path,
        image_size: int = 256,
        max_objects: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown COCO split {split!r}; expected one of {', '.join(SPLITS)}")
        if max_objects is not None and max_objects < 2:
            raise ValueError(f"max_objects counts __image__, so must be >= 2, got {max_objects}")
        self.root, self.split = Path(root), split
        self.image_dir = Path(image_dir)
        self.image_size = image_size
        self.max_objects = max_objects
        path = self.root / f"{split}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found (run prepare_coco first)")
        self.scenes: list[dict] = json.loads(path.read_text())

    def __len__(self) -> int:
        return len(self.scenes)

    def graph(self, i: int) -> SceneGraph:
        scene = self.scenes[i]
        n = len(scene["objects"])
        if self.max_objects is not None:
            n = min(n, self.max_objects - 1)
        rels = [[s, p, o] for s, p, o in scene["relationships"] if s < n and o < n]
        return SceneGraph(
            objects=list(scene["objects"][:n]),
            relationships=rels,
            boxes=[[float(v) for v in b] for b in scene["boxes"][:n]],
        )

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self.scenes):
            raise IndexError(i)
        graph = self.graph(i)
        pixels = load_image(self.image_dir / self.scenes[i]["file_name"], self.image_size)
        return {
            "pixel_values": pixels,
            "graph": graph,
            "caption": label_prompt(graph.objects),
            "index": i,
        }


def coco_image_dir(data_root: str | Path) -> Path:
    """The COCO images folder (holding train2017/ and val2017/) of a prepared data_root:
    ``data_root/images`` (a folder or a symlink) if it exists, else the path written in the
    one-line text file ``data_root/coco_images`` (relative paths are from data_root)."""
    root = Path(data_root)
    if (root / "images").is_dir():
        return root / "images"
    pointer = root / "coco_images"
    if pointer.is_dir():
        return pointer
    if pointer.is_file():
        return root / pointer.read_text().strip()
    raise FileNotFoundError(
        f"{root}: no images/ folder and no coco_images file naming the COCO images folder"
    )


def make_coco_dataset(cfg: Any, split: str | None):
    """DATASETS factory: ``cfg.data_root`` is a prepare_coco output folder (see
    :func:`coco_image_dir` for where the images are). split None: the Vocab; "train" and
    "val"/"test": that split's first ``cfg.train_size`` / ``cfg.val_size`` scenes (set
    train_size to 24972 for the whole train split), at ``cfg.resolution``."""
    if cfg.data_root is None:
        raise ValueError("dataset 'coco' needs data_root (a prepare_coco output folder)")
    root = Path(cfg.data_root)
    if split is None:
        return Vocab.load(root / "vocab.json")
    ds = CocoSceneGraphDataset(root, split, coco_image_dir(root), image_size=cfg.resolution)
    size = cfg.train_size if split == "train" else cfg.val_size
    if size < len(ds):
        return torch.utils.data.Subset(ds, range(size))
    return ds

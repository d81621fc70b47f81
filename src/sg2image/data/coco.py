"""COCO-Stuff 2017 scene graphs: preparation from the raw annotations, and the dataset.

Specification: /work/shared/reference/datasets.md (the sg2im / SGDiff COCO-Stuff protocol)
and sg2im's ``sg2im/data/coco.py``, whose rules the preparation follows.

Preparation (:func:`prepare_coco`) reads, under ``src``::

    annotations/instances_{train,val}2017.json   # COCO "things" (polygons, RLE for crowds)
    annotations/stuff_{train,val}2017.json       # COCO-Stuff (compressed RLE)
    annotations/deprecated-challenge2017/{train,val}-ids.txt   # where the stuff archive
        # unpacks them; src/deprecated-challenge2017/ or ``deprecated_ids`` work too

and writes, under ``out``: ``train.json``, ``val.json``, ``test.json`` (lists of scenes,
below), ``vocab.json`` (Vocab.to_json()) and ``counts.json`` (what prepare_coco returns).

Per image, in the instances file's image order (as sg2im iterates it; an image listed only
in the stuff file is not used):

1. ``split_protocol="deprecated-2017"``: the image id must be in the split's deprecated id
   list (train2017 -> train-ids.txt, val2017 -> val-ids.txt); ``"full"`` keeps every image.
2. ``stuff_only``: the image must have at least one annotation in the stuff file (any,
   "other" included, as sg2im counts it).
3. Per annotation: dropped if its category is "other" (unless ``include_other``), if its
   box area ``w * h / (W * H)`` is not above ``min_object_size`` (strictly greater, as in
   sg2im) or, with ``drop_iscrowd`` (LostGAN / LayoutDiffusion), if ``iscrowd`` is 1.
4. Kept when ``min_objects_per_image`` to ``max_objects_per_image`` annotations (both
   inclusive) survive step 3. Objects: the instances file's annotations, then the stuff
   file's, each in file order.

Splits: train = the kept train2017 images; val = the first ``num_val`` kept val2017 images;
test = the rest (``test_split="rest"``, sg2im's TRAINING.md) or the last ``num_test``
(``"last"``, LayoutDiffusion's convention; never overlapping val). On the real data the
deprecated protocol gives 24,972 / 1,024 / 2,048 either way (a warning says when not).

Vocabulary: object index == COCO category id, so checkpoints line up with sg2im / SGDiff.
Index 0 is ``__image__``, ids 1..max_id are the category names, and ids with no category
(COCO's gaps, e.g. 12, 26, 91) are named ``__unused_<id>__`` (never used by a scene; sg2im
names them ``NONE``). On the real data max_id is 183 ("other"), so num_objects is 184,
SGDiff's num_objs. Predicates (7): ``__in_image__``, left of, right of, above, below,
inside, surrounding.

Synthetic relations, :func:`synthetic_relations`: one per real object, drawn once at
preparation with an rng seeded by ``(seed, image_id)`` so the graphs are reproducible
(sg2im draws them afresh at every load). Repeated triples are kept, as in sg2im.

Mask-weighted centre (:mod:`sg2image.data.coco_masks`): the mean pixel position of the
annotation's mask (polygons rasterised, RLE decoded here; no pycocotools), the box centre
when the mask is empty, normalised by the image size.

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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sg2image.data import load_image
from sg2image.data.coco_masks import (  # noqa: F401  (public names of the COCO module)
    decode_rle_string,
    encode_rle_string,
    mask_centre,
    rle_to_mask,
)
from sg2image.data.coco_relations import (  # noqa: F401  (public names of the COCO module)
    image_rng,
    synthetic_predicate,
    synthetic_relations,
)
from sg2image.data.raw import (
    RawFormatError,
    compare_counts,
    entry,
    expect_dict,
    expect_list,
    read_json,
    require_dir,
)
from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, SceneGraph, Vocab, label_prompt

log = logging.getLogger(__name__)

PREDICATES = ("left of", "right of", "above", "below", "inside", "surrounding")
OTHER_NAME = "other"  # COCO-Stuff category 183, dropped unless include_other
# sg2im's CocoSceneGraphDataset and TRAINING.md defaults.
DEFAULTS: dict[str, Any] = {
    "split_protocol": "deprecated-2017",
    "min_object_size": 0.02,
    "min_objects_per_image": 3,
    "max_objects_per_image": 8,
    "include_other": False,
    "stuff_only": True,
    "drop_iscrowd": False,
    "num_val": 1024,
    "num_test": 2048,
    "test_split": "rest",
    "seed": 0,
}
OPTIONS: dict[str, type] = {
    **{k: type(v) for k, v in DEFAULTS.items()},
    "deprecated_ids": str,
}
EXPECTED_DEPRECATED_SIZES = {"train": 24972, "val": 1024, "test": 2048}
PROTOCOLS = ("deprecated-2017", "full")
TEST_SPLITS = ("rest", "last")
SPLITS = ("train", "val", "test")
UNUSED_NAME = "__unused_{}__"
DEPRECATED_DIR = "deprecated-challenge2017"


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


def find_deprecated_ids(src: Path, folder: str | Path | None = None) -> Path:
    """The folder holding train-ids.txt and val-ids.txt: ``folder`` when given, else
    ``src/annotations/deprecated-challenge2017`` (where the stuff archive unpacks it), else
    ``src/deprecated-challenge2017``."""
    if folder is not None:
        candidates = [require_dir(folder, "the deprecated-challenge2017 id lists")]
    else:
        candidates = [src / "annotations" / DEPRECATED_DIR, src / DEPRECATED_DIR]
    for path in candidates:
        if (path / "train-ids.txt").is_file() and (path / "val-ids.txt").is_file():
            return path
    looked = " or ".join(str(p) for p in candidates)
    raise RawFormatError(
        f"train-ids.txt and val-ids.txt not found in {looked}: split_protocol "
        "'deprecated-2017' needs them (name their folder with deprecated_ids / "
        "--deprecated-ids, or use split_protocol 'full')"
    )


def _read_annotations(path: Path) -> dict:
    what = "a COCO annotation file (an object with images, annotations, categories)"
    data = expect_dict(read_json(path), path, what, ("images", "annotations", "categories"))
    for key in ("images", "annotations", "categories"):
        expect_list(data[key], path, "a list", where=key)
    return data


def _keep(ann: dict, image: dict, cat_name: dict, opts: dict) -> bool:
    """Whether one annotation passes the per-object filters (step 3)."""
    cid = int(ann["category_id"])
    if cid not in cat_name:
        raise ValueError(f"category_id {cid} is not in the categories")
    if cat_name[cid] == OTHER_NAME and not opts["include_other"]:
        return False
    if opts["drop_iscrowd"] and int(ann.get("iscrowd", 0)) == 1:
        return False
    _, _, w, h = (float(v) for v in ann["bbox"])
    return w * h / (int(image["width"]) * int(image["height"])) > opts["min_object_size"]


def _scene(image: dict, name: str, kept: list[dict], cat_name: dict, seed: int) -> dict:
    image_id, width, height = int(image["id"]), int(image["width"]), int(image["height"])
    boxes, centres = [], []
    for ann in kept:
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes.append(
            [
                min(max(x / width, 0.0), 1.0),
                min(max(y / height, 0.0), 1.0),
                min(max((x + w) / width, 0.0), 1.0),
                min(max((y + h) / height, 0.0), 1.0),
            ]
        )
        centres.append(list(mask_centre(ann, width, height)))
    return {
        "image_id": image_id,
        "file_name": f"{name}/{image['file_name']}",
        "width": width,
        "height": height,
        "objects": [cat_name[int(a["category_id"])] for a in kept],
        "relationships": synthetic_relations(boxes, centres, image_rng(seed, image_id)),
        "boxes": boxes,
        "category_ids": [int(a["category_id"]) for a in kept],
        "centres": centres,
    }


def _prepare_year_split(
    src: Path, name: str, keep_ids: set[int] | None, opts: dict
) -> tuple[list[dict], list[dict]]:
    """The kept scenes of train2017 or val2017, in the instances file's image order, and
    the categories of both files."""
    inst_path = src / "annotations" / f"instances_{name}.json"
    stuff_path = src / "annotations" / f"stuff_{name}.json"
    inst, stuff = _read_annotations(inst_path), _read_annotations(stuff_path)
    cat_name = {}
    for path, data in ((inst_path, inst), (stuff_path, stuff)):
        for k, cat in enumerate(data["categories"]):
            with entry(path, f"categories[{k}]"):
                cat_name[int(cat["id"])] = str(cat["name"])
    per_image: dict[int, list[dict]] = {}
    with_stuff: set[int] = set()
    for path, data in ((inst_path, inst), (stuff_path, stuff)):
        for k, ann in enumerate(data["annotations"]):
            with entry(path, f"annotations[{k}]"):
                image_id = int(ann["image_id"])
            per_image.setdefault(image_id, []).append((path, k, ann))
            if data is stuff:
                with_stuff.add(image_id)

    scenes = []
    for k, image in enumerate(inst["images"]):
        with entry(inst_path, f"images[{k}]"):
            image_id = int(image["id"])
        if keep_ids is not None and image_id not in keep_ids:
            continue
        if opts["stuff_only"] and image_id not in with_stuff:
            continue
        kept = []
        for path, j, ann in per_image.get(image_id, []):
            with entry(path, f"annotations[{j}] (image {image_id})"):
                if _keep(ann, image, cat_name, opts):
                    kept.append(ann)
        if not opts["min_objects_per_image"] <= len(kept) <= opts["max_objects_per_image"]:
            continue
        with entry(inst_path, f"image {image_id}"):
            scenes.append(_scene(image, name, kept, cat_name, opts["seed"]))
    categories = list(inst["categories"]) + list(stuff["categories"])
    return scenes, categories


def split_val(scenes: list, num_val: int, num_test: int, test_split: str) -> tuple[list, list]:
    """val = the first num_val; test = the rest ("rest") or the last num_test ("last"),
    never overlapping val."""
    val = scenes[:num_val]
    if test_split == "rest":
        return val, scenes[num_val:]
    return val, scenes[max(num_val, len(scenes) - num_test) :]


def _counts(scenes: list[dict]) -> dict[str, int]:
    return {
        "images": len(scenes),
        "objects": sum(len(s["objects"]) for s in scenes),
        "relations": sum(len(s["relationships"]) for s in scenes),
    }


def _check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"prepare_coco: unknown option(s) {', '.join(unknown)}")
    opts = {**DEFAULTS, "deprecated_ids": None, **options}
    if opts["split_protocol"] not in PROTOCOLS:
        raise ValueError(
            f"split_protocol {opts['split_protocol']!r} is not one of {list(PROTOCOLS)}"
        )
    if opts["test_split"] not in TEST_SPLITS:
        raise ValueError(f"test_split {opts['test_split']!r} is not one of {list(TEST_SPLITS)}")
    for key in ("num_val", "num_test", "min_objects_per_image", "max_objects_per_image"):
        if int(opts[key]) < 0:
            raise ValueError(f"{key} must be >= 0, got {opts[key]}")
    return opts


def prepare_coco(src: str | Path, out: str | Path, **options: Any) -> dict[str, dict[str, int]]:
    """Prepare the COCO-Stuff 2017 scene graphs (see the module docstring). ``options``:
    any of DEFAULTS (sg2im's values otherwise) and ``deprecated_ids``, the folder of the id
    lists. Returns ``{split: {"images", "objects", "relations"}}``, also saved as
    counts.json and logged beside the published counts."""
    opts = _check_options(options)
    src, out = Path(src), Path(out)
    require_dir(src, "the raw COCO-Stuff folder")
    require_dir(src / "annotations", "the COCO annotation files")
    keep: dict[str, set[int] | None] = {"train2017": None, "val2017": None}
    if opts["split_protocol"] == "deprecated-2017":
        folder = find_deprecated_ids(src, opts["deprecated_ids"])
        keep = {"train2017": read_ids(folder / "train-ids.txt")}
        keep["val2017"] = read_ids(folder / "val-ids.txt")

    train, cats_train = _prepare_year_split(src, "train2017", keep["train2017"], opts)
    val_all, cats_val = _prepare_year_split(src, "val2017", keep["val2017"], opts)
    val, test = split_val(val_all, opts["num_val"], opts["num_test"], opts["test_split"])
    splits = {"train": train, "val": val, "test": test}
    vocab = build_vocab(cats_train + cats_val)

    out.mkdir(parents=True, exist_ok=True)
    for split, scenes in splits.items():
        (out / f"{split}.json").write_text(json.dumps(scenes))
    vocab.save(out / "vocab.json")
    counts = {split: _counts(scenes) for split, scenes in splits.items()}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    _report(counts, vocab, opts)
    return counts


def _report(counts: dict, vocab: Vocab, opts: dict) -> None:
    for split, c in counts.items():
        log.info("coco %s: %d images, %d objects, %d relations", split, *c.values())
    comparable = opts["split_protocol"] == "deprecated-2017" and all(
        opts[k] == v for k, v in DEFAULTS.items() if k not in ("seed", "test_split")
    )
    got = {f"{split} images": c["images"] for split, c in counts.items()}
    got["object classes"] = vocab.num_objects
    published = {f"{s} images": n for s, n in EXPECTED_DEPRECATED_SIZES.items()}
    published["object classes"] = 184
    note = "" if comparable else " (not comparable: the settings are not sg2im's)"
    lines = "\n".join(compare_counts(got, published))
    log.info("Against the published COCO-Stuff 2017 counts%s:\n%s", note, lines)
    if not comparable:
        return
    for split, expected in EXPECTED_DEPRECATED_SIZES.items():
        if counts[split]["images"] != expected:
            log.warning(
                "coco %s: %d images, the deprecated-2017 protocol gives %d on the real "
                "data (wrong annotation version or id lists?)",
                split,
                counts[split]["images"],
                expected,
            )


# ----------------------------------------------------------------------------- dataset


class CocoSceneGraphDataset(Dataset):
    """A prepared split (``root/{split}.json``) with its images (``image_dir/file_name``).

    Items, as ShapesDataset's: {"pixel_values": float (3, image_size, image_size) in
    [-1, 1] (the whole image resized, no crop, bicubic), "graph": SceneGraph (category
    names, normalised boxes, the synthetic relations), "caption": the label prompt (object
    names, comma separated, as graph.label_prompt), "index": position in the
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

"""Visual Genome 1.4 in the sg2im protocol: preprocessing to HDF5 and the scene-graph dataset.

Specification: /work/shared/reference/datasets.md ("Visual Genome 1.4"). Our own code, not a
copy of sg2im's ``preprocess_vg.py``; the filters and file layout follow that protocol so the
prepared files are interchangeable with the ones that lineage (sg2im, SGDiff) reads.

Preprocessing, :func:`prepare_vg`, in order:

1. Images whose width or height is below ``min_image_size`` are dropped from every split
   (ids in the splits file but missing from image_data.json are dropped too).
2. Names are stripped and lower-cased, then the alias files map them to their canonical
   name (object names: the first entry of an object's ``names``; predicates: the
   relationship's ``predicate``). Attributes are only stripped and lower-cased.
3. The vocabularies are counted on the (size-filtered) *train* images only: an object name
   with at least ``min_object_instances`` instances, an attribute with at least
   ``min_attribute_instances``. An object is then kept when its name is in the vocabulary
   and its box is at least ``min_object_size`` px on both sides. A predicate enters the
   vocabulary with at least ``min_relationship_instances`` train relationships *between
   kept objects*.
4. Per image: kept objects (``min_objects_per_image`` .. ``max_objects_per_image``), their
   vocabulary attributes (at most ``max_attributes_per_image`` in the whole image), the
   relationships whose predicate is in the vocabulary and whose subject and object are
   both kept objects (``min_relationships_per_image`` .. ``max_relationships_per_image``).
   An image outside any bound is dropped.

With the default thresholds on VG 1.4 the vocabulary is 178 + ``__image__`` = 179 object
classes and 45 + ``__in_image__`` = 46 predicates; 260 / 66 is the known symptom of the
wrong VG version or filters, and :func:`prepare_vg` warns about any other result.

Output folder: ``{train,val,test}.h5`` and ``vocab.json`` (sg2im keys). HDF5 datasets, all
integers int32, per-image rows padded with -1:

=========================  ==========================  ====================================
image_ids                  (N,)                        VG image id
image_heights/_widths      (N,)                        pixels
image_paths                (N,) vlen str               relative to the images folder
                                                       (``VG_100K/1.jpg``, from the url)
objects_per_image          (N,)
object_ids                 (N, max_objects)            VG object id
object_names               (N, max_objects)            index in object_idx_to_name
object_boxes               (N, max_objects, 4)         x, y, w, h in pixels
attributes_per_object      (N, max_objects)
object_attributes          (N, max_objects, max_attrs) index in attribute_idx_to_name
relationships_per_image    (N,)
relationship_ids           (N, max_rels)               VG relationship id
relationship_subjects      (N, max_rels)               object index *within the image*
relationship_predicates    (N, max_rels)               index in pred_idx_to_name
relationship_objects       (N, max_rels)               object index *within the image*
=========================  ==========================  ====================================

(max_objects = ``max_objects_per_image``, max_rels = ``max_relationships_per_image``,
max_attrs = ``max_attributes_per_image``.)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from sg2image.data import load_image
from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, SceneGraph, Vocab
from sg2image.models.conditioning import label_prompt

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
RAW_FILES = (
    "objects.json",
    "attributes.json",
    "relationships.json",
    "object_alias.txt",
    "relationship_alias.txt",
    "image_data.json",
    "vg_splits.json",
)
EXPECTED_NUM_OBJECTS = 179  # 178 + __image__, with the default thresholds on VG 1.4
EXPECTED_NUM_PREDICATES = 46  # 45 + __in_image__

DEFAULT_FILTERS: dict[str, int] = {
    "min_image_size": 200,
    "min_object_instances": 2000,
    "min_attribute_instances": 2000,
    "min_object_size": 32,
    "min_objects_per_image": 3,
    "max_objects_per_image": 30,
    "max_attributes_per_image": 30,
    "min_relationship_instances": 500,
    "min_relationships_per_image": 1,
    "max_relationships_per_image": 30,
}
# The thresholds that decide the vocabulary: the 179 / 46 check applies when these are default.
_VOCAB_FILTERS = (
    "min_image_size",
    "min_object_instances",
    "min_object_size",
    "min_relationship_instances",
)

INT = np.int32  # sg2im's int64 arrays, stored as int32


# ---------------------------------------------------------------------------- raw inputs


def _clean(name: str) -> str:
    return " ".join(name.strip().lower().split())


def read_aliases(path: Path) -> dict[str, str]:
    """``canonical,alias1,alias2`` lines -> {alias: canonical} (all names cleaned)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        names = [_clean(n) for n in line.split(",")]
        names = [n for n in names if n]
        if not names:
            continue
        for alias in names[1:]:
            out[alias] = names[0]
    return out


def _image_id(entry: dict) -> int:
    # VG 1.4 uses "image_id"; 1.0/1.2 files use "id".
    return int(entry["image_id"] if "image_id" in entry else entry["id"])


def _object_id(obj: dict) -> int:
    return int(obj["object_id"] if "object_id" in obj else obj["id"])


def _object_name(obj: dict, aliases: dict[str, str]) -> str | None:
    names = obj.get("names")
    if names is None and "name" in obj:  # subject/object dicts of older releases
        names = [obj["name"]]
    if not names:
        return None
    name = _clean(names[0])
    return aliases.get(name, name) or None


def _image_path(entry: dict) -> str:
    """``VG_100K/1.jpg``: the url's last two parts (the layout of the VG image zips)."""
    url = entry.get("url") or entry.get("image_url")
    if url:
        return "/".join(url.rstrip("/").split("/")[-2:])
    return f"{_image_id(entry)}.jpg"


def _load_json(path: Path) -> Any:
    logger.info("reading %s", path)
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------- preprocessing


def _sorted_vocab(counts: Counter, threshold: int) -> list[str]:
    return sorted(name for name, n in counts.items() if n >= threshold)


def prepare_vg(
    src: str | Path,
    out: str | Path,
    *,
    min_image_size: int = 200,
    min_object_instances: int = 2000,
    min_attribute_instances: int = 2000,
    min_object_size: int = 32,
    min_objects_per_image: int = 3,
    max_objects_per_image: int = 30,
    max_attributes_per_image: int = 30,
    min_relationship_instances: int = 500,
    min_relationships_per_image: int = 1,
    max_relationships_per_image: int = 30,
) -> dict:
    """Filter raw VG 1.4 (``src``: the files in RAW_FILES) into ``out``/{split}.h5 + vocab.json.

    Returns (and prints) the counts report: ``{"splits": {split: {"images", "objects",
    "relationships", "attributes", "images_before"}}, "num_objects", "num_predicates",
    "num_attributes", "filters"}``; vocabulary sizes include ``__image__`` / ``__in_image__``.
    """
    src, out = Path(src), Path(out)
    filters = {
        "min_image_size": min_image_size,
        "min_object_instances": min_object_instances,
        "min_attribute_instances": min_attribute_instances,
        "min_object_size": min_object_size,
        "min_objects_per_image": min_objects_per_image,
        "max_objects_per_image": max_objects_per_image,
        "max_attributes_per_image": max_attributes_per_image,
        "min_relationship_instances": min_relationship_instances,
        "min_relationships_per_image": min_relationships_per_image,
        "max_relationships_per_image": max_relationships_per_image,
    }
    missing = [name for name in RAW_FILES if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: missing Visual Genome files: {', '.join(missing)}")
    obj_aliases = read_aliases(src / "object_alias.txt")
    rel_aliases = read_aliases(src / "relationship_alias.txt")

    # 1. images and splits
    images = {_image_id(e): e for e in _load_json(src / "image_data.json")}
    raw_splits = _load_json(src / "vg_splits.json")
    splits: dict[str, list[int]] = {}
    images_before: dict[str, int] = {}
    for split in SPLITS:
        ids = [int(i) for i in raw_splits.get(split, [])]
        images_before[split] = len(ids)
        splits[split] = [
            i
            for i in ids
            if i in images
            and int(images[i]["width"]) >= min_image_size
            and int(images[i]["height"]) >= min_image_size
        ]
    wanted = {i for ids in splits.values() for i in ids}
    train_ids = set(splits["train"])

    # 2. objects: vocabulary on train, then the kept objects of every wanted image
    image_objects: dict[int, list[dict]] = {}
    obj_counts: Counter = Counter()
    for entry in _load_json(src / "objects.json"):
        image_id = _image_id(entry)
        if image_id not in wanted:
            continue
        objs = image_objects.setdefault(image_id, [])
        seen = {o["id"] for o in objs}
        for raw in entry.get("objects", []):
            name = _object_name(raw, obj_aliases)
            oid = _object_id(raw)
            if name is None or oid in seen:
                continue
            seen.add(oid)
            obj = {"id": oid, "name": name, "box": [int(raw[k]) for k in "xywh"]}
            objs.append(obj)
            if image_id in train_ids:
                obj_counts[name] += 1
    object_names = [IMAGE_OBJECT, *_sorted_vocab(obj_counts, min_object_instances)]
    object_idx = {n: i for i, n in enumerate(object_names)}
    kept: dict[int, dict[int, dict]] = {}  # image id -> object id -> object
    for image_id, objs in image_objects.items():
        kept[image_id] = {
            o["id"]: o
            for o in objs
            if o["name"] in object_idx
            and o["box"][2] >= min_object_size
            and o["box"][3] >= min_object_size
        }
    del image_objects

    # 3. attributes, keyed by object id
    attr_counts: Counter = Counter()
    object_attrs: dict[int, list[str]] = {}
    for entry in _load_json(src / "attributes.json"):
        image_id = _image_id(entry)
        if image_id not in wanted:
            continue
        for raw in entry.get("attributes", []):
            names = []
            for a in raw.get("attributes") or []:
                a = _clean(a)
                if a and a not in names:
                    names.append(a)
            if image_id in train_ids:
                attr_counts.update(names)
            oid = _object_id(raw)
            if oid in kept.get(image_id, {}):
                object_attrs.setdefault(oid, [])
                object_attrs[oid] += [a for a in names if a not in object_attrs[oid]]
    attribute_names = _sorted_vocab(attr_counts, min_attribute_instances)
    attribute_idx = {n: i for i, n in enumerate(attribute_names)}

    # 4. relationships between kept objects; predicate vocabulary on train
    image_rels: dict[int, list[tuple[int, str, int, int]]] = {}
    pred_counts: Counter = Counter()
    for entry in _load_json(src / "relationships.json"):
        image_id = _image_id(entry)
        objs = kept.get(image_id)
        if not objs:
            continue
        rels = image_rels.setdefault(image_id, [])
        for raw in entry.get("relationships", []):
            pred = _clean(raw.get("predicate") or "")
            pred = rel_aliases.get(pred, pred)
            s, o = _object_id(raw["subject"]), _object_id(raw["object"])
            if not pred or s not in objs or o not in objs:
                continue
            rid = int(raw.get("relationship_id", raw.get("id", -1)))
            rels.append((s, pred, o, rid))
            if image_id in train_ids:
                pred_counts[pred] += 1
    pred_names = [IN_IMAGE, *_sorted_vocab(pred_counts, min_relationship_instances)]
    pred_idx = {n: i for i, n in enumerate(pred_names)}

    # 5. per-image filters and the HDF5 files
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"splits": {}, "filters": filters}
    for split in SPLITS:
        rows = []
        for image_id in splits[split]:
            objs = list(kept.get(image_id, {}).values())
            if not min_objects_per_image <= len(objs) <= max_objects_per_image:
                continue
            local = {o["id"]: k for k, o in enumerate(objs)}
            attrs = [
                [attribute_idx[a] for a in object_attrs.get(o["id"], []) if a in attribute_idx]
                for o in objs
            ]
            if sum(map(len, attrs)) > max_attributes_per_image:
                continue
            rels = [
                (local[s], pred_idx[p], local[o], rid)
                for s, p, o, rid in image_rels.get(image_id, [])
                if p in pred_idx
            ]
            if not min_relationships_per_image <= len(rels) <= max_relationships_per_image:
                continue
            rows.append((image_id, objs, attrs, rels))
        _write_split(
            out / f"{split}.h5",
            rows,
            images,
            object_idx,
            max_objects_per_image,
            max_relationships_per_image,
            max_attributes_per_image,
        )
        report["splits"][split] = {
            "images_before": images_before[split],
            "images": len(rows),
            "objects": sum(len(r[1]) for r in rows),
            "relationships": sum(len(r[3]) for r in rows),
            "attributes": sum(sum(map(len, r[2])) for r in rows),
        }

    vocab = Vocab(object_names, pred_names).to_json()
    vocab["attribute_idx_to_name"] = attribute_names
    vocab["attribute_name_to_idx"] = attribute_idx
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1))
    report.update(
        num_objects=len(object_names),
        num_predicates=len(pred_names),
        num_attributes=len(attribute_names),
    )
    print(format_report(report))
    _check_vocab_size(report, filters)
    return report


def format_report(report: dict) -> str:
    lines = [
        f"Visual Genome vocabulary: {report['num_objects']} object classes (with "
        f"{IMAGE_OBJECT}), {report['num_predicates']} predicates (with {IN_IMAGE}), "
        f"{report['num_attributes']} attributes"
    ]
    for split, c in report["splits"].items():
        lines.append(
            f"  {split:5s}: {c['images']} images (of {c['images_before']} in the splits file), "
            f"{c['objects']} objects, {c['relationships']} relationships, "
            f"{c['attributes']} attributes"
        )
    return "\n".join(lines)


def _check_vocab_size(report: dict, filters: dict[str, int]) -> None:
    if any(filters[k] != DEFAULT_FILTERS[k] for k in _VOCAB_FILTERS):
        return
    got = (report["num_objects"], report["num_predicates"])
    if got != (EXPECTED_NUM_OBJECTS, EXPECTED_NUM_PREDICATES):
        logger.warning(
            "!!! Visual Genome vocabulary is %d objects / %d predicates, but the protocol "
            "(VG 1.4 with the default filters) gives %d / %d. The known 260 / 66 result "
            "comes from the wrong VG version or filters: check that the inputs are the VG "
            "1.4 files and the splits are vg_splits.json. Results on this data are not "
            "comparable with published numbers. !!!",
            *got,
            EXPECTED_NUM_OBJECTS,
            EXPECTED_NUM_PREDICATES,
        )


def _write_split(
    path: Path,
    rows: list[tuple[int, list[dict], list[list[int]], list[tuple[int, int, int, int]]]],
    images: dict[int, dict],
    object_idx: dict[str, int],
    max_objects: int,
    max_rels: int,
    max_attrs: int,
) -> None:
    n = len(rows)

    def full(*shape: int) -> np.ndarray:
        return np.full((n, *shape), -1, dtype=INT)

    data = {
        "image_ids": np.zeros(n, INT),
        "image_heights": np.zeros(n, INT),
        "image_widths": np.zeros(n, INT),
        "objects_per_image": np.zeros(n, INT),
        "object_ids": full(max_objects),
        "object_names": full(max_objects),
        "object_boxes": full(max_objects, 4),
        "attributes_per_object": np.zeros((n, max_objects), INT),
        "object_attributes": full(max_objects, max_attrs),
        "relationships_per_image": np.zeros(n, INT),
        "relationship_ids": full(max_rels),
        "relationship_subjects": full(max_rels),
        "relationship_predicates": full(max_rels),
        "relationship_objects": full(max_rels),
    }
    paths = []
    for i, (image_id, objs, attrs, rels) in enumerate(rows):
        entry = images[image_id]
        data["image_ids"][i] = image_id
        data["image_heights"][i] = int(entry["height"])
        data["image_widths"][i] = int(entry["width"])
        paths.append(_image_path(entry))
        data["objects_per_image"][i] = len(objs)
        for k, (obj, obj_attrs) in enumerate(zip(objs, attrs, strict=True)):
            data["object_ids"][i, k] = obj["id"]
            data["object_names"][i, k] = object_idx[obj["name"]]
            data["object_boxes"][i, k] = obj["box"]
            data["attributes_per_object"][i, k] = len(obj_attrs)
            data["object_attributes"][i, k, : len(obj_attrs)] = obj_attrs
        data["relationships_per_image"][i] = len(rels)
        for k, (s, p, o, rid) in enumerate(rels):
            data["relationship_subjects"][i, k] = s
            data["relationship_predicates"][i, k] = p
            data["relationship_objects"][i, k] = o
            data["relationship_ids"][i, k] = rid
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
        f.create_dataset("image_paths", data=paths, dtype=h5py.string_dtype("utf-8"))


# ---------------------------------------------------------------------------- dataset


class VGSceneGraphDataset(Dataset):
    """A prepared split (``{split}.h5`` from :func:`prepare_vg`) as scene-graph items.

    Items: ``{"pixel_values": float (3, image_size, image_size) in [-1, 1] (the image resized,
    not cropped), "graph": SceneGraph (boxes x0, y0, x1, y1 in [0, 1], attributes),
    "caption": the object labels joined by ", ", "index": the row in the file,
    "image_id": the VG id}``.

    ``max_objects`` COUNTS the ``__image__`` node that packing adds, so a graph has at most
    ``max_objects - 1`` real objects. This fixes sg2im's (and SGDiff's) off-by-one, which
    sampled ``max_objects`` real objects and then added ``__image__``. When an image has too
    many objects the choice is deterministic: objects in a relationship first, then (with
    ``use_orphaned_objects``) the others, each group by index; the relationships among the
    chosen objects are kept. Without ``use_orphaned_objects`` objects in no relationship
    are dropped (as in sg2im), unless no object has one.

    Cleaning for :class:`SceneGraph`: boxes are clipped to the image (an object whose box
    lies outside it is dropped); self-relationships and duplicate triples are dropped.
    ``max_images`` keeps only the first rows.
    """

    def __init__(
        self,
        h5_path: str | Path,
        vocab_path: str | Path,
        image_dir: str | Path,
        image_size: int = 256,
        max_objects: int = 10,
        use_orphaned_objects: bool = True,
        max_images: int | None = None,
    ) -> None:
        if max_objects < 2:
            raise ValueError(
                f"max_objects counts the {IMAGE_OBJECT} node, so it must be >= 2, got {max_objects}"
            )
        self.h5_path, self.image_dir = Path(h5_path), Path(image_dir)
        self.image_size, self.max_objects = image_size, max_objects
        self.use_orphaned_objects = use_orphaned_objects
        raw = json.loads(Path(vocab_path).read_text())
        self.vocab = Vocab.from_json(raw)
        self.attribute_names: list[str] = list(raw.get("attribute_idx_to_name", []))
        with h5py.File(self.h5_path, "r") as f:
            self.data = {k: f[k][()] for k in f if k != "image_paths"}
            self.image_paths = [str(p) for p in f["image_paths"].asstr()[()]]
        n = len(self.image_paths)
        self.size = n if max_images is None else min(n, max_images)

    def __len__(self) -> int:
        return self.size

    def graph(self, i: int) -> SceneGraph:
        d = self.data
        width, height = float(d["image_widths"][i]), float(d["image_heights"][i])
        boxes: dict[int, tuple[float, float, float, float]] = {}
        for k in range(int(d["objects_per_image"][i])):
            x, y, w, h = (float(v) for v in d["object_boxes"][i, k])
            x0, y0 = min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)
            x1, y1 = min(max((x + w) / width, 0.0), 1.0), min(max((y + h) / height, 0.0), 1.0)
            if x0 < x1 and y0 < y1:
                boxes[k] = (x0, y0, x1, y1)
        rels = []
        for r in range(int(d["relationships_per_image"][i])):
            s, o = int(d["relationship_subjects"][i, r]), int(d["relationship_objects"][i, r])
            if s != o and s in boxes and o in boxes:
                rels.append((s, int(d["relationship_predicates"][i, r]), o))
        in_rels = sorted({k for s, _, o in rels for k in (s, o)})
        orphans = [k for k in boxes if k not in in_rels]
        limit = self.max_objects - 1
        chosen = in_rels[:limit]
        if self.use_orphaned_objects or not chosen:
            chosen += orphans[: limit - len(chosen)]
        chosen.sort()
        local = {k: j for j, k in enumerate(chosen)}
        triples: list[tuple[int, str, int]] = []
        for s, p, o in rels:
            t = (local.get(s), self.vocab.predicate_names[p], local.get(o))
            if t[0] is not None and t[2] is not None and t not in triples:
                triples.append(t)
        attributes = None
        if self.attribute_names:
            attributes = [
                [
                    self.attribute_names[a]
                    for a in d["object_attributes"][i, k, : int(d["attributes_per_object"][i, k])]
                ]
                for k in chosen
            ]
        return SceneGraph(
            objects=[self.vocab.object_names[int(d["object_names"][i, k])] for k in chosen],
            relationships=triples,
            boxes=[boxes[k] for k in chosen],
            attributes=attributes,
        )

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(i)
        graph = self.graph(i)
        path = self.image_dir / self.image_paths[i]
        pixels = load_image(path, self.image_size, Image.Resampling.BILINEAR)
        return {
            "pixel_values": pixels,
            "graph": graph,
            "caption": label_prompt(graph.objects),
            "index": i,
            "image_id": int(self.data["image_ids"][i]),
        }


def make_vg_dataset(cfg: Any, split: str | None):
    """The DATASETS factory: ``cfg.data_root`` is a :func:`prepare_vg` output folder, with
    the images under ``cfg.data_root/images`` (``images/VG_100K/1.jpg`` ...).

    split None: the Vocab; "train" / "val" / "test": that split, the first
    ``cfg.train_size`` (train) or ``cfg.val_size`` rows, at ``cfg.resolution``. The loader's
    max_objects is ``cfg.max_objects + 1`` when that is set (cfg.max_objects counts real
    objects, as the pipeline does), else the sg2im default 10 (9 real objects + __image__).
    """
    if cfg.data_root is None:
        raise ValueError("data_root: the Visual Genome dataset needs the prepare_vg folder")
    root = Path(cfg.data_root)
    if split is None:
        return Vocab.load(root / "vocab.json")
    if split not in SPLITS:
        raise ValueError(f"unknown Visual Genome split {split!r}; expected one of {SPLITS}")
    return VGSceneGraphDataset(
        root / f"{split}.h5",
        root / "vocab.json",
        root / "images",
        image_size=cfg.resolution,
        max_objects=10 if cfg.max_objects is None else cfg.max_objects + 1,
        max_images=cfg.train_size if split == "train" else cfg.val_size,
    )

"""Visual Genome 1.4 preprocessing exactly as sg2im's ``scripts/preprocess_vg.py`` does it.

Our own code; the rules below are sg2im's (read from its source), so a file prepared here
and one prepared by sg2im hold the same images, objects, vocabulary order and values.
Specification: /work/shared/reference/datasets.md ("Visual Genome 1.4").

1. Images: those of ``vg_splits.json`` whose ``min(width, height) >= min_image_size``
   (ids missing from image_data.json are dropped and counted; sg2im would crash).
2. Aliases: each line of an alias file is ``canonical,alias,...``; every name on it, the
   canonical one included, maps to the first (names stripped; a later line wins).
3. Object vocabulary, on the size-filtered *train* images: every name of every object,
   aliased, counted once per object; the names with ``>= min_object_instances`` ordered
   by count, most frequent first (``Counter.most_common``: ties in order of first
   appearance), after ``__image__``. Attributes the same way with
   ``min_attribute_instances`` (no ``__image__``-like entry).
4. Objects of every split: an object takes the first of its names (aliased) that is in the
   vocabulary, and is kept when it has one and its box is at least ``min_object_size`` px
   on both sides. Objects are keyed by VG object id, as in sg2im.
5. Predicate vocabulary, on the train images: relationships whose subject and object are
   kept objects, predicate lower-cased, stripped and aliased; those with
   ``>= min_relationship_instances``, in order of first appearance, after ``__in_image__``.
6. Per image, in order: ``min_objects_per_image`` .. ``max_objects_per_image`` kept
   objects, else dropped; the relationships whose predicate is in the vocabulary and whose
   ends are kept objects of the image, ``min_relationships_per_image`` ..
   ``max_relationships_per_image``, else dropped; each object's attributes in the
   vocabulary, the first ``max_attributes_per_image`` of them (sg2im caps per *object*
   despite the name; it never drops an image).

sg2im quirk kept by default: only the train relationships get their predicate cleaned and
aliased (sg2im does it while counting them), so a val/test relationship whose predicate is
written ``"ON"`` or with an alias matches nothing and is dropped. Object and attribute
names are used as written. ``clean_names=True`` instead lower-cases and strips every name
(objects, attributes, aliases) and cleans the predicates of every split: a tidier
vocabulary, but no longer sg2im's counts.

Output: ``{train,val,test}.h5`` and ``vocab.json`` (sg2im's keys, plus the attribute
maps). HDF5 datasets, int32, padded with -1 (sg2im's layout; ``image_heights`` /
``image_widths`` are ours, which sg2im's loader ignores):

=========================  ==========================  ====================================
image_ids                  (N,)                        VG image id
image_paths                (N,) vlen str               ``VG_100K/1.jpg`` (from the url)
objects_per_image          (N,)
object_ids                 (N, max_objects)            VG object id
object_names               (N, max_objects)            index in object_idx_to_name
object_boxes               (N, max_objects, 4)         x, y, w, h in pixels
attributes_per_object      (N, max_objects)
object_attributes          (sum of objects, max_attrs) one row per kept object, all
                                                       images' objects in image order
relationships_per_image    (N,)
relationship_ids           (N, max_rels)               VG relationship id
relationship_subjects      (N, max_rels)               object index *within the image*
relationship_predicates    (N, max_rels)               index in pred_idx_to_name
relationship_objects       (N, max_rels)               object index *within the image*
image_heights/_widths      (N,)                        pixels (ours)
=========================  ==========================  ====================================
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sg2image.data.raw import (
    RawFormatError,
    compare_counts,
    entry,
    expect_dict,
    expect_list,
    read_json,
    require_dir,
)
from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, Vocab

logger = logging.getLogger("sg2image.data.vg")

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
# sg2im's preprocess_vg.py defaults.
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
OPTIONS: dict[str, type] = {**{k: int for k in DEFAULT_FILTERS}, "clean_names": bool}
# What sg2im's defaults give on VG 1.4 (the sg2im paper and its released files).
PUBLISHED = {
    "train images": 62565,
    "val images": 5506,
    "test images": 5088,
    "object classes": 179,  # 178 + __image__
    "predicates": 46,  # 45 + __in_image__
}
EXPECTED_NUM_OBJECTS = PUBLISHED["object classes"]
EXPECTED_NUM_PREDICATES = PUBLISHED["predicates"]
INT = np.int32  # sg2im stores its int64 arrays as int32


def _clean(name: str) -> str:
    return " ".join(name.strip().lower().split())


def _as_written(name: str) -> str:
    return name


def read_aliases(path: Path, clean: bool = False) -> dict[str, str]:
    """``canonical,alias1,alias2`` lines -> {name: canonical} for every name on a line,
    the canonical one included (a later line overrides an earlier one, as in sg2im)."""
    norm = _clean if clean else str.strip
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        names = [norm(n) for n in line.split(",")]
        for name in names:
            if name:
                out[name] = names[0]
    return out


def _image_id(e: dict) -> int:
    # VG 1.4 uses "image_id"; 1.0 / 1.2 files use "id".
    return int(e["id"] if "image_id" not in e and "id" in e else e["image_id"])


def _object_id(obj: dict) -> int:
    return int(obj["id"] if "object_id" not in obj and "id" in obj else obj["object_id"])


def _object_names(obj: dict) -> list[str]:
    names = obj.get("names")
    if names is None and "name" in obj:  # subject / object dicts of older releases
        names = [obj["name"]]
    return list(names or [])


def _image_path(e: dict) -> str:
    """``VG_100K/1.jpg``: the url's last two parts (the layout of the VG image zips)."""
    url = e.get("url") or e.get("image_url")
    if url:
        return "/".join(str(url).rstrip("/").split("/")[-2:])
    return f"{_image_id(e)}.jpg"


def _per_image(path: Path, what: str):
    """(image id, entry) of a raw per-image list file, shape-checked, errors located."""
    data = expect_list(read_json(path), path, f"a list of images ({what})")
    logger.info("read %s: %d images", path, len(data))
    for k, e in enumerate(data):
        with entry(path, f"[{k}]"):
            expect_dict(e, path, "an image object", where=f"[{k}]")
            yield _image_id(e), e


def _vocab(counts: Counter, threshold: int) -> list[str]:
    # A blank name cannot be a vocabulary entry (nor, on VG 1.4, reach a threshold).
    return [n for n, c in counts.most_common() if c >= threshold and str(n).strip()]


# ---------------------------------------------------------------------------- reading


def _read_splits(src: Path, min_image_size: int) -> tuple[dict, dict, dict]:
    """{id: image entry}, {split: kept ids in file order}, {split: ids before filtering}."""
    images = {i: e for i, e in _per_image(src / "image_data.json", "image_data.json")}
    path = src / "vg_splits.json"
    raw = expect_dict(read_json(path), path, "an object of split lists", SPLITS)
    splits, before = {}, {}
    for split in SPLITS:
        ids = expect_list(raw[split], path, "a list of image ids", where=split)
        with entry(path, split):
            ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in images]
        if missing:
            logger.warning(
                "%s: %d %s ids not in image_data.json, dropped", path, len(missing), split
            )
        splits[split] = []
        for i in ids:
            if i in images:
                with entry(src / "image_data.json", f"image {i}"):
                    size = min(int(images[i]["width"]), int(images[i]["height"]))
                if size >= min_image_size:
                    splits[split].append(i)
        before[split] = len(ids)
    return images, splits, before


def _read_objects(src, wanted, train, aliases, norm, f):
    """Object vocabulary, {object id: (name index, box)} of the kept objects, {image id:
    its object ids in file order} and the vocabulary names."""
    path = src / "objects.json"
    counts: Counter = Counter()
    image_objects: dict[int, list[dict]] = {}
    for image_id, e in _per_image(path, "objects.json"):
        if image_id not in wanted:
            continue
        with entry(path, f"image {image_id}"):
            objs = expect_list(e["objects"], path, "a list of objects", where=f"image {image_id}")
            image_objects[image_id] = objs
            if image_id in train:
                for obj in objs:  # each name once per object, in order (deterministic ties)
                    names = (aliases.get(norm(n), norm(n)) for n in _object_names(obj))
                    counts.update(list(dict.fromkeys(names)))
    names = [IMAGE_OBJECT, *_vocab(counts, f["min_object_instances"])]
    index = {n: i for i, n in enumerate(names)}
    table: dict[int, tuple[int, list[int]]] = {}
    object_ids: dict[int, list[int]] = {}
    for image_id, objs in image_objects.items():
        ids = object_ids[image_id] = []
        for k, obj in enumerate(objs):
            with entry(path, f"image {image_id}: objects[{k}]"):
                oid = _object_id(obj)
                ids.append(oid)
                aliased = (aliases.get(norm(n), norm(n)) for n in _object_names(obj))
                name = next((n for n in aliased if n in index), None)
                box = [int(obj[key]) for key in "xywh"]
            if name is not None and min(box[2], box[3]) >= f["min_object_size"]:
                table[oid] = (index[name], box)
    return names, table, object_ids


def _read_attributes(src, wanted, train, norm, threshold):
    """Attribute vocabulary and {image id: {object id: attribute names or None}}."""
    path = src / "attributes.json"
    counts: Counter = Counter()
    image_attrs: dict[int, dict[int, list[str] | None]] = {}
    for image_id, e in _per_image(path, "attributes.json"):
        if image_id not in wanted:
            continue
        per_object = image_attrs[image_id] = {}
        with entry(path, f"image {image_id}"):
            for a in expect_list(
                e["attributes"], path, "a list of attributes", where=f"image {image_id}"
            ):
                names = a.get("attributes")
                names = None if names is None else [norm(n) for n in names]
                per_object[_object_id(a)] = names  # a later entry wins, as in sg2im
                if image_id in train and names is not None:
                    counts.update(list(dict.fromkeys(names)))
    return _vocab(counts, threshold), image_attrs


def _read_relationships(src, wanted, train, table, aliases, clean, threshold):
    """Predicate vocabulary and {image id: [(rel id, subject id, object id, predicate)]}."""
    path = src / "relationships.json"
    counts: Counter = Counter()
    image_rels: dict[int, list[tuple[int, int, int, str]]] = {}
    for image_id, e in _per_image(path, "relationships.json"):
        if image_id not in wanted:
            continue
        rels = image_rels[image_id] = []
        with entry(path, f"image {image_id}"):
            raw = expect_list(e["relationships"], path, "a list", where=f"image {image_id}")
        for k, r in enumerate(raw):
            with entry(path, f"image {image_id}: relationships[{k}]"):
                sid, oid = _object_id(r["subject"]), _object_id(r["object"])
                pred = str(r["predicate"])
                counted = image_id in train and sid in table and oid in table
                if counted or clean:  # sg2im cleans only the train predicates it counts
                    pred = _clean(pred) if clean else pred.lower().strip()
                    pred = aliases.get(pred, pred)
                if counted:
                    counts[pred] += 1
                rels.append((int(r["relationship_id"]), sid, oid, pred))
    names = [IN_IMAGE]
    names += [p for p, c in counts.items() if c >= threshold and p.strip() and p != IN_IMAGE]
    return names, image_rels


# ---------------------------------------------------------------------------- encoding


def _encode_image(image_id, object_ids, table, rels, attrs, pred_idx, attr_idx, f, skipped):
    """One image's (objects, relationships, attributes) or None when a filter drops it."""
    objects, local = [], {}
    for oid in object_ids:
        if oid in table:
            local[oid] = len(objects)  # a repeated id points at its last copy, as in sg2im
            objects.append((oid, *table[oid]))
    if len(objects) < f["min_objects_per_image"]:
        skipped["too_few_objects"] += 1
        return None
    if len(objects) > f["max_objects_per_image"]:
        skipped["too_many_objects"] += 1
        return None
    kept_rels = []
    for rid, sid, oid, pred in rels:
        p, s, o = pred_idx.get(pred), local.get(sid), local.get(oid)
        if p is not None and s is not None and o is not None:
            kept_rels.append((rid, s, p, o))
    if len(kept_rels) < f["min_relationships_per_image"]:
        skipped["too_few_relationships"] += 1
        return None
    if len(kept_rels) > f["max_relationships_per_image"]:
        skipped["too_many_relationships"] += 1
        return None
    object_attrs = []
    for oid, _, _ in objects:
        ids = [attr_idx[a] for a in attrs.get(oid) or [] if a in attr_idx]
        object_attrs.append(ids[: f["max_attributes_per_image"]])  # a cap per object
    return objects, kept_rels, object_attrs


def _write_split(path: Path, rows: list, images: dict, f: dict[str, int]) -> None:
    n, max_o, max_r = len(rows), f["max_objects_per_image"], f["max_relationships_per_image"]
    max_a = f["max_attributes_per_image"]

    def full(*shape: int) -> np.ndarray:
        return np.full(shape, -1, dtype=INT)

    num_objects = sum(len(r[1]) for r in rows)
    data = {
        "image_ids": full(n),
        "objects_per_image": full(n),
        "object_ids": full(n, max_o),
        "object_names": full(n, max_o),
        "object_boxes": full(n, max_o, 4),
        "attributes_per_object": full(n, max_o),
        "object_attributes": full(num_objects, max_a),
        "relationships_per_image": full(n),
        "relationship_ids": full(n, max_r),
        "relationship_subjects": full(n, max_r),
        "relationship_predicates": full(n, max_r),
        "relationship_objects": full(n, max_r),
        "image_heights": full(n),
        "image_widths": full(n),
    }
    paths, row = [], 0
    for i, (image_id, objects, rels, attrs) in enumerate(rows):
        info = images[image_id]
        data["image_ids"][i] = image_id
        data["image_heights"][i], data["image_widths"][i] = info["height"], info["width"]
        paths.append(_image_path(info))
        data["objects_per_image"][i] = len(objects)
        for k, ((oid, name, box), ids) in enumerate(zip(objects, attrs, strict=True)):
            data["object_ids"][i, k], data["object_names"][i, k] = oid, name
            data["object_boxes"][i, k] = box
            data["attributes_per_object"][i, k] = len(ids)
            data["object_attributes"][row, : len(ids)] = ids
            row += 1
        data["relationships_per_image"][i] = len(rels)
        for k, (rid, s, p, o) in enumerate(rels):
            data["relationship_ids"][i, k], data["relationship_subjects"][i, k] = rid, s
            data["relationship_predicates"][i, k], data["relationship_objects"][i, k] = p, o
    import h5py  # heavy; only the writer needs it

    with h5py.File(path, "w") as h5:
        for key, value in data.items():
            h5.create_dataset(key, data=value)
        h5.create_dataset("image_paths", data=paths, dtype=h5py.string_dtype("utf-8"))


# ---------------------------------------------------------------------------- entry point


def prepare_vg(src: str | Path, out: str | Path, clean_names: bool = False, **filters: int) -> dict:
    """Filter raw VG 1.4 (``src``: the files in RAW_FILES) into ``out``/{split}.h5 +
    vocab.json, as sg2im's preprocess_vg.py. ``filters``: any of DEFAULT_FILTERS (sg2im's
    defaults otherwise).

    Returns (and logs, at INFO with the published counts beside them: format_report) the report:
    ``{"splits": {split: {"images_before", "images", "objects", "relationships",
    "attributes", "skipped"}}, "num_objects", "num_predicates", "num_attributes",
    "filters", "clean_names"}``; vocabulary sizes include ``__image__`` / ``__in_image__``.
    """
    unknown = sorted(set(filters) - set(DEFAULT_FILTERS))
    if unknown:
        raise TypeError(f"prepare_vg: unknown filter(s) {', '.join(unknown)}")
    f = {**DEFAULT_FILTERS, **{k: int(v) for k, v in filters.items()}}
    src, out = require_dir(src, "the raw Visual Genome files"), Path(out)
    missing = [name for name in RAW_FILES if not (src / name).is_file()]
    if missing:
        raise RawFormatError(f"{src}: missing Visual Genome files: {', '.join(missing)}")
    norm = _clean if clean_names else _as_written
    obj_aliases = read_aliases(src / "object_alias.txt", clean_names)
    rel_aliases = read_aliases(src / "relationship_alias.txt", clean_names)

    images, splits, before = _read_splits(src, f["min_image_size"])
    wanted = {i for ids in splits.values() for i in ids}
    train = set(splits["train"])
    object_names, table, object_ids = _read_objects(src, wanted, train, obj_aliases, norm, f)
    attr_names, image_attrs = _read_attributes(
        src, wanted, train, norm, f["min_attribute_instances"]
    )
    pred_names, image_rels = _read_relationships(
        src, wanted, train, table, rel_aliases, clean_names, f["min_relationship_instances"]
    )
    pred_idx = {n: i for i, n in enumerate(pred_names)}
    attr_idx = {n: i for i, n in enumerate(attr_names)}

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"splits": {}, "filters": f, "clean_names": clean_names}
    for split in SPLITS:
        skipped: Counter = Counter()
        rows = []
        for image_id in splits[split]:
            encoded = _encode_image(
                image_id,
                object_ids.get(image_id, []),
                table,
                image_rels.get(image_id, []),
                image_attrs.get(image_id, {}),
                pred_idx,
                attr_idx,
                f,
                skipped,
            )
            if encoded is not None:
                rows.append((image_id, *encoded))
        _write_split(out / f"{split}.h5", rows, images, f)
        report["splits"][split] = {
            "images_before": before[split],
            "images": len(rows),
            "objects": sum(len(r[1]) for r in rows),
            "relationships": sum(len(r[2]) for r in rows),
            "attributes": sum(len(a) for r in rows for a in r[3]),
            "skipped": dict(skipped),
        }

    vocab = Vocab(object_names, pred_names).to_json()
    vocab["attribute_idx_to_name"] = attr_names
    vocab["attribute_name_to_idx"] = attr_idx
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1))
    report.update(
        num_objects=len(object_names),
        num_predicates=len(pred_names),
        num_attributes=len(attr_names),
    )
    logger.info("%s", format_report(report))
    _check_vocab_size(report)
    return report


def is_default(report: dict) -> bool:
    return report["filters"] == DEFAULT_FILTERS and not report["clean_names"]


def format_report(report: dict) -> str:
    lines = [
        f"Visual Genome vocabulary: {report['num_objects']} object classes (with "
        f"{IMAGE_OBJECT}), {report['num_predicates']} predicates (with {IN_IMAGE}), "
        f"{report['num_attributes']} attributes"
    ]
    for split, c in report["splits"].items():
        skipped = ", ".join(f"{k} {v}" for k, v in c["skipped"].items()) or "none"
        lines.append(
            f"  {split:5s}: {c['images']} images (of {c['images_before']} in the splits file), "
            f"{c['objects']} objects, {c['relationships']} relationships, "
            f"{c['attributes']} attributes; dropped: {skipped}"
        )
    got = {f"{s} images": c["images"] for s, c in report["splits"].items()}
    got.update({"object classes": report["num_objects"], "predicates": report["num_predicates"]})
    note = "" if is_default(report) else " (not comparable: the settings are not sg2im's)"
    lines.append(f"Against sg2im's published VG 1.4 counts{note}:")
    return "\n".join(lines + compare_counts(got, PUBLISHED))


def _check_vocab_size(report: dict) -> None:
    if not is_default(report):
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

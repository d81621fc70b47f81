"""A tiny raw Visual Genome 1.4 tree in the real file formats, for tests/test_vg.py.

Thresholds scaled down (SMALL; sg2im's defaults: 200, 2000, 2000, 32, 3, 30, 30, 500, 1,
30). What sg2im's rules do with each image, worked out by hand:

Object names counted on the size-filtered train images {1, 2, 4, 5, 6, 7, 8} (every object,
every name once, aliased): man 9, tree 8, car 6 (automobile -> car), dog 4, unicorn 1,
"Man" 1 (names are used as written) -> vocabulary man, tree, car, dog (by count; the
alphabetical order would be car, dog, man, tree).
Attributes, same images: red 5, blue 3, tall 2, "Red" 1 -> red, blue, tall.
Predicates of train relationships between kept objects (lower-cased, aliased): "on" first
seen (image 1), then "near"; near 7 > on 6, but the order is first appearance: on, near.
"rides" 1 -> not in the vocabulary.

train
  1  kept: man, tree, car (named ["unicorn", "automobile"]: the first name in the
     vocabulary); the 5 px high man is too small, "Man" not in the vocabulary. Relations
     "ON" and "on top of" -> on; attributes of the man ["red", "tall", "blue"] capped at 2.
  2  dropped: 2 objects after the object-size filter
  3  dropped: image 40 px wide (its objects are not counted either)
  4  dropped: 6 objects > 5
  5  dropped: its only predicate, "rides", is not in the vocabulary
  6  dropped: 4 relationships > 3
  7  kept: 5 attributes in the image, more than 2 on one object: capped, not dropped
  8  kept: the loader's image (tree in no relation, car's box leaving the image, a
     repeated triple); in VG_100K_2
  999 in the splits file only: dropped
val
  10 kept: the "valonly" objects are not in the vocabulary; "ON" stays "ON" (sg2im cleans
     only train predicates), so one relation of two
  11 dropped: its only predicate "on top of" is not aliased in val (kept with clean_names)
test
  20 kept; the car's attributes ["red", "red"] give [0, 0]
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

SMALL = {
    "min_image_size": 50,
    "min_object_instances": 2,
    "min_attribute_instances": 2,
    "min_object_size": 8,
    "min_objects_per_image": 3,
    "max_objects_per_image": 5,
    "max_attributes_per_image": 2,
    "min_relationship_instances": 2,
    "min_relationships_per_image": 1,
    "max_relationships_per_image": 3,
}

BIG = (10, 10, 20, 20)
# image id -> (width, height, objects [(names, x, y, w, h, attributes)], relationships
# [(subject index, predicate, object index)]).
IMAGES: dict[int, tuple] = {
    1: (
        100,
        80,
        [
            ("man", 10, 10, 20, 20, ["red", "tall", "blue"]),
            ("tree", 40, 10, 20, 30, []),
            (["unicorn", "automobile"], 5, 50, 30, 20, ["red"]),
            ("man", 70, 40, 10, 5, []),
            ("Man", *BIG, ["Red"]),
        ],
        [(0, "ON", 1), (2, "on top of", 1), (0, "near", 2), (3, "near", 0)],
    ),
    2: (
        120,
        90,
        [("man", *BIG, []), ("tree", *BIG, []), ("dog", 0, 0, 5, 20, [])],
        [(0, "near", 1)],
    ),
    3: (
        40,
        100,
        [("man", *BIG, []), ("tree", *BIG, ["tall"]), ("car", *BIG, []), ("unicorn", *BIG, [])],
        [(0, "on", 1)],
    ),
    4: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "car", "dog", "man", "tree")],
        [(0, "on", 1)],
    ),
    5: (100, 100, [(n, *BIG, []) for n in ("man", "tree", "car")], [(0, "rides", 1)]),
    6: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "dog", "car")],
        [(0, "near", 1), (2, "near", 1), (3, "near", 1), (0, "on", 3)],
    ),
    7: (
        100,
        100,
        [
            ("man", *BIG, ["red", "blue", "tall"]),
            ("tree", *BIG, ["red", "blue"]),
            ("car", *BIG, ["red"]),
        ],
        [(0, "on", 1)],
    ),
    8: (
        100,
        100,
        [
            ("dog", 0, 0, 50, 50, []),
            ("man", 50, 0, 50, 50, []),
            ("car", 80, 80, 40, 40, []),
            ("tree", 0, 50, 50, 50, []),
        ],
        [(0, "near", 1), (1, "on", 2), (0, "near", 1)],
    ),
    10: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "car", "valonly", "valonly", "valonly")],
        [(0, "ON", 1), (0, "near", 2)],
    ),
    11: (100, 100, [(n, *BIG, []) for n in ("man", "tree", "car")], [(0, "on top of", 1)]),
    20: (
        100,
        100,
        [("man", *BIG, []), ("tree", *BIG, []), ("car", *BIG, ["red", "red"])],
        [(0, "near", 2)],
    ),
}
SPLITS = {"train": [1, 2, 3, 4, 5, 6, 7, 8, 999], "val": [10, 11], "test": [20]}


def colour(image_id: int) -> tuple[int, int, int]:
    return (image_id * 20 % 256, 100, 200)


def _vg_objects(image_id: int, objs: list) -> list[dict]:
    out = []
    for k, (names, x, y, w, h, _) in enumerate(objs):
        names = [names] if isinstance(names, str) else list(names)
        out.append(
            {
                "object_id": image_id * 100 + k,
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "names": names,
                "synsets": [f"{names[0].lower()}.n.01"],
                "merged_object_ids": [],
            }
        )
    return out


def write_raw_vg(root: Path) -> tuple[Path, Path]:
    """The raw VG 1.4 files in ``root/raw`` and the images in ``root/images``."""
    raw, images = root / "raw", root / "images"
    raw.mkdir(parents=True)
    image_data, objects, attributes, relationships = [], [], [], []
    for image_id, (w, h, objs, rels) in IMAGES.items():
        folder = "VG_100K_2" if image_id == 8 else "VG_100K"
        url = f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
        image_data.append(
            {"image_id": image_id, "url": url, "width": w, "height": h, "coco_id": None}
        )
        (images / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), colour(image_id)).save(images / folder / f"{image_id}.jpg")
        vg_objs = _vg_objects(image_id, objs)
        objects.append({"image_id": image_id, "image_url": url, "objects": vg_objs})
        with_attrs = [{**o, "attributes": objs[k][5]} for k, o in enumerate(vg_objs) if objs[k][5]]
        attributes.append({"image_id": image_id, "attributes": with_attrs})
        relationships.append(
            {
                "image_id": image_id,
                "relationships": [
                    {
                        "relationship_id": image_id * 100 + k,
                        "predicate": pred,
                        "synsets": ["along.r.01"],
                        "subject": vg_objs[s],
                        "object": vg_objs[o],
                    }
                    for k, (s, pred, o) in enumerate(rels)
                ],
            }
        )
    files = {
        "image_data.json": image_data,
        "objects.json": objects,
        "attributes.json": attributes,
        "relationships.json": relationships,
        "vg_splits.json": SPLITS,
    }
    for name, data in files.items():
        (raw / name).write_text(json.dumps(data))
    (raw / "object_alias.txt").write_text("car,automobile,auto\nman,guy\n\n")
    (raw / "relationship_alias.txt").write_text("on,on top of,sitting on\n")
    return raw, images

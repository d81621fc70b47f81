"""A tiny raw COCO-Stuff 2017 tree in the real formats, for tests/test_coco.py.

Every image is 100 x 80 px (area 8000: min_object_size 0.02 is a box area of 160 px).

train2017 (deprecated train ids: 1, 2, 3, 4, 5, 7; not 6):
  1  person (polygon), car (crowd, list-count RLE), sky-other (compressed RLE, L-shaped),
     dog 16x10 (box area exactly 160: dropped), "other" (dropped)       -> kept, 3 objects
     (2 with drop_iscrowd -> dropped)
  2  1 thing + grass                                                    -> too few (dropped)
  3  8 things + grass = 9                                               -> too many (dropped)
  4  7 things + grass = 8                                               -> kept (upper bound)
  5  3 things, no stuff annotation at all                               -> stuff_only drops it
  6  2 things + grass                                                   -> kept only by "full"
  7  3 things + "other" stuff                                           -> kept, 3 objects
val2017 (listed out of order; deprecated val ids: all but 104):
  101..105: 2 things + grass each                                       -> kept
  kept val2017 images, in the instances file's order: 105, 101, 103, 102

The stuff files list their images in reverse order, plus image 8 (train) / 108 (val) that
the instances file does not have: sg2im iterates the instances file's images, so neither
the order nor those images come from the stuff file. The deprecated-challenge id lists
are under annotations/deprecated-challenge2017/, where the stuff archive unpacks them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sg2image.data.coco import encode_rle_string

W, H = 100, 80

THINGS = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
]
STUFF = [
    {"id": 124, "name": "grass", "supercategory": "plant"},
    {"id": 157, "name": "sky-other", "supercategory": "sky"},
    {"id": 183, "name": "other", "supercategory": "other"},
]


def mask_counts(mask: np.ndarray) -> list[int]:
    """COCO RLE run lengths (column-major, starting with a background run)."""
    flat = mask.T.ravel().astype(bool)
    counts, current, run = [], False, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


def rect_mask(x: int, y: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = True
    return m


class _Anns:
    def __init__(self) -> None:
        self.items: list[dict] = []

    def poly(self, image_id, cat, x, y, w, h, iscrowd=0):
        seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        self._add(image_id, cat, [x, y, w, h], seg, iscrowd)

    def rle(self, image_id, cat, mask, compressed=True, iscrowd=0):
        ys, xs = np.nonzero(mask)
        box = [
            int(xs.min()),
            int(ys.min()),
            int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1),
        ]
        counts = mask_counts(mask)
        seg = {"size": [H, W], "counts": encode_rle_string(counts) if compressed else counts}
        self._add(image_id, cat, box, seg, iscrowd)

    def _add(self, image_id, cat, box, seg, iscrowd):
        self.items.append(
            {
                "id": len(self.items) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": box,
                "area": float(box[2] * box[3]),
                "iscrowd": iscrowd,
                "segmentation": seg,
            }
        )


def sky_mask() -> np.ndarray:
    """An L shape: the top 10 rows plus the left 10 columns down to row 40 (box 0,0,100,40)."""
    m = rect_mask(0, 0, 100, 10)
    m[:40, :10] = True
    return m


def _row_of_things(anns: _Anns, image_id: int, n: int) -> None:
    cats = [1, 3, 18]
    for k in range(n):
        x, y = 2 + (k % 4) * 24, 2 + (k // 4) * 38
        anns.poly(image_id, cats[k % 3], x, y, 20, 20)


def _image(path: Path, seed: int) -> None:
    """A left green strip (x < 10), then red to x 50, then blue: resizing vs cropping shows."""
    arr = np.zeros((H, W, 3), np.uint8)
    arr[:, :10] = (0, 255, 0)
    arr[:, 10:50] = (255, 0, 0)
    arr[:, 50:] = (0, 0, 255)
    arr[0, 0] = (seed % 256, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def build_coco_fixture(root: Path) -> Path:
    """Write the raw tree under root; returns root. Images under root/images/{train,val}2017."""
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True)
    # ---- train2017
    inst, stuff = _Anns(), _Anns()
    inst.poly(1, 1, 10, 30, 20, 20)  # person
    inst.rle(1, 3, rect_mask(60, 30, 30, 20), compressed=False, iscrowd=1)  # crowd car
    inst.poly(1, 18, 40, 60, 16, 10)  # dog, box area exactly 160 -> dropped
    stuff.rle(1, 157, sky_mask())  # sky-other
    stuff.rle(1, 183, rect_mask(0, 50, 100, 30))  # other -> dropped
    _row_of_things(inst, 2, 1)
    stuff.rle(2, 124, rect_mask(0, 60, 100, 20))
    _row_of_things(inst, 3, 8)
    stuff.rle(3, 124, rect_mask(0, 60, 100, 20))
    _row_of_things(inst, 4, 7)
    stuff.rle(4, 124, rect_mask(0, 60, 100, 20))
    _row_of_things(inst, 5, 3)
    _row_of_things(inst, 6, 2)
    stuff.rle(6, 124, rect_mask(0, 60, 100, 20))
    _row_of_things(inst, 7, 3)
    stuff.rle(7, 183, rect_mask(0, 60, 100, 20))
    _row_of_things(stuff, 8, 3)  # an image of the stuff file only: never used
    stuff.rle(8, 124, rect_mask(0, 60, 100, 20))
    train_ids = [1, 2, 3, 4, 5, 6, 7]
    _write_split(root, "train2017", train_ids, inst, stuff, ext="jpg")
    ids_dir = root / "annotations" / "deprecated-challenge2017"
    ids_dir.mkdir()
    listed = [i for i in train_ids if i != 6]
    (ids_dir / "train-ids.txt").write_text("".join(f"{i:012d}\n" for i in listed))
    # ---- val2017
    inst, stuff = _Anns(), _Anns()
    val_ids = [105, 101, 103, 104, 102]
    for i in val_ids:
        _row_of_things(inst, i, 2)
        stuff.rle(i, 124, rect_mask(0, 60, 100, 20))
    _row_of_things(stuff, 108, 3)
    stuff.rle(108, 124, rect_mask(0, 60, 100, 20))
    _write_split(root, "val2017", val_ids, inst, stuff, ext="png")
    (ids_dir / "val-ids.txt").write_text("".join(f"{i}\n" for i in val_ids if i != 104) + "\n")
    return root


def _write_split(root: Path, name: str, ids, inst: _Anns, stuff: _Anns, ext: str) -> None:
    images = [{"id": i, "file_name": f"{i:012d}.{ext}", "width": W, "height": H} for i in ids]
    for im in images:
        _image(root / "images" / name / im["file_name"], im["id"])
    extra = ids[0] // 100 * 100 + 8  # 8 or 108: in the stuff file only
    stuff_images = [*images[::-1], {**images[0], "id": extra, "file_name": f"{extra:012d}.jpg"}]
    for kind, anns, cats, ims in (
        ("instances", inst, THINGS, images),
        ("stuff", stuff, STUFF, stuff_images),
    ):
        data = {"images": ims, "annotations": anns.items, "categories": cats}
        (root / "annotations" / f"{kind}_{name}.json").write_text(json.dumps(data))

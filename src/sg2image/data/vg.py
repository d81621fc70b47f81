"""Visual Genome 1.4 in the sg2im protocol: the scene-graph dataset of prepared files.

The preparation (:func:`prepare_vg`, sg2im's ``preprocess_vg.py`` rules) is in
:mod:`sg2image.data.vg_prepare`, re-exported here. The dataset reads both a file written by
it and one written by sg2im's own script (which has no ``image_heights`` /
``image_widths``: the size then comes from the image file's header, as sg2im's loader
takes it), and the ``(N, max_objects, max_attrs)`` ``object_attributes`` of files written
by sg2image before it followed sg2im's one-row-per-object layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from sg2image.data import load_image
from sg2image.data.vg_prepare import (  # noqa: F401  (the public names of the VG module)
    DEFAULT_FILTERS,
    EXPECTED_NUM_OBJECTS,
    EXPECTED_NUM_PREDICATES,
    PUBLISHED,
    RAW_FILES,
    SPLITS,
    format_report,
    prepare_vg,
    read_aliases,
)
from sg2image.graph import IMAGE_OBJECT, SceneGraph, Vocab, label_prompt


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
    lies outside it is dropped) and self-relationships are dropped. A repeated triple is
    kept, as sg2im's loader keeps it. ``max_images`` keeps only the first rows.
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
        # sg2im's layout: object_attributes has one row per object of every image, in order.
        counts = self.data["objects_per_image"].astype(np.int64)
        self.first_object = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def image_size_of(self, i: int) -> tuple[float, float]:
        """(width, height) in pixels: from the file, else (sg2im's files) the image header."""
        if "image_widths" in self.data and "image_heights" in self.data:
            return float(self.data["image_widths"][i]), float(self.data["image_heights"][i])
        with Image.open(self.image_dir / self.image_paths[i]) as im:  # reads the header only
            return float(im.width), float(im.height)

    def attributes_of(self, i: int, k: int) -> list[str]:
        d = self.data
        count = max(int(d["attributes_per_object"][i, k]), 0)  # sg2im pads with -1
        rows = d["object_attributes"]
        row = rows[i, k] if rows.ndim == 3 else rows[self.first_object[i] + k]
        return [self.attribute_names[a] for a in row[:count]]

    def __len__(self) -> int:
        return self.size

    def graph(self, i: int) -> SceneGraph:
        d = self.data
        width, height = self.image_size_of(i)
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
            if t[0] is not None and t[2] is not None:
                triples.append(t)
        attributes = None
        if self.attribute_names:
            attributes = [self.attributes_of(i, k) for k in chosen]
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

"""COCO-Stuff 2017 preparation and dataset, on a tiny raw fixture (tests/fixtures_coco.py)."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures_coco import H, W, build_coco_fixture, mask_counts, rect_mask, sky_mask

from sg2image.data import coco
from sg2image.data.coco import (
    CocoSceneGraphDataset,
    decode_rle_string,
    encode_rle_string,
    image_rng,
    make_coco_dataset,
    mask_centre,
    prepare_coco,
    read_ids,
    rle_to_mask,
    synthetic_predicate,
    synthetic_relations,
)
from sg2image.graph import SceneGraph, Vocab


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return build_coco_fixture(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """Deprecated protocol, val split after 2 images (the real 1,024 would leave test empty)."""
    out = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(coco, "VAL_SIZE", 2)
        counts = prepare_coco(raw, out)
    return out, counts


def _scenes(out, split):
    return json.loads((out / f"{split}.json").read_text())


def _by_id(out, split):
    return {s["image_id"]: s for s in _scenes(out, split)}


# ----------------------------------------------------------------------------- RLE


def test_rle_string_hand_values():
    assert decode_rle_string("3522") == [3, 5, 2, 7]  # 4th stored as 7 - 5 = 2
    assert decode_rle_string("352L") == [3, 5, 2, 1]  # negative difference (-4)
    assert decode_rle_string("T3") == [100]  # two 5-bit groups
    assert encode_rle_string([3, 5, 2, 7]) == "3522"
    assert encode_rle_string([3, 5, 2, 1]) == "352L"
    assert encode_rle_string([100]) == "T3"


def test_rle_round_trip_and_mask():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((H, W)) < rng.random()
        counts = mask_counts(mask)
        assert decode_rle_string(encode_rle_string(counts)) == counts
        for seg_counts in (counts, encode_rle_string(counts)):
            got = rle_to_mask({"size": [H, W], "counts": seg_counts})
            assert got.shape == (H, W) and (got == mask).all()
    with pytest.raises(ValueError, match="sum"):
        rle_to_mask({"size": [H, W], "counts": [5, 5]})


def test_mask_centre_polygon_rle_and_fallback():
    poly = {"bbox": [10, 10, 20, 10], "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]}
    assert mask_centre(poly, W, H) == pytest.approx((20 / W, 15 / H))
    # A right triangle: mask centre pulled towards the right-angle corner (10, 10).
    tri = {"bbox": [10, 10, 30, 30], "segmentation": [[10, 10, 40, 10, 10, 40]]}
    cx, cy = mask_centre(tri, W, H)
    assert cx * W == pytest.approx(20, abs=0.7) and cy * H == pytest.approx(20, abs=0.7)
    mask = sky_mask()
    rle = {"bbox": [0, 0, 100, 40], "segmentation": {"size": [H, W], "counts": mask_counts(mask)}}
    ys, xs = np.nonzero(mask)
    assert mask_centre(rle, W, H) == pytest.approx(((xs.mean() + 0.5) / W, (ys.mean() + 0.5) / H))
    rect = {"bbox": [60, 30, 30, 20], "segmentation": {"size": [H, W], "counts": ""}}
    rect["segmentation"]["counts"] = encode_rle_string(mask_counts(rect_mask(60, 30, 30, 20)))
    assert mask_centre(rect, W, H) == pytest.approx((75 / W, 40 / H))  # exact for a rect
    nomask = {"bbox": [0, 0, 50, 40]}
    assert mask_centre(nomask, W, H) == (0.25, 0.25)
    degenerate = {"bbox": [0, 0, 50, 40], "segmentation": [[1, 1, 2, 2]]}  # < 3 points
    assert mask_centre(degenerate, W, H) == (0.25, 0.25)


# ----------------------------------------------------------------------------- relations


BIG, SMALL = (0.1, 0.1, 0.9, 0.9), (0.2, 0.2, 0.5, 0.5)


def test_containment_predicates():
    c = (0.5, 0.5)
    assert synthetic_predicate(BIG, SMALL, c, c) == "surrounding"
    assert synthetic_predicate(SMALL, BIG, c, c) == "inside"
    # Sharing an edge is not strict containment: the angle rule decides.
    edge = (0.1, 0.2, 0.5, 0.5)
    assert synthetic_predicate(BIG, edge, (0.5, 0.5), (0.3, 0.35)) == "right of"
    assert synthetic_predicate(edge, BIG, (0.3, 0.35), (0.5, 0.5)) == "left of"


@pytest.mark.parametrize(
    ("subj", "obj", "pred"),
    [
        ((0.2, 0.5), (0.8, 0.5), "left of"),
        ((0.8, 0.5), (0.2, 0.5), "right of"),
        ((0.5, 0.2), (0.5, 0.8), "above"),  # y points down
        ((0.5, 0.8), (0.5, 0.2), "below"),
        # The boundaries: theta = -pi/4, pi/4, 3pi/4, -3pi/4.
        ((0.6, 0.4), (0.5, 0.5), "right of"),
        ((0.6, 0.6), (0.5, 0.5), "below"),
        ((0.4, 0.6), (0.5, 0.5), "left of"),
        ((0.4, 0.4), (0.5, 0.5), "left of"),
    ],
)
def test_direction_predicates(subj, obj, pred):
    a, b = (0.0, 0.0, 0.5, 0.5), (0.3, 0.3, 0.8, 0.8)  # overlapping, neither contains
    assert synthetic_predicate(a, b, subj, obj) == pred


def test_boundary_angles_are_exact():
    # The boundary cases above rely on these being exactly the thresholds.
    assert math.atan2(-1, 1) == -math.pi / 4 and math.atan2(1, 1) == math.pi / 4
    assert math.atan2(1, -1) == 3 * math.pi / 4 and math.atan2(-1, -1) == -3 * math.pi / 4


def test_direction_uses_centres_not_boxes():
    # Box centres say "right of"; the mask-weighted centres say "left of".
    a, b = (0.5, 0.0, 1.0, 0.5), (0.0, 0.2, 0.6, 0.6)
    assert synthetic_predicate(a, b, (0.55, 0.3), (0.58, 0.3)) == "left of"


def test_synthetic_relations_one_per_object_no_duplicates():
    rng = np.random.default_rng(3)
    boxes = [(0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7), (0.1, 0.6, 0.3, 0.9)]
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    for _ in range(50):
        rels = synthetic_relations(boxes, centres, rng)
        assert 1 <= len(rels) <= 3
        assert len({tuple(r) for r in rels}) == len(rels)
        for s, p, o in rels:
            assert s != o and p == synthetic_predicate(boxes[s], boxes[o], centres[s], centres[o])
    assert synthetic_relations(boxes[:1], centres[:1], rng) == []


# ----------------------------------------------------------------------------- preparation


def test_filters_and_split_assignment(prepared):
    out, counts = prepared
    train = _by_id(out, "train")
    # 2 too few, 3 too many, 5 no stuff, 6 not a deprecated id.
    assert sorted(train) == [1, 4, 7]
    one = train[1]
    assert one["objects"] == ["person", "car", "sky-other"]  # tiny dog and "other" dropped
    assert one["category_ids"] == [1, 3, 157]
    assert len(train[4]["objects"]) == 8  # the upper bound is inclusive
    assert "other" not in train[7]["objects"] and len(train[7]["objects"]) == 3
    assert [s["image_id"] for s in _scenes(out, "val")] == [101, 102]  # sorted by id
    assert [s["image_id"] for s in _scenes(out, "test")] == [103, 105]  # 104 not listed
    assert counts["train"] == {
        "images": 3,
        "objects": 14,
        "relations": counts["train"]["relations"],
    }
    assert counts["val"]["images"] == 2 and counts["test"]["images"] == 2
    for split in ("train", "val", "test"):
        scenes = _scenes(out, split)
        assert counts[split]["relations"] == sum(len(s["relationships"]) for s in scenes)
    assert json.loads((out / "counts.json").read_text()) == counts


def test_scene_contents(prepared):
    out, _ = prepared
    one = _by_id(out, "train")[1]
    assert one["file_name"] == "train2017/000000000001.jpg"
    assert (one["width"], one["height"]) == (W, H)
    assert one["boxes"][0] == pytest.approx([0.1, 30 / H, 0.3, 50 / H])
    assert one["boxes"][2] == pytest.approx([0.0, 0.0, 1.0, 40 / H])  # from the RLE mask
    mask = sky_mask()
    ys, xs = np.nonzero(mask)
    assert one["centres"][2] == pytest.approx([(xs.mean() + 0.5) / W, (ys.mean() + 0.5) / H])
    assert one["centres"][1] == pytest.approx([0.75, 0.5])  # crowd car, list-count RLE
    for split in ("train", "val", "test"):
        for s in _scenes(out, split):
            graph = SceneGraph(
                objects=s["objects"], relationships=s["relationships"], boxes=s["boxes"]
            )
            assert 1 <= len(graph.relationships) <= graph.num_objects
            # Reproducible from (seed, image id) alone.
            expect = synthetic_relations(s["boxes"], s["centres"], image_rng(0, s["image_id"]))
            assert s["relationships"] == expect


def test_vocabulary(prepared):
    out, _ = prepared
    vocab = Vocab.load(out / "vocab.json")
    assert vocab.num_objects == 184  # max category id 183 ("other") + __image__
    assert vocab.object_names[0] == "__image__"
    for cid, name in [(1, "person"), (3, "car"), (18, "dog"), (124, "grass"), (183, "other")]:
        assert vocab.object_idx(name) == cid
    assert vocab.object_names[2] == "__unused_2__"
    assert vocab.predicate_names == [
        "__in_image__",
        *("left of", "right of", "above", "below", "inside", "surrounding"),
    ]
    for s in _scenes(out, "train"):
        assert [vocab.object_idx(n) for n in s["objects"]] == s["category_ids"]


def test_full_protocol_iscrowd_and_determinism(raw, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sg2image.data.coco"):
        counts = prepare_coco(raw, tmp_path / "a", split_protocol="full")
    assert not caplog.records  # sizes are only checked under the deprecated protocol
    assert sorted(_by_id(tmp_path / "a", "train")) == [1, 4, 6, 7]
    assert counts["val"]["images"] == 5 and counts["test"]["images"] == 0  # real VAL_SIZE
    prepare_coco(raw, tmp_path / "b", split_protocol="full")
    for name in ("train.json", "val.json", "test.json", "vocab.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Another seed, other draws (on the 8-object image at least one relation changes).
    prepare_coco(raw, tmp_path / "c", split_protocol="full", seed=1)
    rel = {s: [x["relationships"] for x in _scenes(tmp_path / s, "train")] for s in "ac"}
    assert rel["a"] != rel["c"]
    prepare_coco(raw, tmp_path / "d", split_protocol="full", drop_iscrowd=True)
    assert sorted(_by_id(tmp_path / "d", "train")) == [4, 6, 7]  # image 1 falls to 2 objects


def test_counts_warning_and_errors(raw, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sg2image.data.coco"):
        prepare_coco(raw, tmp_path / "out")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "train: 3 images" in text and "24972" in text
    assert "test: 0 images" in text and "2048" in text
    with pytest.raises(ValueError, match="split_protocol"):
        prepare_coco(raw, tmp_path / "x", split_protocol="2014")
    with pytest.raises(FileNotFoundError, match="instances_train2017"):
        prepare_coco(tmp_path / "missing", tmp_path / "x", split_protocol="full")


def test_read_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("9\n000000000025\n000000000030.jpg\n\n")
    assert read_ids(path) == {9, 25, 30}


# ----------------------------------------------------------------------------- dataset


def test_dataset_items(raw, prepared):
    out, _ = prepared
    ds = CocoSceneGraphDataset(out, "train", raw / "images", image_size=32)
    assert len(ds) == 3
    item = ds[0]
    assert set(item) == {"pixel_values", "graph", "caption", "index"}
    px = item["pixel_values"]
    assert px.shape == (3, 32, 32) and px.dtype == torch.float32
    assert px.min() >= -1 and px.max() <= 1
    # Resized, not cropped: the green strip at x < 10 (of 100) survives in column 0, and
    # blue (x >= 50) reaches the last column.
    assert px[1, 16, 0] > 0.9 and px[0, 16, 0] < -0.9
    assert px[2, 16, 31] > 0.9 and px[0, 16, 31] < -0.9
    assert item["graph"].objects == ["person", "car", "sky-other"]
    assert item["caption"] == "person, car, sky-other"
    assert item["index"] == 0
    assert item["graph"].boxes[0] == pytest.approx((0.1, 30 / H, 0.3, 50 / H))
    val = CocoSceneGraphDataset(out, "test", raw / "images", image_size=16)
    assert val[1]["pixel_values"].shape == (3, 16, 16)  # a PNG from val2017
    with pytest.raises(IndexError):
        ds[3]


def test_max_objects_counts_the_image_node(raw, prepared):
    out, _ = prepared
    ds = CocoSceneGraphDataset(out, "train", raw / "images", image_size=8, max_objects=4)
    scenes = {s["image_id"]: i for i, s in enumerate(ds.scenes)}
    g = ds.graph(scenes[4])  # 8 objects in the scene
    assert g.num_objects == 3  # + __image__ = 4
    assert g.objects == ds.scenes[scenes[4]]["objects"][:3]
    assert all(s < 3 and o < 3 for s, _, o in g.relationships)
    with pytest.raises(ValueError, match="max_objects"):
        CocoSceneGraphDataset(out, "train", raw / "images", max_objects=1)
    with pytest.raises(ValueError, match="split"):
        CocoSceneGraphDataset(out, "training", raw / "images")


def test_make_coco_dataset(raw, prepared, tmp_path):
    out, _ = prepared
    root = tmp_path / "root"
    root.mkdir()
    for name in ("train.json", "val.json", "test.json", "vocab.json"):
        (root / name).write_bytes((out / name).read_bytes())
    cfg = SimpleNamespace(data_root=str(root), resolution=16, train_size=2, val_size=64)
    with pytest.raises(FileNotFoundError, match="coco_images"):
        make_coco_dataset(cfg, "train")
    (root / "coco_images").write_text(str(raw / "images") + "\n")
    assert make_coco_dataset(cfg, None) == Vocab.load(out / "vocab.json")
    train = make_coco_dataset(cfg, "train")
    assert len(train) == 2  # cfg.train_size caps it
    assert train[1]["pixel_values"].shape == (3, 16, 16)
    val = make_coco_dataset(cfg, "val")
    assert len(val) == 2 and val[0]["graph"].num_objects == 3
    (root / "images").symlink_to(raw / "images")  # images/ wins over the pointer file
    assert make_coco_dataset(cfg, "test")[0]["pixel_values"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="data_root"):
        make_coco_dataset(SimpleNamespace(data_root=None), "train")


def test_coco_is_a_training_dataset(raw, prepared):
    from sg2image.training.config import dataset_vocab, load_config, make_dataset

    out, _ = prepared
    (out / "coco_images").write_text(str(raw / "images") + "\n")
    cfg = load_config(None, ["dataset=coco", f"data_root={out}", "resolution=16", "train_size=1"])
    assert dataset_vocab(cfg) == Vocab.load(out / "vocab.json")
    assert make_dataset(cfg, "train")[0]["pixel_values"].shape == (3, 16, 16)

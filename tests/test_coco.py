"""COCO-Stuff 2017 preparation and dataset, on a tiny raw fixture (tests/fixtures_coco.py)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures_coco import H, W, build_coco_fixture, mask_counts, rect_mask, sky_mask
from typer.testing import CliRunner

from sg2image.cli import app
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
from sg2image.data.raw import RawFormatError
from sg2image.graph import SceneGraph, Vocab, load_graphs


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return build_coco_fixture(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    """Deprecated protocol, val split after 2 images (the real 1,024 would leave test empty)."""
    out = tmp_path_factory.mktemp("prepared")
    counts = prepare_coco(raw, out, num_val=2)
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


BOXES3 = [(0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7), (0.1, 0.6, 0.3, 0.9)]
CENTRES3 = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in BOXES3]


def test_synthetic_relations_one_per_object():
    rng = np.random.default_rng(3)
    repeats = 0
    for _ in range(50):
        rels = synthetic_relations(BOXES3, CENTRES3, rng)
        assert len(rels) == 3  # one per object, whatever the draws
        repeats += len({tuple(r) for r in rels}) < 3
        for i, (s, p, o) in enumerate(rels):
            assert i in (s, o) and s != o  # object i's relation involves it
            assert p == synthetic_predicate(BOXES3[s], BOXES3[o], CENTRES3[s], CENTRES3[o])
    assert repeats > 0  # sg2im keeps a triple drawn twice, so do we
    assert synthetic_relations(BOXES3[:1], CENTRES3[:1], rng) == []


class ScriptedRng:
    """Draws given in advance: partner offsets for integers(), coin values for random()."""

    def __init__(self, partners, coins):
        self.partners, self.coins = list(partners), list(coins)

    def integers(self, n):
        return self.partners.pop(0)

    def random(self):
        return self.coins.pop(0)


def test_a_repeated_draw_is_kept():
    # Object 0 draws partner 1 as subject; object 1 draws partner 0 as object: (0, p, 1) twice.
    rng = ScriptedRng(partners=[0, 0, 0], coins=[0.1, 0.9, 0.1])
    rels = synthetic_relations(BOXES3, CENTRES3, rng)
    assert rels[0] == rels[1] == [0, "left of", 1]
    assert rels[2][0] == 2
    graph = SceneGraph(objects=["a", "b", "c"], relationships=rels)  # a dataset graph: valid
    assert graph.relationships[0] == graph.relationships[1]


def test_a_users_repeated_triple_is_a_warning(tmp_path, caplog):
    path = tmp_path / "g.json"
    scene = {"objects": ["a", "b"], "relationships": [[0, "on", 1], [1, "on", 0], [0, "on", 1]]}
    path.write_text(json.dumps([scene]))
    with caplog.at_level(logging.WARNING, logger="sg2image.graph"):
        (graph,) = load_graphs(path)
    assert len(graph.relationships) == 3  # accepted as given
    assert [r.getMessage() for r in caplog.records] == [
        "scenes[0].relationships[2]: repeats relationships[0]"
    ]


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
    # The instances file's order (105, 101, 103, 104, 102); 104 is not listed.
    assert [s["image_id"] for s in _scenes(out, "val")] == [105, 101]
    assert [s["image_id"] for s in _scenes(out, "test")] == [103, 102]
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
            assert len(graph.relationships) == graph.num_objects  # one each, repeats kept
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
    assert list(_by_id(tmp_path / "a", "train")) == [1, 4, 6, 7]  # not 8: stuff file only
    assert counts["val"]["images"] == 5 and counts["test"]["images"] == 0  # num_val 1024
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
    with pytest.raises(ValueError, match="test_split"):
        prepare_coco(raw, tmp_path / "x", test_split="first")
    with pytest.raises(TypeError, match="num_vals"):
        prepare_coco(raw, tmp_path / "x", num_vals=3)


def _val_test(out):
    return [[s["image_id"] for s in _scenes(out, split)] for split in ("val", "test")]


def test_val_and_test_split_options(raw, tmp_path):
    # Kept val2017 images in the instances file's order: 105, 101, 103, 102.
    prepare_coco(raw, tmp_path / "rest", num_val=1)
    assert _val_test(tmp_path / "rest") == [[105], [101, 103, 102]]  # sg2im: the rest
    prepare_coco(raw, tmp_path / "last", num_val=1, num_test=2, test_split="last")
    assert _val_test(tmp_path / "last") == [[105], [103, 102]]  # LayoutDiffusion: the last N
    prepare_coco(raw, tmp_path / "short", num_val=3, num_test=2, test_split="last")
    assert _val_test(tmp_path / "short") == [[105, 101, 103], [102]]  # never overlapping val


def test_filter_options(raw, tmp_path):
    def train(**options):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        prepare_coco(raw, out, **options)
        return {i: s["objects"] for i, s in _by_id(out, "train").items()}

    assert train(include_other=True)[1] == ["person", "car", "sky-other", "other"]
    assert train(include_other=True)[7][-1] == "other"
    assert train(stuff_only=False, split_protocol="full").keys() == {1, 4, 5, 6, 7}
    assert train(min_object_size=0.0)[1] == ["person", "car", "dog", "sky-other"]
    assert train(max_objects_per_image=7).keys() == {1, 7}  # image 4 has 8
    assert train(min_objects_per_image=4).keys() == {4}


def test_deprecated_id_lists_are_found(raw, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(raw / "annotations", src / "annotations")
    ids = src / "annotations" / "deprecated-challenge2017"
    prepare_coco(src, tmp_path / "a", num_val=2)  # where the stuff archive puts them
    shutil.move(ids, src / "deprecated-challenge2017")  # beside annotations/
    prepare_coco(src, tmp_path / "b", num_val=2)
    shutil.move(src / "deprecated-challenge2017", tmp_path / "lists")
    with pytest.raises(RawFormatError) as info:
        prepare_coco(src, tmp_path / "c")
    message = str(info.value)
    assert str(ids) in message and str(src / "deprecated-challenge2017") in message
    assert "--deprecated-ids" in message
    prepare_coco(src, tmp_path / "c", num_val=2, deprecated_ids=tmp_path / "lists")
    for name in ("train.json", "val.json", "test.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "c" / name).read_text()
    with pytest.raises(RawFormatError, match="nowhere: folder not found"):
        prepare_coco(src, tmp_path / "d", deprecated_ids=tmp_path / "nowhere")


def test_bad_input_is_one_located_line(raw, tmp_path):
    with pytest.raises(RawFormatError, match="missing: folder not found"):
        prepare_coco(tmp_path / "missing", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RawFormatError, match=r"empty/annotations: folder not found"):
        prepare_coco(tmp_path / "empty", tmp_path / "x")
    src = tmp_path / "src"
    shutil.copytree(raw / "annotations", src / "annotations")
    path = src / "annotations" / "instances_val2017.json"
    text = path.read_text()
    path.write_text(text[:300])  # a truncated download
    with pytest.raises(RawFormatError, match=r"instances_val2017.json: not valid JSON \(.*line 1"):
        prepare_coco(src, tmp_path / "x")
    path.write_text(json.dumps({"objects": []}))
    with pytest.raises(RawFormatError) as info:
        prepare_coco(src, tmp_path / "x")
    assert str(info.value) == (
        f"{path}: expected a COCO annotation file (an object with images, annotations, "
        "categories); missing key(s) 'images', 'annotations', 'categories'"
    )
    path.write_text(json.dumps([]))
    with pytest.raises(RawFormatError, match="got a list of 0"):
        prepare_coco(src, tmp_path / "x")
    data = json.loads(text)
    del data["annotations"][3]["bbox"]
    path.write_text(json.dumps(data))
    image = data["annotations"][3]["image_id"]
    with pytest.raises(RawFormatError, match=rf"annotations\[3\] \(image {image}\): missing field"):
        prepare_coco(src, tmp_path / "x")


WRONG_SHAPES = [
    [],
    {"images": {}, "annotations": [], "categories": []},
    {"images": [{}], "annotations": [], "categories": []},
    {"images": [7], "annotations": [], "categories": []},
    {"images": [{"id": 101}], "annotations": [{"image_id": 101}], "categories": []},
    {"images": [], "annotations": [{}], "categories": []},
    {"images": [], "annotations": [], "categories": [{"id": "x"}]},
]


@pytest.mark.parametrize("name", ["instances_val2017.json", "stuff_val2017.json"])
def test_any_wrong_shape_is_a_located_error(raw, tmp_path, name):
    src = tmp_path / "src"
    shutil.copytree(raw / "annotations", src / "annotations")
    path = src / "annotations" / name
    good = json.loads(path.read_text())
    cases = [*WRONG_SHAPES, {**good, "images": [{**good["images"][0], "width": 0}]}]
    cases.append({**good, "annotations": [{**good["annotations"][0], "category_id": 999}]})
    cases.append({**good, "annotations": [{**good["annotations"][0], "bbox": [1, 2]}]})
    for data in cases:
        path.write_text(json.dumps(data))
        try:
            prepare_coco(src, tmp_path / "out")
        except RawFormatError as e:
            assert str(e).startswith(f"{path}: "), e
            assert "\n" not in str(e)


def _cli(*args):
    result = CliRunner().invoke(app, ["data", "prepare", *[str(a) for a in args]])
    assert "Traceback" not in result.output, result.output
    return result


def test_cli_takes_every_option(raw, tmp_path, caplog):
    ids = raw / "annotations" / "deprecated-challenge2017"
    options = {
        "split_protocol": "deprecated-2017",
        "deprecated_ids": ids,
        "num_val": 1,
        "num_test": 2,
        "test_split": "last",
        "seed": 3,
        "include_other": True,
        "stuff_only": True,
        "drop_iscrowd": True,
        "min_object_size": 0.01,
        "min_objects_per_image": 2,
        "max_objects_per_image": 7,
    }
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, value]
    with caplog.at_level(logging.INFO, logger="sg2image.data.coco"):
        result = _cli("coco", "--src", raw, "--out", tmp_path / "cli", *flags)
    assert result.exit_code == 0, result.output
    counts = prepare_coco(raw, tmp_path / "api", **options)
    for name in ("train.json", "val.json", "test.json", "counts.json"):
        assert (tmp_path / "cli" / name).read_text() == (tmp_path / "api" / name).read_text()
    # the counts on stdout as JSON, the comparison with the published ones in the log
    assert json.loads(result.stdout) == counts
    assert any("not comparable" in r.getMessage() for r in caplog.records)
    # The same from a config file, with a flag that wins over it.
    config = tmp_path / "coco.json"
    config.write_text(json.dumps({**options, "deprecated_ids": str(ids), "seed": 9}))
    result = _cli("coco", "--src", raw, "--out", tmp_path / "conf", "--config", config, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "conf" / "train.json").read_text() == (
        tmp_path / "api" / "train.json"
    ).read_text()
    result = _cli("coco", "--src", raw, "--out", tmp_path / "x", "--min-image-size", 5)
    assert result.exit_code == 2 and "--min-image-size does not apply to coco" in result.output
    result = _cli("coco", "--src", raw, "--out", tmp_path / "x", "--test-split", "first")
    assert result.exit_code == 2 and "test_split 'first' is not one of" in result.output


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

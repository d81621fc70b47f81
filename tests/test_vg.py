"""Visual Genome preprocessing and loader, on a tiny fixture in the raw VG 1.4 JSON formats."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from sg2image.data.vg import VGSceneGraphDataset, make_vg_dataset, prepare_vg, read_aliases
from sg2image.graph import Vocab, pack_graphs

# Thresholds scaled down for the fixture (defaults: 200, 2000, 2000, 32, 3, 30, 30, 500, 1, 30).
SMALL = {
    "min_image_size": 50,
    "min_object_instances": 2,
    "min_attribute_instances": 2,
    "min_object_size": 8,
    "min_objects_per_image": 3,
    "max_objects_per_image": 5,
    "max_attributes_per_image": 4,
    "min_relationship_instances": 2,
    "min_relationships_per_image": 1,
    "max_relationships_per_image": 3,
}

BIG = (10, 10, 20, 20)
# image id -> (width, height, objects [(name, x, y, w, h, attributes)], relationships
# [(subject index, predicate, object index)]); the comment says what the filters do.
IMAGES: dict[int, tuple] = {
    # train, kept: aliases (automobile -> car, "on top of" -> on, "ON"), a too small object
    # (and its relationship) dropped, "unicorn" below the vocabulary threshold.
    1: (
        100,
        80,
        [
            ("Man", 10, 10, 20, 20, ["Red", "red "]),
            ("tree", 40, 10, 20, 30, ["tall"]),
            ("automobile", 5, 50, 30, 20, ["red"]),
            ("man", 70, 40, 10, 5, []),
            ("unicorn", *BIG, []),
        ],
        [(0, "ON", 1), (2, "on top of", 1), (0, "near", 2), (3, "near", 0), (4, "near", 0)],
    ),
    # train, dropped: 2 objects after the object-size filter
    2: (
        120,
        90,
        [("man", *BIG, []), ("tree", *BIG, []), ("dog", 0, 0, 5, 20, [])],
        [(0, "near", 1)],
    ),
    # train, dropped: image too small (its "unicorn" and "tall" are not counted either)
    3: (
        40,
        100,
        [("man", *BIG, []), ("tree", *BIG, ["tall"]), ("car", *BIG, []), ("unicorn", *BIG, [])],
        [(0, "on", 1)],
    ),
    # train, dropped: 6 objects > 5
    4: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "car", "dog", "man", "tree")],
        [(0, "on", 1)],
    ),
    # train, dropped: its only relationship's predicate is below the vocabulary threshold
    5: (100, 100, [(n, *BIG, []) for n in ("man", "tree", "car")], [(0, "rides", 1)]),
    # train, dropped: 4 relationships > 3
    6: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "dog", "car")],
        [(0, "on", 1), (2, "near", 1), (3, "on", 1), (0, "near", 3)],
    ),
    # train, dropped: 5 attributes > 4
    7: (
        100,
        100,
        [
            ("man", *BIG, ["red", "blue"]),
            ("tree", *BIG, ["red", "blue"]),
            ("car", *BIG, ["red"]),
        ],
        [(0, "on", 1)],
    ),
    # train, kept: the loader test image (tree in no relationship, the car's box leaves the
    # image, a duplicate triple and a self-relationship)
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
    # val, kept: "valonly" is frequent but only outside train, so not in the vocabulary
    10: (
        100,
        100,
        [(n, *BIG, []) for n in ("man", "tree", "car", "valonly", "valonly", "valonly")],
        [(0, "on", 1)],
    ),
    # test, kept
    20: (100, 100, [(n, *BIG, []) for n in ("man", "tree", "car")], [(0, "near", 2)]),
}
SPLITS = {"train": [1, 2, 3, 4, 5, 6, 7, 8, 999], "val": [10], "test": [20]}


def _colour(image_id: int) -> tuple[int, int, int]:
    return (image_id * 20 % 256, 100, 200)


def write_raw_vg(root: Path) -> tuple[Path, Path]:
    """The raw VG 1.4 files in ``root/raw`` and the images in ``root/images``."""
    raw, images = root / "raw", root / "images"
    raw.mkdir()
    image_data, objects, attributes, relationships = [], [], [], []
    for image_id, (w, h, objs, rels) in IMAGES.items():
        folder = "VG_100K_2" if image_id == 8 else "VG_100K"
        url = f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
        image_data.append(
            {"image_id": image_id, "url": url, "width": w, "height": h, "coco_id": None}
        )
        (images / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), _colour(image_id)).save(images / folder / f"{image_id}.jpg")
        vg_objs = []
        for k, (name, x, y, bw, bh, _) in enumerate(objs):
            vg_objs.append(
                {
                    "object_id": image_id * 100 + k,
                    "x": x,
                    "y": y,
                    "w": bw,
                    "h": bh,
                    "names": [name],
                    "synsets": [f"{name.strip().lower()}.n.01"],
                    "merged_object_ids": [],
                }
            )
        objects.append({"image_id": image_id, "image_url": url, "objects": vg_objs})
        attributes.append(
            {
                "image_id": image_id,
                "attributes": [
                    {**o, "attributes": objs[k][5]} for k, o in enumerate(vg_objs) if objs[k][5]
                ],
            }
        )
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
    (raw / "object_alias.txt").write_text("car,automobile,Auto\nman,guy\n\n")
    (raw / "relationship_alias.txt").write_text("on,on top of,sitting on\n")
    return raw, images


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vg")
    raw, _ = write_raw_vg(root)
    report = prepare_vg(raw, root, **SMALL)
    return root, report


def _image_ids(root: Path, split: str) -> list[int]:
    with h5py.File(root / f"{split}.h5") as f:
        return f["image_ids"][()].tolist()


def test_aliases_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("car,automobile, Auto \nman,guy\n\n")
    assert read_aliases(path) == {"automobile": "car", "auto": "car", "guy": "man"}


def test_filters_keep_the_expected_images(prepared):
    root, report = prepared
    # 2: objects after size filter, 3: image size, 4: too many objects, 5: no relationship
    # with a vocabulary predicate, 6: too many relationships, 7: too many attributes,
    # 999: not in image_data.json
    assert _image_ids(root, "train") == [1, 8]
    assert _image_ids(root, "val") == [10]
    assert _image_ids(root, "test") == [20]
    assert report["splits"]["train"] == {
        "images_before": 9,
        "images": 2,
        "objects": 7,
        "relationships": 6,
        "attributes": 2,
    }
    assert report["splits"]["val"]["objects"] == 3  # the three "valonly" dropped
    assert (report["num_objects"], report["num_predicates"], report["num_attributes"]) == (5, 3, 2)


def test_vocabulary_thresholds_and_aliases(prepared):
    root, _ = prepared
    vocab = json.loads((root / "vocab.json").read_text())
    # unicorn: 1 train instance once the small image is gone; valonly: not in train;
    # automobile -> car; "Man" -> man
    assert vocab["object_idx_to_name"] == ["__image__", "car", "dog", "man", "tree"]
    # rides: 1 instance; "ON" and "on top of" -> on
    assert vocab["pred_idx_to_name"] == ["__in_image__", "near", "on"]
    # tall: 1 instance in the size-filtered train images; "Red"/"red " cleaned, once per object
    assert vocab["attribute_idx_to_name"] == ["blue", "red"]
    assert vocab["object_name_to_idx"] == {"__image__": 0, "car": 1, "dog": 2, "man": 3, "tree": 4}
    assert vocab["pred_name_to_idx"] == {"__in_image__": 0, "near": 1, "on": 2}
    assert vocab["attribute_name_to_idx"] == {"blue": 0, "red": 1}
    assert Vocab.load(root / "vocab.json") == Vocab.build(
        ["car", "dog", "man", "tree"], ["near", "on"]
    )


def test_hdf5_schema(prepared):
    root, _ = prepared
    ints = {
        "image_ids": (2,),
        "object_ids": (2, 5),
        "object_names": (2, 5),
        "object_boxes": (2, 5, 4),
        "objects_per_image": (2,),
        "relationship_ids": (2, 3),
        "relationship_subjects": (2, 3),
        "relationship_predicates": (2, 3),
        "relationship_objects": (2, 3),
        "relationships_per_image": (2,),
        "attributes_per_object": (2, 5),
        "object_attributes": (2, 5, 4),
        "image_heights": (2,),
        "image_widths": (2,),
    }
    with h5py.File(root / "train.h5") as f:
        assert set(f) == set(ints) | {"image_paths"}
        for key, shape in ints.items():
            assert f[key].dtype == np.int32, key
            assert f[key].shape == shape, key
        string = h5py.check_string_dtype(f["image_paths"].dtype)
        assert string is not None and string.length is None  # variable-length str
        assert f["image_paths"].asstr()[()].tolist() == ["VG_100K/1.jpg", "VG_100K_2/8.jpg"]
        assert f["image_widths"][()].tolist() == [100, 100]
        assert f["image_heights"][()].tolist() == [80, 100]
        # image 1: man, tree, car (the small man and the unicorn gone), boxes x, y, w, h px
        assert f["objects_per_image"][0] == 3
        assert f["object_ids"][0].tolist() == [100, 101, 102, -1, -1]
        assert f["object_names"][0].tolist() == [3, 4, 1, -1, -1]
        assert f["object_boxes"][0, :3].tolist() == [
            [10, 10, 20, 20],
            [40, 10, 20, 30],
            [5, 50, 30, 20],
        ]
        assert f["object_boxes"][0, 3].tolist() == [-1, -1, -1, -1]
        # relationships: subject/object indices local to the image
        assert f["relationships_per_image"][0] == 3
        assert f["relationship_ids"][0].tolist() == [100, 101, 102]
        assert f["relationship_subjects"][0].tolist() == [0, 2, 0]
        assert f["relationship_predicates"][0].tolist() == [2, 2, 1]
        assert f["relationship_objects"][0].tolist() == [1, 1, 2]
        assert f["attributes_per_object"][0].tolist() == [1, 0, 1, 0, 0]
        assert f["object_attributes"][0, 0].tolist() == [1, -1, -1, -1]
        # image 8: local indices again start at 0
        assert f["relationship_subjects"][1].tolist() == [0, 1, 0]
        assert f["relationship_objects"][1].tolist() == [1, 2, 1]


def test_round_trip_to_dataset_items(prepared):
    root, _ = prepared
    ds = VGSceneGraphDataset(root / "train.h5", root / "vocab.json", root / "images", image_size=32)
    assert len(ds) == 2
    item = ds[0]
    assert item["index"] == 0 and item["image_id"] == 1
    assert item["pixel_values"].shape == (3, 32, 32)
    assert item["pixel_values"].dtype == torch.float32
    expected = torch.tensor(_colour(1), dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(item["pixel_values"].mean(dim=(1, 2)), expected, atol=0.05)
    g = item["graph"]
    assert g.objects == ["man", "tree", "car"]
    assert g.relationships == [(0, "on", 1), (2, "on", 1), (0, "near", 2)]
    assert np.allclose(
        g.boxes, [(0.1, 0.125, 0.3, 0.375), (0.4, 0.125, 0.6, 0.5), (0.05, 0.625, 0.35, 0.875)]
    )
    assert g.attributes == [["red"], [], ["red"]]
    assert item["caption"] == "man, tree, car"
    # image 8: the car's box is clipped, the duplicate triple dropped
    g8 = ds[1]["graph"]
    assert g8.objects == ["dog", "man", "car", "tree"]
    assert g8.relationships == [(0, "near", 1), (1, "on", 2)]
    assert g8.boxes[2] == (0.8, 0.8, 1.0, 1.0)
    assert ds[1]["caption"] == "dog, man, car, tree"
    with pytest.raises(IndexError):
        ds[2]


def test_max_objects_counts_the_image_node(prepared):
    root, _ = prepared
    vocab = Vocab.load(root / "vocab.json")

    def graph(**kw):
        ds = VGSceneGraphDataset(root / "train.h5", root / "vocab.json", root / "images", **kw)
        return ds[1]["graph"]

    # image 8 has 4 objects; dog, man, car are in relationships, tree is not
    g = graph(max_objects=3)
    assert g.objects == ["dog", "man"]  # 2 real objects + __image__ = 3
    assert g.relationships == [(0, "near", 1)]  # only the triples among the kept objects
    assert len(pack_graphs([g], vocab).objs) == 3
    assert graph(max_objects=3) == g  # deterministic
    assert graph(max_objects=4).objects == ["dog", "man", "car"]  # related objects first
    assert graph(max_objects=5).objects == ["dog", "man", "car", "tree"]
    assert len(pack_graphs([graph(max_objects=5)], vocab).objs) == 5
    assert graph(max_objects=10, use_orphaned_objects=False).objects == ["dog", "man", "car"]
    # default: 10 including __image__
    ds = VGSceneGraphDataset(root / "train.h5", root / "vocab.json", root / "images")
    assert ds.max_objects == 10
    with pytest.raises(ValueError, match="__image__"):
        graph(max_objects=1)


def test_make_vg_dataset(prepared):
    root, _ = prepared
    cfg = SimpleNamespace(
        data_root=str(root), resolution=16, train_size=1, val_size=8, max_objects=None
    )
    assert make_vg_dataset(cfg, None) == Vocab.load(root / "vocab.json")
    train = make_vg_dataset(cfg, "train")
    assert len(train) == 1 and train.max_objects == 10
    assert train[0]["pixel_values"].shape == (3, 16, 16)
    val = make_vg_dataset(cfg, "val")
    assert len(val) == 1 and val[0]["graph"].objects == ["man", "tree", "car"]
    cfg.max_objects = 2  # the pipeline's limit counts real objects
    assert len(make_vg_dataset(cfg, "train")[0]["graph"].objects) == 2
    with pytest.raises(ValueError, match="split"):
        make_vg_dataset(cfg, "nope")


def test_warns_on_unexpected_vocabulary_size(tmp_path, caplog, capsys):
    raw, _ = write_raw_vg(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sg2image.data.vg"):
        report = prepare_vg(raw, tmp_path / "default")  # default thresholds on tiny data
    assert (report["num_objects"], report["num_predicates"]) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "179 / 46" in warnings[0] and "260 / 66" in warnings[0]
    assert "1 objects / 1 predicates" in warnings[0]
    assert "Visual Genome vocabulary" in capsys.readouterr().out  # the printed report
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sg2image.data.vg"):
        prepare_vg(raw, tmp_path / "small", **SMALL)  # scaled thresholds: no 179 / 46 check
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_missing_raw_files(tmp_path):
    (tmp_path / "objects.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="relationships.json"):
        prepare_vg(tmp_path, tmp_path / "out")


def test_vg_is_a_training_dataset(prepared):
    from sg2image.training.config import dataset_vocab, load_config, make_dataset

    root, _ = prepared
    cfg = load_config(None, ["dataset=vg", f"data_root={root}", "resolution=16", "train_size=1"])
    assert dataset_vocab(cfg) == Vocab.load(root / "vocab.json")
    assert make_dataset(cfg, "train")[0]["pixel_values"].shape == (3, 16, 16)

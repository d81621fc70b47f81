"""Visual Genome preparation (sg2im's preprocess_vg.py rules) and loader, on a tiny fixture
in the raw VG 1.4 formats (tests/fixtures_vg.py says what each image exercises)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from fixtures_vg import SMALL, colour, write_raw_vg
from typer.testing import CliRunner

from sg2image.cli import app
from sg2image.data.raw import RawFormatError
from sg2image.data.vg import VGSceneGraphDataset, make_vg_dataset, prepare_vg, read_aliases
from sg2image.data.vg_prepare import format_report, is_default
from sg2image.graph import Vocab, pack_graphs

__all__ = ["SMALL", "write_raw_vg"]  # tests/test_presets.py takes them from here

SG2IM_KEYS = {
    "image_ids",
    "object_ids",
    "object_names",
    "object_boxes",
    "objects_per_image",
    "relationship_ids",
    "relationship_subjects",
    "relationship_predicates",
    "relationship_objects",
    "relationships_per_image",
    "attributes_per_object",
    "object_attributes",
    "image_paths",
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_raw_vg(tmp_path_factory.mktemp("vg"))[0]


@pytest.fixture(scope="module")
def prepared(raw) -> tuple[Path, dict]:
    root = raw.parent
    report = prepare_vg(raw, root, **SMALL)
    return root, report


def _image_ids(root: Path, split: str) -> list[int]:
    with h5py.File(root / f"{split}.h5") as f:
        return f["image_ids"][()].tolist()


def _dataset(root: Path, h5: Path | None = None, **kw) -> VGSceneGraphDataset:
    h5 = h5 or root / "train.h5"
    return VGSceneGraphDataset(h5, root / "vocab.json", root / "images", **kw)


# ----------------------------------------------------------------------------- preparation


def test_aliases_as_sg2im_reads_them(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("car,automobile, Auto \nman,guy\nguy,fellow\n\n")
    # Every name maps to its line's first, itself included; a later line wins ("guy").
    assert read_aliases(path) == {
        "car": "car",
        "automobile": "car",
        "Auto": "car",
        "man": "man",
        "guy": "guy",
        "fellow": "guy",
    }
    assert read_aliases(path, clean=True)["auto"] == "car"


def test_filters_keep_the_expected_images(prepared):
    root, report = prepared
    assert _image_ids(root, "train") == [1, 7, 8]
    assert _image_ids(root, "val") == [10]
    assert _image_ids(root, "test") == [20]
    assert report["splits"]["train"] == {
        "images_before": 9,
        "images": 3,
        "objects": 10,
        "relationships": 7,
        "attributes": 8,  # image 1: 2 + 0 + 1, image 7: 2 + 2 + 1 (capped per object)
        "skipped": {
            "too_few_objects": 1,
            "too_many_objects": 1,
            "too_few_relationships": 1,
            "too_many_relationships": 1,
        },
    }
    assert report["splits"]["val"]["skipped"] == {"too_few_relationships": 1}  # image 11
    assert report["splits"]["val"]["relationships"] == 1  # "ON" is not "on" outside train
    assert (report["num_objects"], report["num_predicates"], report["num_attributes"]) == (5, 3, 3)


def test_vocabulary_order_is_sg2im(prepared):
    root, _ = prepared
    vocab = json.loads((root / "vocab.json").read_text())
    assert vocab["object_idx_to_name"] == ["__image__", "man", "tree", "car", "dog"]  # by count
    assert vocab["pred_idx_to_name"] == ["__in_image__", "on", "near"]  # first seen, not count
    assert vocab["attribute_idx_to_name"] == ["red", "blue", "tall"]  # by count
    assert vocab["object_name_to_idx"] == {"__image__": 0, "man": 1, "tree": 2, "car": 3, "dog": 4}
    assert vocab["pred_name_to_idx"] == {"__in_image__": 0, "on": 1, "near": 2}
    assert vocab["attribute_name_to_idx"] == {"red": 0, "blue": 1, "tall": 2}
    assert Vocab.load(root / "vocab.json") == Vocab.build(
        ["man", "tree", "car", "dog"], ["on", "near"]
    )


def test_hdf5_schema_is_sg2im(prepared):
    root, _ = prepared
    with h5py.File(root / "train.h5") as f:
        assert set(f) == SG2IM_KEYS | {"image_heights", "image_widths"}
        for key in set(f) - {"image_paths"}:
            assert f[key].dtype == np.int32, key
        for key in ("object_ids", "object_names", "attributes_per_object"):
            assert f[key].shape == (3, 5), key
        assert f["object_boxes"].shape == (3, 5, 4)
        for key in ("relationship_ids", "relationship_subjects", "relationship_objects"):
            assert f[key].shape == (3, 3), key
        string = h5py.check_string_dtype(f["image_paths"].dtype)
        assert string is not None and string.length is None  # variable-length str
        assert f["image_paths"].asstr()[()].tolist() == [
            "VG_100K/1.jpg",
            "VG_100K/7.jpg",
            "VG_100K_2/8.jpg",
        ]
        assert f["image_widths"][()].tolist() == [100, 100, 100]
        assert f["image_heights"][()].tolist() == [80, 100, 100]
        # image 1: man, tree, car (named unicorn / automobile); boxes x, y, w, h px
        assert f["objects_per_image"][()].tolist() == [3, 3, 4]
        assert f["object_ids"][0].tolist() == [100, 101, 102, -1, -1]
        assert f["object_names"][0].tolist() == [1, 2, 3, -1, -1]
        assert f["object_boxes"][0].tolist() == [
            [10, 10, 20, 20],
            [40, 10, 20, 30],
            [5, 50, 30, 20],
            [-1, -1, -1, -1],
            [-1, -1, -1, -1],
        ]
        assert f["relationships_per_image"][()].tolist() == [3, 1, 3]
        assert f["relationship_ids"][0].tolist() == [100, 101, 102]
        assert f["relationship_subjects"][0].tolist() == [0, 2, 0]  # within the image
        assert f["relationship_predicates"][0].tolist() == [1, 1, 2]  # ON, on top of -> on
        assert f["relationship_objects"][0].tolist() == [1, 1, 2]
        assert f["relationship_predicates"][1].tolist() == [1, -1, -1]
        assert f["relationship_predicates"][2].tolist() == [2, 1, 2]  # the repeat is kept
        # attributes: one row per kept object of all images, capped at 2 per object
        assert f["attributes_per_object"][()].tolist() == [
            [2, 0, 1, -1, -1],
            [2, 2, 1, -1, -1],
            [0, 0, 0, 0, -1],
        ]
        assert f["object_attributes"][()].tolist() == [
            [0, 2],  # image 1 man: red, tall (blue cut by the cap)
            [-1, -1],
            [0, -1],
            [0, 1],  # image 7
            [0, 1],
            [0, -1],
            *[[-1, -1]] * 4,  # image 8
        ]
    with h5py.File(root / "test.h5") as f:
        assert f["object_attributes"][()].tolist() == [[-1, -1], [-1, -1], [0, 0]]  # red twice


def test_clean_names_option(raw, tmp_path):
    report = prepare_vg(raw, tmp_path, clean_names=True, **SMALL)
    assert _image_ids(tmp_path, "val") == [10, 11]  # val predicates cleaned and aliased
    assert report["splits"]["val"]["relationships"] == 3
    with h5py.File(tmp_path / "train.h5") as f:
        assert f["objects_per_image"][0] == 4  # "Man" is man
        assert f["object_attributes"][3].tolist() == [0, -1]  # its "Red" is red
    assert not is_default(report) and "not comparable" in format_report(report)


def test_report_compares_with_published_counts(raw, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sg2image.data.vg"):
        report = prepare_vg(raw, tmp_path / "default")  # sg2im's thresholds on tiny data
    assert (report["num_objects"], report["num_predicates"]) == (1, 1)
    assert report["splits"]["train"]["images"] == 0 and is_default(report)
    text = format_report(report)
    assert "Visual Genome vocabulary" in text and "not comparable" not in text
    assert "train images" in text and "published    62,565" in text
    assert "differs by -62,565 (-100.0%)" in text
    assert "differs by -178 (-99.4%)" in text  # object classes: 1 against 179
    assert text in [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "1 train ids not in image_data.json" in warnings[0]  # image 999
    assert "179 / 46" in warnings[1] and "260 / 66" in warnings[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sg2image.data.vg"):
        small = prepare_vg(raw, tmp_path / "small", **SMALL)  # scaled: no 179 / 46 check
    assert [r.getMessage() for r in caplog.records if "!!!" in r.getMessage()] == []
    assert not is_default(small) and "not comparable" in format_report(small)


# ----------------------------------------------------------------------------- bad input


def _copy_raw(raw: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in raw.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_bad_input_is_one_located_line(raw, tmp_path):
    with pytest.raises(RawFormatError, match=r"nope: folder not found"):
        prepare_vg(tmp_path / "nope", tmp_path / "out")
    bad = _copy_raw(raw, tmp_path / "bad")
    text = (raw / "objects.json").read_text()
    (bad / "objects.json").write_text(text[:500])  # a truncated download
    with pytest.raises(RawFormatError, match=r"objects.json: not valid JSON \(.* line 1, column"):
        prepare_vg(bad, tmp_path / "out", **SMALL)
    (bad / "objects.json").write_text(json.dumps({"objects": []}))
    with pytest.raises(RawFormatError) as info:
        prepare_vg(bad, tmp_path / "out", **SMALL)
    assert str(info.value) == (
        f"{bad / 'objects.json'}: expected a list of images (objects.json), "
        "got an object with keys 'objects'"
    )
    objects = json.loads(text)
    del objects[0]["objects"][1]["x"]
    (bad / "objects.json").write_text(json.dumps(objects))
    with pytest.raises(
        RawFormatError, match=r"objects.json: image 1: objects\[1\]: missing field 'x'"
    ):
        prepare_vg(bad, tmp_path / "out", **SMALL)
    (bad / "vg_splits.json").write_text(json.dumps({"train": [1]}))
    with pytest.raises(RawFormatError, match=r"vg_splits.json: .*missing key\(s\) 'val', 'test'"):
        prepare_vg(bad, tmp_path / "out", **SMALL)
    (bad / "attributes.json").unlink()
    with pytest.raises(RawFormatError, match="missing Visual Genome files: attributes.json"):
        prepare_vg(bad, tmp_path / "out")


WRONG_SHAPES = [
    {},
    "text",
    [1],
    [{}],
    [{"image_id": "one"}],
    [{"image_id": 1}],
    [{"image_id": 1, "objects": 3, "attributes": 3, "relationships": 3}],
    [{"image_id": 1, "objects": [{}], "attributes": [{}], "relationships": [{}]}],
    [{"image_id": 1, "objects": [7], "attributes": [7], "relationships": [7]}],
]


@pytest.mark.parametrize(
    "name", ["objects.json", "attributes.json", "relationships.json", "image_data.json"]
)
def test_any_wrong_shape_is_a_located_error(raw, tmp_path, name):
    bad = _copy_raw(raw, tmp_path / "bad")
    for data in WRONG_SHAPES:
        (bad / name).write_text(json.dumps(data))
        try:
            prepare_vg(bad, tmp_path / "out", **SMALL)
        except RawFormatError as e:
            assert str(e).startswith(f"{bad / name}: "), e
            assert "\n" not in str(e)


# ----------------------------------------------------------------------------- command line


def _flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        out += (
            [flag if value else "--no-" + flag[2:]]
            if isinstance(value, bool)
            else [flag, str(value)]
        )
    return out


def _cli(*args) -> object:
    result = CliRunner().invoke(app, ["data", "prepare", *[str(a) for a in args]])
    assert "Traceback" not in result.output, result.output
    return result


def _h5(path: Path) -> dict:
    with h5py.File(path) as f:
        return {k: f[k][()].tolist() for k in f}


def test_cli_takes_every_threshold(raw, prepared, tmp_path, caplog):
    root, report = prepared
    with caplog.at_level(logging.INFO, logger="sg2image.data.vg"):
        result = _cli("vg", "--src", raw, "--out", tmp_path / "cli", *_flags(SMALL))
    assert result.exit_code == 0, result.output
    for split in ("train", "val", "test"):
        assert _h5(tmp_path / "cli" / f"{split}.h5") == _h5(root / f"{split}.h5")
    # the counts on stdout as JSON, the comparison with the published ones in the log
    assert json.loads(result.stdout)["splits"] == report["splits"]
    assert any("published" in r.getMessage() for r in caplog.records)
    # A config file gives the same; a flag given on the command line wins over it.
    config = tmp_path / "vg.toml"
    config.write_text("".join(f"{k.replace('_', '-')} = {v}\n" for k, v in SMALL.items()))
    args = ["--config", config, "--max-attributes-per-image", "1", "--clean-names"]
    result = _cli("vg", "--src", raw, "--out", tmp_path / "conf", *args)
    assert result.exit_code == 0, result.output
    assert _image_ids(tmp_path / "conf", "val") == [10, 11]
    with h5py.File(tmp_path / "conf" / "train.h5") as f:
        assert f["object_attributes"].shape == (11, 1)


def test_cli_errors_are_one_line(raw, tmp_path):
    result = _cli("vg", "--src", tmp_path / "missing", "--out", tmp_path / "o", "--num-val", "3")
    assert result.exit_code == 2 and "missing: folder not found" in result.output
    result = _cli("vg", "--src", raw, "--out", tmp_path / "o", "--num-val", "3")
    assert (
        result.exit_code == 2 and "--num-val does not apply to vg (it is for coco)" in result.output
    )
    result = _cli("vg", "--src", raw, "--out", tmp_path / "o", "--min-object-size", "0.5")
    assert result.exit_code == 2 and "whole number" in result.output
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"min_image_sise": 3}))
    result = _cli("vg", "--src", raw, "--out", tmp_path / "o", "--config", config)
    assert result.exit_code == 2
    assert "min_image_sise: unknown option (did you mean 'min_image_size'?)" in result.output
    config.write_text(json.dumps({"min_image_size": "big"}))
    result = _cli("vg", "--src", raw, "--out", tmp_path / "o", "--config", config)
    assert result.exit_code == 2 and "min_image_size: expected int, got 'big'" in result.output
    bad = _copy_raw(raw, tmp_path / "bad")
    (bad / "image_data.json").write_text("[{")
    result = _cli("vg", "--src", bad, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "image_data.json: not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- loader


def _write_sg2im_layout(path: Path) -> None:
    """The train split as sg2im's preprocess_vg.py writes it: lists of python ints turned
    into arrays (int64 -> int32), no image sizes, paths assigned one by one as vlen str."""
    arrays = {
        "image_ids": [1, 7, 8],
        "object_ids": [[100, 101, 102, -1, -1], [700, 701, 702, -1, -1], [800, 801, 802, 803, -1]],
        "object_names": [[1, 2, 3, -1, -1], [1, 2, 3, -1, -1], [4, 1, 3, 2, -1]],
        "object_boxes": [
            [[10, 10, 20, 20], [40, 10, 20, 30], [5, 50, 30, 20], *[[-1] * 4] * 2],
            [[10, 10, 20, 20]] * 3 + [[-1] * 4] * 2,
            [[0, 0, 50, 50], [50, 0, 50, 50], [80, 80, 40, 40], [0, 50, 50, 50], [-1] * 4],
        ],
        "objects_per_image": [3, 3, 4],
        "relationship_ids": [[100, 101, 102], [700, -1, -1], [800, 801, 802]],
        "relationship_subjects": [[0, 2, 0], [0, -1, -1], [0, 1, 0]],
        "relationship_predicates": [[1, 1, 2], [1, -1, -1], [2, 1, 2]],
        "relationship_objects": [[1, 1, 2], [1, -1, -1], [1, 2, 1]],
        "relationships_per_image": [3, 1, 3],
        "attributes_per_object": [[2, 0, 1, -1, -1], [2, 2, 1, -1, -1], [0, 0, 0, 0, -1]],
        "object_attributes": [[0, 2], [-1, -1], [0, -1], [0, 1], [0, 1], [0, -1]] + [[-1, -1]] * 4,
    }
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=np.asarray(value).astype(np.int32))
        paths = ["VG_100K/1.jpg", "VG_100K/7.jpg", "VG_100K_2/8.jpg"]
        dset = f.create_dataset("image_paths", (3,), dtype=h5py.special_dtype(vlen=str))
        for i, p in enumerate(paths):
            dset[i] = p


def test_a_file_in_sg2im_layout_loads_the_same(prepared, tmp_path):
    root, _ = prepared
    _write_sg2im_layout(tmp_path / "sg2im_train.h5")
    ours, theirs = _dataset(root, image_size=16), _dataset(root, tmp_path / "sg2im_train.h5")
    theirs.image_size = 16
    assert len(ours) == len(theirs) == 3
    for i in range(3):
        assert theirs.graph(i) == ours.graph(i)
        a, b = ours[i], theirs[i]
        assert a["image_id"] == b["image_id"] and a["caption"] == b["caption"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert theirs.graph(0).attributes == [["red", "tall"], [], ["red"]]
    # ... and the (N, max_objects, max_attrs) layout sg2image wrote before.
    old = tmp_path / "old.h5"
    with h5py.File(root / "train.h5") as f, h5py.File(old, "w") as g:
        for key in f:
            if key != "object_attributes":
                f.copy(key, g)
        g["object_attributes"] = np.array(
            [
                [[0, 2], [-1, -1], [0, -1]] + [[-1, -1]] * 2,
                [[0, 1], [0, 1], [0, -1]] + [[-1, -1]] * 2,
                [[-1, -1]] * 5,
            ],
            np.int32,
        )
    assert [_dataset(root, old).graph(i) for i in range(3)] == [ours.graph(i) for i in range(3)]


def test_round_trip_to_dataset_items(prepared):
    root, _ = prepared
    ds = _dataset(root, image_size=32)
    assert len(ds) == 3
    item = ds[0]
    assert item["index"] == 0 and item["image_id"] == 1
    assert item["pixel_values"].shape == (3, 32, 32)
    assert item["pixel_values"].dtype == torch.float32
    expected = torch.tensor(colour(1), dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(item["pixel_values"].mean(dim=(1, 2)), expected, atol=0.05)
    g = item["graph"]
    assert g.objects == ["man", "tree", "car"]
    assert g.relationships == [(0, "on", 1), (2, "on", 1), (0, "near", 2)]
    assert np.allclose(
        g.boxes, [(0.1, 0.125, 0.3, 0.375), (0.4, 0.125, 0.6, 0.5), (0.05, 0.625, 0.35, 0.875)]
    )
    assert g.attributes == [["red", "tall"], [], ["red"]]
    assert item["caption"] == "man, tree, car"
    # image 8: the car's box is clipped, the repeated triple kept (as sg2im's loader)
    g8 = ds[2]["graph"]
    assert g8.objects == ["dog", "man", "car", "tree"]
    assert g8.relationships == [(0, "near", 1), (1, "on", 2), (0, "near", 1)]
    assert g8.boxes[2] == (0.8, 0.8, 1.0, 1.0)
    with pytest.raises(IndexError):
        ds[3]


def test_max_objects_counts_the_image_node(prepared):
    root, _ = prepared
    vocab = Vocab.load(root / "vocab.json")

    def graph(**kw):
        return _dataset(root, **kw)[2]["graph"]

    # image 8 has 4 objects; dog, man, car are in relationships, tree is not
    g = graph(max_objects=3)
    assert g.objects == ["dog", "man"]  # 2 real objects + __image__ = 3
    assert g.relationships == [(0, "near", 1), (0, "near", 1)]  # the triples among them
    assert len(pack_graphs([g], vocab).objs) == 3
    assert graph(max_objects=3) == g  # deterministic
    assert graph(max_objects=4).objects == ["dog", "man", "car"]  # related objects first
    assert graph(max_objects=5).objects == ["dog", "man", "car", "tree"]
    assert len(pack_graphs([graph(max_objects=5)], vocab).objs) == 5
    assert graph(max_objects=10, use_orphaned_objects=False).objects == ["dog", "man", "car"]
    assert _dataset(root).max_objects == 10  # default: 10 including __image__
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


def test_vg_is_a_training_dataset(prepared):
    from sg2image.training.config import dataset_vocab, load_config, make_dataset

    root, _ = prepared
    cfg = load_config(None, ["dataset=vg", f"data_root={root}", "resolution=16", "train_size=1"])
    assert dataset_vocab(cfg) == Vocab.load(root / "vocab.json")
    assert make_dataset(cfg, "train")[0]["pixel_values"].shape == (3, 16, 16)

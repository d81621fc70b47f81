"""The Shapes benchmark harness on tiny random models: every number is produced and sane."""

import json

import pytest
import torch

from sg2image.data.shapes import make_split, shapes_vocab
from sg2image.eval.shapes_bench import (
    System,
    example_grid,
    graph_sentence,
    markdown_table,
    plot_accuracy_vs_evals,
    run_benchmark,
)
from sg2image.graph import SceneGraph
from sg2image.models.base import build_tiny_base, build_tiny_clip_vision, load_base
from sg2image.pipeline import pipeline_from_base


def test_graph_sentence():
    g = SceneGraph(
        objects=["red circle", "blue square", "cyan triangle"],
        relationships=[(0, "left of", 1), (1, "bigger than", 0)],
    )
    assert graph_sentence(g) == (
        "a red circle to the left of a blue square, a blue square bigger than a red circle"
        " and a cyan triangle"
    )
    assert graph_sentence(SceneGraph(objects=["red circle"])) == "a red circle"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    base = build_tiny_base(root / "base")
    build_tiny_clip_vision(root / "clip")
    torch.manual_seed(0)
    enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
    pipeline_from_base(load_base(base), shapes_vocab(), enc).save_pretrained(root / "pipe")
    return root


def test_run_benchmark_writes_every_number(tiny, tmp_path):
    systems = [
        System("ground-truth", "ground_truth"),
        System("sg2image", "pipeline", str(tiny / "pipe"), steps=2, guidance=2.0),
        System("text", "text", str(tiny / "base"), scheduler="ddim", steps=2, guidance=1.0),
    ]
    rows = run_benchmark(systems, str(tiny / "clip"), tmp_path / "res", n=3, diversity_n=2)
    gt, ours, text = rows
    assert gt["object_recall"] == 1.0 and gt["relation_accuracy"] == 1.0
    assert gt["fid"] == pytest.approx(0.0, abs=1e-2) and gt["unet_evals_per_image"] == 0
    # the hook counts what the sampler really does: 2 steps x (cond + uncond)
    assert ours["unet_evals_per_image"] == 4 and text["unet_evals_per_image"] == 2
    assert ours["fid"] > gt["fid"] and ours["feature_diversity"] > 0
    assert ours["object_recall"] < 0.5  # an untrained model does not draw the shapes
    for name in ("ground-truth", "sg2image", "text", "floor"):
        data = json.loads((tmp_path / "res" / f"{name}.json").read_text())
        assert "fid" in data
    table = markdown_table(rows, json.loads((tmp_path / "res" / "floor.json").read_text()))
    assert table.count("\n") == 2 + 3 + 1 and "| sg2image | dpm++ 2, cfg 2.0 |" in table
    plot_accuracy_vs_evals(rows, tmp_path / "plot.png")
    example_grid(ours, make_split("test", n=3), tmp_path / "grid.png", k=3)
    assert (tmp_path / "plot.png").stat().st_size > 1000 and (tmp_path / "grid.png").exists()

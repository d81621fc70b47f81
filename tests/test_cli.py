"""The command line, run in process: outputs, exit codes and one-line errors (no tracebacks)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from serve_fixtures import tiny_layout_pipeline as build_tiny_layout_pipeline
from typer.testing import CliRunner

from sg2image.cli import app
from sg2image.graph import Vocab
from sg2image.models.base import build_tiny_base, load_base
from sg2image.pipeline import pipeline_from_base

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    vocab = Vocab.build(["red circle", "blue square"], ["left of", "above"])
    torch.manual_seed(0)
    enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
    pipe = pipeline_from_base(load_base(build_tiny_base(root / "base")), vocab, enc)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_validate_ok_and_problems(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps({"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]})
    )
    result = run("validate", good)
    assert result.exit_code == 0 and "ok: 1 scene graph(s)" in result.output

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"objects": ["red circle"], "relationships": [[0, "left of", 5]]}]))
    result = run("validate", bad)
    assert result.exit_code == 1
    assert "scenes[0].relationships[0]: object index 5 out of range (1 object)" in result.output

    vocab = tmp_path / "vocab.json"
    Vocab.build(["red circle"], ["left of"]).save(vocab)
    good2 = tmp_path / "g2.json"
    good2.write_text(json.dumps({"objects": ["red circel"]}))
    result = run("validate", good2, "--vocab", vocab)
    assert result.exit_code == 1 and "did you mean 'red circle'?" in result.output

    assert run("validate", tmp_path / "nope.json").exit_code == 1


def test_validate_checks_against_the_default_model(tiny_pipeline, tmp_path):
    """What generate would refuse, validate refuses: by default the shipped model's
    vocabulary and object limit (read from its model_index.json), else --model's."""
    from sg2image import SHAPES_MODEL

    limit = json.loads((SHAPES_MODEL / "model_index.json").read_text())["max_objects"]
    graphs = tmp_path / "g.json"
    too_many = {"objects": ["red circle"] * (limit + 1)}
    graphs.write_text(json.dumps([{"objects": ["pink hexagon"]}, too_many]))
    result = run("validate", graphs)
    assert result.exit_code == 1
    assert "scenes[0].objects[0]: unknown object 'pink hexagon'" in result.output
    too_many_line = f"scenes[1].objects: {limit + 1} objects, this model accepts at most {limit}"
    assert too_many_line in result.output
    assert "checked against the model shipped in the package" in result.output
    ok = run("validate", SHAPES_MODEL.parents[1] / "examples" / "shapes.json")
    assert ok.exit_code == 0 and f"at most {limit} objects" in ok.output
    # --max-objects overrides the model's limit; --model another model (the tiny one has
    # no limit and knows only 'red circle' and 'blue square')
    graphs.write_text(json.dumps(too_many))
    assert run("validate", graphs, "--max-objects", str(limit + 1)).exit_code == 0
    result = run("validate", graphs, "--model", tiny_pipeline)
    assert result.exit_code == 0 and f"checked against the model {tiny_pipeline}" in result.output
    graphs.write_text(json.dumps({"objects": ["yellow triangle"]}))
    assert run("validate", graphs).exit_code == 0  # a Shapes name: the shipped model knows it
    result = run("validate", graphs, "--model", tiny_pipeline)
    assert result.exit_code == 1 and "unknown object 'yellow triangle'" in result.output
    # a bad --model, or both --model and --vocab: one line, exit 2
    for model, message in (
        (tmp_path / "missing", "no such folder"),
        (tmp_path, "no model_index.json; not a saved pipeline folder"),
    ):
        result = run("validate", graphs, "--model", model)
        assert result.exit_code == 2 and errors(result) == [f"error: {model}: {message}"]
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    result = run("validate", graphs, "--model", tmp_path)
    assert result.exit_code == 2 and "not a scene-graph pipeline" in result.output
    result = run("validate", graphs, "--model", tiny_pipeline, "--vocab", tmp_path / "v.json")
    assert result.exit_code == 2 and "give --model or --vocab, not both" in result.output


def test_shapes_vocab_is_the_shipped_models(tmp_path):
    """`shapes vocab` writes the file `validate --vocab` reads: the shipped model's names."""
    from sg2image import SHAPES_MODEL
    from sg2image.cli import read_model_vocab
    from sg2image.data.shapes import shapes_vocab

    result = run("shapes", "vocab", "-o", tmp_path / "sub" / "vocab.json")
    assert result.exit_code == 0 and "18 objects, 6 predicates" in result.output
    written = Vocab.load(tmp_path / "sub" / "vocab.json")
    assert written == shapes_vocab() == read_model_vocab(SHAPES_MODEL)[0]
    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps({"objects": ["red circel"]}))
    result = run("validate", graphs, "--vocab", tmp_path / "sub" / "vocab.json")
    assert result.exit_code == 1 and "did you mean 'red circle'," in result.output
    result = run("shapes", "vocab", "-o", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.output


def test_shapes_depth_world(tmp_path):
    result = run("shapes", "vocab", "--world", "depth", "-o", tmp_path / "vocab.json")
    assert result.exit_code == 0 and "18 objects, 8 predicates" in result.output
    names = Vocab.load(tmp_path / "vocab.json").predicate_names
    assert names[-2:] == ["in front of", "behind"]
    graphs = tmp_path / "g.json"
    result = run("shapes", "make", "--world", "depth", "--n", "20", "-o", graphs)
    assert result.exit_code == 0 and "20 depth-world test scene graph(s)" in result.output
    made = json.loads(graphs.read_text())
    assert made[0]["relationships"][-1] == [1, "behind", 0]  # the pinned depth scene 0
    assert run("shapes", "render", graphs, "-o", tmp_path / "img").exit_code == 0
    result = run("shapes", "check", graphs, tmp_path / "img")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "img" / "oracle.json").read_text())
    assert report["occlusion_judged"] == 12 and report["occlusion_accuracy"] == 1.0
    assert "occlusion:         1.0000  (12 depth triples" in result.output
    assert run("shapes", "make", "--world", "deep", "-o", graphs).exit_code == 2
    # a depth cycle: one located line
    made[0]["relationships"] += [[0, "behind", 1]]
    graphs.write_text(json.dumps(made))
    result = run("shapes", "render", graphs, "-o", tmp_path / "img2")
    assert result.exit_code != 0
    assert "scenes[0].relationships[5]: 'behind' makes a depth cycle between objects 0 and 1" in (
        result.output
    )


def test_shapes_make_render_check_and_draw(tmp_path):
    graphs = tmp_path / "g.json"
    assert run("shapes", "make", "--split", "test", "--n", "6", "-o", graphs).exit_code == 0
    assert len(json.loads(graphs.read_text())) == 6
    result = run("shapes", "render", graphs, "-o", tmp_path / "img", "--with-graph")
    assert result.exit_code == 0
    assert Image.open(tmp_path / "img" / "00005.png").size == (64, 64)
    result = run("shapes", "check", graphs, tmp_path / "img")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "img" / "oracle.json").read_text())
    assert report["num_images"] == 6 and report["object_recall"] == 1.0
    assert "object recall:     1.0000" in result.output
    n = report["num_relations"]
    assert f"of found pairs:  1.0000  ({n} of {n} triples)" in result.output
    judged = report["placement_judged"]
    assert report["placement"] == 1.0 and judged == 11  # of the 6 graphs' 21 triples
    assert f"placement:         1.0000  ({judged} triples judged" in result.output

    (tmp_path / "img" / "00002.png").unlink()
    result = run("shapes", "check", graphs, tmp_path / "img")
    assert result.exit_code == 2 and "error:" in result.output and "2" in result.output

    assert run("shapes", "make", "--split", "nope", "-o", graphs).exit_code == 2
    assert run("draw", graphs, "-o", tmp_path / "drawn").exit_code == 0
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 6
    # -o naming a file (or a path through one): one line, not "[Errno 17] File exists"
    for bad in (graphs, graphs / "sub"):
        result = run("draw", graphs, "-o", bad)
        assert result.exit_code == 2 and "Errno" not in result.output, result.output
        assert f"error: {bad}:" in result.output
    assert "exists and is not a folder" in run("draw", graphs, "-o", graphs).output


def test_generate_writes_images_and_graph_drawings(tiny_pipeline, tmp_path):
    graphs = tmp_path / "g.json"
    graphs.write_text(
        json.dumps(
            [{"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}] * 3
        )
    )
    args = ("generate", graphs, "--model", tiny_pipeline, "--steps", "2", "--batch-size", "2")
    result = run(*args, "-o", tmp_path / "a", "--with-graph", "--scheduler", "ddim")
    assert result.exit_code == 0, result.output
    # named as `sample` names graph i's sample 0, beside the graphs: what eval reads
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == [
        "000000_0.png",
        "000001_0.png",
        "000002_0.png",
    ]
    assert json.loads((tmp_path / "a" / "graphs.json").read_text()) == json.loads(
        graphs.read_text()
    )
    assert len(list((tmp_path / "a" / "with_graph").glob("*.png"))) == 3
    # same seed -> same image whatever the batch size; image i uses seed + i
    assert (
        run(*args[:-2], "--batch-size", "3", "-o", tmp_path / "b", "--scheduler", "ddim").exit_code
        == 0
    )
    a, b = (np.asarray(Image.open(tmp_path / d / "000002_0.png"), dtype=int) for d in ("a", "b"))
    # equal up to one level of rounding: with one thread, oneDNN's convolutions sum in
    # another order for a batch of 3 than of 2 (differences of ~1e-6 before quantising)
    assert np.abs(a - b).max() <= 1
    # another size than the model's training size (32 px here)
    assert run(*args, "-o", tmp_path / "c", "--height", "16", "--width", "48").exit_code == 0
    assert Image.open(tmp_path / "c" / "000000_0.png").size == (48, 16)


def test_generate_output_goes_into_eval_and_shapes_check(tiny_pipeline, tmp_path):
    """generate -> eval and generate -> shapes check, on the folder exactly as written."""
    from sg2image.models.base import build_tiny_clip_vision

    graphs = tmp_path / "g.json"
    boxes = [[0.1, 0.3, 0.4, 0.6], [0.6, 0.3, 0.9, 0.6]]
    scenes = [
        {"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]},
        {"objects": ["blue square", "red circle"], "relationships": [[1, "above", 0]]},
        {"objects": ["red circle"]},
    ]
    graphs.write_text(json.dumps([{**g, "boxes": boxes[: len(g["objects"])]} for g in scenes]))
    gen = tmp_path / "gen"
    model = ("--model", tiny_pipeline, "--steps", "1")
    assert run("generate", graphs, *model, "--with-graph", "-o", gen).exit_code == 0
    assert run("shapes", "render", graphs, "-o", tmp_path / "ref").exit_code == 0

    clip = build_tiny_clip_vision(tmp_path / "clip")
    args = ("eval", "--generated", gen, "--reference", tmp_path / "ref", "--clip", clip)
    result = run(*args, "--detector", "shapes")  # graphs: GENERATED/graphs.json
    assert result.exit_code == 0, result.output
    report = json.loads((gen / "eval.json").read_text())
    assert report["num_generated"] == 3 and report["num_reference"] == 3
    assert report["num_graphs"] == 3

    result = run("shapes", "check", graphs, gen)
    assert result.exit_code == 0, result.output
    assert json.loads((gen / "oracle.json").read_text())["num_images"] == 3


def test_generate_errors_are_one_line(tiny_pipeline, tmp_path):
    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps({"objects": ["green star"]}))
    result = run("generate", graphs, "--model", tiny_pipeline, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "objects[0]: unknown object 'green star'" in result.output
    graphs.write_text(json.dumps({"objects": ["red circle"]}))
    result = run("generate", graphs, "--model", tmp_path / "missing", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "no such folder" in result.output
    result = run("generate", graphs, "--model", "someone/not-cached", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "could not be reached" in result.output
    result = run(
        "generate", graphs, "--model", tiny_pipeline, "--scheduler", "nope", "-o", tmp_path / "o"
    )
    assert result.exit_code == 2 and "unknown" in result.output
    model = ("--model", tiny_pipeline)
    result = run("generate", graphs, *model, "--height", "31", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "height 31: expected a positive multiple of" in result.output


@pytest.fixture(scope="module")
def tiny_layout_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-layout")
    build_tiny_layout_pipeline(root).save_pretrained(root / "pipe")
    return root / "pipe"


BOXED = [  # Shapes names; the red circle's box is on the left
    {
        "objects": ["red circle", "blue square"],
        "relationships": [[0, "left of", 1]],
        "boxes": [[0.125, 0.375, 0.375, 0.625], [0.625, 0.25, 0.875, 0.75]],
    },
    {"objects": ["green triangle"], "boxes": [[0.5, 0.5, 0.75, 0.75]]},
    {"objects": ["blue square", "red circle"], "boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1, 1]]},
]


def errors(result) -> list[str]:
    """The error lines (loading a model draws progress bars on the same output)."""
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def layouts(folder) -> list[dict]:
    return json.loads((folder / "layouts.json").read_text())


def test_generate_with_given_and_predicted_layouts(tiny_layout_pipeline, tmp_path):
    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps(BOXED))
    args = ("generate", graphs, "--model", tiny_layout_pipeline, "--steps", "2", "--seed", "5")
    result = run(
        *args, "--layout", "given", "--with-graph", "--batch-size", "2", "-o", tmp_path / "a"
    )
    assert result.exit_code == 0, result.output
    assert "given layout of each" in result.output
    written = layouts(tmp_path / "a")
    assert [(r["image"], r["graph"], r["seed"], r["layout"]) for r in written] == [
        (f"{i:06d}_0.png", i, 5 + i, "given") for i in range(3)
    ]
    assert [r["boxes"] for r in written] == [g["boxes"] for g in BOXED]
    # the layout over the image panel (256 px high): the red circle's box outlined in red
    sheet = Image.open(tmp_path / "a" / "with_graph" / "000000_0.png").convert("RGB")
    assert sheet.getpixel((32, 128)) == (255, 0, 0)  # its left side, x0 = 0.125 of 256
    assert sheet.getpixel((223, 128)) == (0, 0, 255)  # the blue square's right, x1 = 0.875

    # predicted (the default): boxes from the graph, the same whatever the batch
    result = run(*args, "--batch-size", "3", "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    predicted = layouts(tmp_path / "p")
    assert {r["layout"] for r in predicted} == {"predicted"}
    assert [len(r["boxes"]) for r in predicted] == [2, 1, 2]
    assert [r["boxes"] for r in predicted] != [g["boxes"] for g in BOXED]
    for x0, y0, x1, y1 in (b for r in predicted for b in r["boxes"]):
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    result = run(*args, "--layout", "predicted", "--batch-size", "1", "-o", tmp_path / "q")
    assert layouts(tmp_path / "q") == predicted
    a, b = (Image.open(tmp_path / d / "000002_0.png").tobytes() for d in ("p", "q"))
    assert a == b


def test_generate_layout_errors_are_one_line(tiny_layout_pipeline, tiny_pipeline, tmp_path):
    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps([BOXED[0], {"objects": ["red circle"]}]))
    model = ("--model", tiny_layout_pipeline, "--steps", "2")
    result = run("generate", graphs, *model, "--layout", "given", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert errors(result) == ["error: scenes[1]: layout='given' needs 'boxes' in every graph"]
    assert not (tmp_path / "o").exists()  # checked before any image is made
    result = run("generate", graphs, *model, "--layout", "drawn", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "layout: 'drawn' is not one of" in result.output
    # a layout-free model: 'given' refused, 'predicted' accepted, no layouts written
    graphs.write_text(json.dumps({"objects": ["red circle"], "boxes": [[0, 0, 0.5, 0.5]]}))
    free = ("--model", tiny_pipeline, "--steps", "2")
    result = run("generate", graphs, *free, "--layout", "given", "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert errors(result) == ["error: layout='given': this model is layout-free; it takes no boxes"]
    result = run("generate", graphs, *free, "--layout", "predicted", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "000000_0.png").is_file()
    assert not (tmp_path / "o" / "layouts.json").exists()


def test_train_from_config_file_then_generate(tmp_path):
    from sg2image.models.base import build_tiny_clip_vision

    base = build_tiny_base(tmp_path / "base")
    clip = build_tiny_clip_vision(tmp_path / "clip")
    cfg = tmp_path / "run.toml"
    enc = (
        "{embed_dim = 16, hidden_dim = 16, triple_hidden_dim = 16, num_layers = 1, global_dim = 16}"
    )
    cfg.write_text(
        f'base_model = "{base}"\nclip_model = "{clip}"\noutput_dir = "{tmp_path / "run"}"\n'
        f"resolution = 32\ntrain_size = 4\nval_size = 4\nencoder = {enc}\n"
        "[gca]\nmax_steps = 2\nbatch_size = 2\n[finetune]\nmax_steps = 2\nbatch_size = 2\n"
    )
    result = run("train", cfg, "--stages", "gca,finetune", "seed=1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps({"objects": ["red circle", "blue square"]}))
    result = run(
        "generate",
        graphs,
        "--model",
        tmp_path / "run" / "pipeline",
        "--steps",
        "2",
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 0 and (tmp_path / "o" / "000000_0.png").is_file()
    # the training resolution is the pipeline's default image size
    assert Image.open(tmp_path / "o" / "000000_0.png").size == (32, 32)
    # the same command again continues its run (here: finds it finished), as a preset does
    again = run("train", cfg, "--stages", "gca,finetune", "seed=1")
    assert again.exit_code == 0, again.output
    # other settings over a run's checkpoints: refused, naming what differs
    other = run("train", cfg, "--stages", "gca,finetune", "seed=2")
    assert other.exit_code == 2 and "holds checkpoints of a run with other settings (seed)" in (
        other.output
    )


def test_train_stopped_says_where_and_how_to_continue(tmp_path, monkeypatch):
    """Ctrl-C (SIGTERM becomes the same) ends with the stage, step, last checkpoint and the
    command that continues; running that command finishes the run."""
    from sg2image.models.base import build_tiny_clip_vision
    from sg2image.training import stages as stages_mod

    base = build_tiny_base(tmp_path / "base")
    clip = build_tiny_clip_vision(tmp_path / "clip")
    cfg = tmp_path / "run.toml"
    enc = "{embed_dim = 8, hidden_dim = 8, triple_hidden_dim = 8, num_layers = 1, global_dim = 8}"
    cfg.write_text(
        f'base_model = "{base}"\nclip_model = "{clip}"\noutput_dir = "{tmp_path / "run"}"\n'
        f"resolution = 32\ntrain_size = 4\nval_size = 4\nencoder = {enc}\ncheckpoint_every = 2\n"
        "[gca]\nmax_steps = 3\nbatch_size = 2\n[finetune]\nmax_steps = 1\nbatch_size = 2\n"
    )
    real_step, calls = stages_mod.GCAStage.train_step, []

    def stop_at_third(self, batch, generators):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self, batch, generators)

    monkeypatch.setattr(stages_mod.GCAStage, "train_step", stop_at_third)
    result = run("train", cfg, "seed=1")
    assert result.exit_code == 130, result.output
    assert "stopped in stage gca at step 2 of 3; its last checkpoint is at step 2" in result.output
    assert f"to continue, run the same command again: sg2image train {cfg} seed=1" in result.output
    monkeypatch.undo()
    result = run("train", cfg, "seed=1")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "(stage gca, step 2)" in result.output

    result = run("train", cfg, "finetune.lrr=1")
    assert (
        result.exit_code == 2 and "finetune.lrr: unknown key (did you mean 'lr'?)" in result.output
    )


def test_data_prepare_coco_and_errors(tmp_path):
    from fixtures_coco import build_coco_fixture

    raw = build_coco_fixture(tmp_path / "raw")
    result = run("data", "prepare", "coco", "--src", raw, "--out", tmp_path / "coco")
    assert result.exit_code == 0, result.output
    assert (
        json.loads((tmp_path / "coco" / "vocab.json").read_text())["object_idx_to_name"][0]
        == "__image__"
    )
    assert '"train"' in result.output
    result = run("data", "prepare", "coco", "--src", tmp_path / "nope", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "error:" in result.output
    result = run("data", "prepare", "kitti", "--src", raw, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "dataset 'kitti' unknown" in result.output


def test_sample_split_is_resumable_and_named_by_index(tmp_path):
    from sg2image.data.shapes import shapes_vocab

    torch.manual_seed(0)
    enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
    pipe = pipeline_from_base(load_base(build_tiny_base(tmp_path / "base")), shapes_vocab(), enc)
    pipe.save_pretrained(tmp_path / "pipe")
    args = ("sample", "--model", tmp_path / "pipe", "--limit", "3", "--samples-per-graph", "2")
    args += ("--steps", "2", "--batch-size", "4")
    result = run(*args, "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "s").glob("*.png"))
    assert names == [f"{i:06d}_{k}.png" for i in range(3) for k in range(2)]
    assert len(json.loads((tmp_path / "s" / "graphs.json").read_text())) == 3
    first = (tmp_path / "s" / "000001_1.png").read_bytes()
    (tmp_path / "s" / "000001_1.png").unlink()
    result = run(*args, "-o", tmp_path / "s")
    assert "wrote 1 image(s)" in result.output  # only the missing one
    assert (tmp_path / "s" / "000001_1.png").read_bytes() == first  # same seed, same image
    result = run("sample", "--model", tmp_path / "pipe", "--split", "train", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "sample val or test" in result.output


def test_eval_scores_a_sample_folder(tmp_path):
    from test_eval import write_sample_folders

    from sg2image.models.base import build_tiny_clip_vision

    clip = build_tiny_clip_vision(tmp_path / "clip")
    _, gen, ref = write_sample_folders(tmp_path)
    args = ("eval", "--generated", gen, "--reference", ref, "--clip", clip)
    result = run(*args, "--detector", "shapes")
    assert result.exit_code == 0, result.output
    data = json.loads((gen / "eval.json").read_text())
    assert data["oor"] == 1.0 and data["relation_accuracy"] >= 0.9
    assert (
        data["num_generated"] == 12 and data["num_reference"] == 6 and data["diversity_pairs"] == 6
    )
    assert data["feature_diversity"] > 0 and data["resolution"] == 64
    result = run("eval", "--generated", ref, "--reference", ref, "--clip", clip)
    assert result.exit_code == 2 and "no samples named like" in result.output


def test_train_preset_takes_overrides_after_it(monkeypatch, tmp_path):
    """The first `key=value` lands where typer puts the CONFIG argument: it must still be an
    override (it used to fail with 'give a CONFIG file or --preset, not both')."""
    import sg2image.training.presets as presets

    seen = {}

    def fake_run_preset(name, out, overrides, **kwargs):
        seen.update(name=name, out=out, overrides=overrides, **kwargs)
        return tmp_path / "pipeline"

    monkeypatch.setattr(presets, "run_preset", fake_run_preset)
    cond = '{"fusion": "concat", "use_graph": false}'
    result = run("train", "--preset", "shapes", "-o", tmp_path, f"conditioner={cond}", "seed=3")
    assert result.exit_code == 0, result.output
    assert seen["name"] == "shapes" and seen["overrides"] == [f"conditioner={cond}", "seed=3"]


def test_sample_arrays_give_each_graph_its_own_noise_whatever_the_batch(tmp_path):
    """The benchmarks' seeded loop: graph i's image comes from generator seed + i, so batch 2
    and batch 3 give the same images, and another seed gives others; NAME=PIPELINE_DIR
    arguments are checked."""
    from sg2image.data.shapes import make_split, shapes_vocab
    from sg2image.sampling import named_pipeline, sample_arrays

    torch.manual_seed(0)
    enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
    pipe = pipeline_from_base(load_base(build_tiny_base(tmp_path / "base")), shapes_vocab(), enc)
    pipe.set_progress_bar_config(disable=True)
    graphs = make_split("val", n=3)
    a = sample_arrays(pipe, graphs, batch_size=2, num_inference_steps=2)
    b = sample_arrays(pipe, graphs, batch_size=3, num_inference_steps=2)
    c = sample_arrays(pipe, graphs, batch_size=3, seed=7, num_inference_steps=2)
    assert len(a) == 3 and a[0].dtype == np.uint8 and a[0].shape[-1] == 3
    # the same images, to a level of rounding (a batch's matmuls round differently)
    assert all(np.abs(x.astype(int) - y).max() <= 1 for x, y in zip(a, b, strict=True))
    assert np.abs(a[0].astype(int) - c[0]).mean() > 1
    pipe.save_pretrained(tmp_path / "pipe")
    assert named_pipeline(f"mine={tmp_path / 'pipe'}") == ("mine", tmp_path / "pipe")
    for bad in (str(tmp_path / "pipe"), f"x={tmp_path}", f"={tmp_path / 'pipe'}"):
        with pytest.raises(ValueError, match="expected NAME=PIPELINE_DIR"):
            named_pipeline(bad)


def test_model_names_the_shipped_models(tiny_pipeline, tmp_path, monkeypatch):
    """--model shapes-depth (no such folder here) is the shipped depth model; where an
    install lacks it, one line says so; a folder of that name wins over the name."""
    import sg2image

    graphs = tmp_path / "g.json"
    graphs.write_text(json.dumps({"objects": ["red circle"]}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sg2image.SHIPPED_MODELS, "shapes-depth", tmp_path / "absent")
    result = run("validate", graphs, "--model", "shapes-depth")
    assert result.exit_code == 2 and "--model shapes-depth: not shipped" in result.output
    monkeypatch.setitem(sg2image.SHIPPED_MODELS, "shapes-depth", tiny_pipeline)
    result = run("validate", graphs, "--model", "shapes-depth")
    assert result.exit_code == 0 and f"checked against the model {tiny_pipeline}" in result.output
    (tmp_path / "shapes-depth").mkdir()
    result = run("validate", graphs, "--model", "shapes-depth")
    assert result.exit_code == 2  # the local folder, which holds no pipeline

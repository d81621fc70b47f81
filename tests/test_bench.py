"""The Shapes benchmark harness on tiny random models: every number is produced and sane."""

import json

import pytest
import torch

from sg2image.data.shapes import PREDICATE_PHRASES, generate_scene, make_split, shapes_vocab
from sg2image.eval.shapes_bench import (
    System,
    example_grid,
    graph_sentence,
    markdown_table,
    per_predicate_table,
    plot_accuracy_vs_evals,
    run_benchmark,
)
from sg2image.graph import SceneGraph
from sg2image.models.base import build_tiny_base, build_tiny_clip_vision, load_base
from sg2image.models.shapes_base import build_tokenizer
from sg2image.pipeline import pipeline_from_base


def test_graph_sentence():
    g = SceneGraph(
        objects=["red circle", "blue square", "cyan triangle"],
        relationships=[(0, "left of", 1), (1, "bigger than", 0)],
    )
    assert graph_sentence(g) == (
        "a red circle to the left of a blue square, a cyan triangle"
        " and a blue square bigger than a red circle"
    )
    assert graph_sentence(SceneGraph(objects=["red circle"])) == "a red circle"
    depth = SceneGraph(objects=["red circle", "blue square"], relationships=[(1, "behind", 0)])
    assert graph_sentence(depth) == "a blue square behind a red circle"
    # within a context of 32 tokens: every object named, relations while they fit
    tok = build_tokenizer()
    for i in range(200):
        graph = generate_scene("test", i)
        sentence = graph_sentence(graph, tok)
        assert len(tok(sentence).input_ids) <= tok.model_max_length, sentence
        assert all(name in sentence for name in graph.objects)
    five = SceneGraph(
        objects=["red circle", "blue square", "cyan triangle", "green square", "red square"],
        relationships=[(0, "left of", 1), (2, "above", 3), (1, "below", 4), (3, "above", 0)],
    )
    assert graph_sentence(five, tok) == (
        "a red circle to the left of a blue square, a cyan triangle above a green square,"
        " a red square and a blue square below a red square"  # 32 tokens: no room for more
    )


def test_per_predicate_table_depth_columns():
    plain = {"system": {"name": "plain"}, "per_predicate": {"left of": {"accuracy": 1, "total": 3}}}
    header = per_predicate_table([plain]).splitlines()[0]
    assert "left of" in header and "behind" not in header
    depth = {
        "system": {"name": "depth"},
        "per_predicate": {"behind": {"accuracy": 0.5, "total": 2}},
    }
    table = per_predicate_table([plain, depth]).splitlines()
    assert table[0].split("|")[-3:-1] == [" in front of ", " behind "]
    assert table[-1].split("|")[-3:-1] == [" – ", " 0.500 (2) "]


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
        System("shuffled-control", "shuffled"),
        System("sg2image", "pipeline", str(tiny / "pipe"), steps=2, guidance=2.0),
        System("text", "text", str(tiny / "base"), scheduler="ddim", steps=2, guidance=1.0),
    ]
    rows = run_benchmark(systems, str(tiny / "clip"), tmp_path / "res", n=3, diversity_n=2)
    gt, shuffled, ours, text = rows
    assert gt["object_recall"] == 1.0 and gt["relation_accuracy"] == 1.0
    # placement: 7 of the 3 graphs' 10 triples have two colours unique in their graph
    assert gt["placement"] == 1.0 and gt["placement_judged"] == 7
    # graph i against the render of graph i + 1: the same triples judged, none placed
    assert shuffled["placement"] == 0.0 and shuffled["placement_judged"] == 7
    assert shuffled["object_recall"] == pytest.approx(1 / 11)
    assert shuffled["unet_evals_per_image"] == 0 and shuffled["feature_diversity"] is None
    # the same renders in another order: the same distribution
    assert shuffled["fid"] == pytest.approx(0.0, abs=1e-2)
    assert gt["fid"] == pytest.approx(0.0, abs=1e-2) and gt["unet_evals_per_image"] == 0
    # the hook counts what the sampler really does: 2 steps x (cond + uncond)
    assert ours["unet_evals_per_image"] == 4 and text["unet_evals_per_image"] == 2
    assert ours["fid"] > gt["fid"] and ours["feature_diversity"] > 0
    assert ours["object_recall"] < 0.5  # an untrained model does not draw the shapes
    assert ours["torch_threads"] == torch.get_num_threads()  # s/img depends on it
    for name in ("ground-truth", "shuffled-control", "sg2image", "text", "floor"):
        data = json.loads((tmp_path / "res" / f"{name}.json").read_text())
        assert "fid" in data
    assert json.loads((tmp_path / "res" / "ground-truth.json").read_text())["placement"] == 1.0
    table = markdown_table(rows, json.loads((tmp_path / "res" / "floor.json").read_text()))
    assert table.count("\n") == 2 + 4 + 1 and "| sg2image | dpm++ 2, cfg 2.0 |" in table
    assert "| ground-truth | – | 3 | 1.000 | 1.000 | 1.000 | 1.000 (7) |" in table
    assert "| shuffled-control | – | 3 | 0.091 | 0.000 | – | 0.000 (7) |" in table
    # a row saved before placement existed still makes a table: "–" in its column
    old = {k: v for k, v in gt.items() if k not in ("placement", "placement_judged")}
    assert "| ground-truth | – | 3 | 1.000 | 1.000 | 1.000 | – |" in markdown_table([old])
    plot_accuracy_vs_evals(rows, tmp_path / "plot.png")
    example_grid(ours, make_split("test", n=3), tmp_path / "grid.png", k=3)
    assert (tmp_path / "plot.png").stat().st_size > 1000 and (tmp_path / "grid.png").exists()


def test_subsets_reuse_and_docs_section(tiny, tmp_path, monkeypatch):
    from sg2image.eval import shapes_bench

    sub = System("sub", "pipeline", str(tiny / "pipe"), steps=2, num_graphs=2)
    rows = run_benchmark([sub], str(tiny / "clip"), tmp_path / "res", n=3, diversity_n=1)
    assert rows[0]["num_graphs"] == 2 and rows[0]["diversity_graphs"] == 1

    # a saved row with the same settings is read back, not sampled again ...
    def boom(*a, **k):
        raise AssertionError("sampled again")

    monkeypatch.setattr(shapes_bench, "evaluate", boom)
    again = run_benchmark([sub], str(tiny / "clip"), tmp_path / "res", n=3, reuse=True)
    assert again[0]["relation_accuracy"] == rows[0]["relation_accuracy"]
    # ... but other settings are not taken for it
    other = System("sub", "pipeline", str(tiny / "pipe"), steps=3, num_graphs=2)
    with pytest.raises(AssertionError, match="sampled again"):
        run_benchmark([other], str(tiny / "clip"), tmp_path / "res", n=3, reuse=True)
    monkeypatch.undo()

    # the docs section replaces only itself; the grid re-samples a row read from JSON
    md = tmp_path / "docs" / "benchmarks.md"
    md.parent.mkdir()
    md.write_text("# Benchmarks\n\n## Serving\n\nkept\n")
    row = {**again[0], "system": {**again[0]["system"], "name": "sg2image"}}
    floor = {"fid": 1.0, "kid": 0.01, "num_graphs": 3}
    for _ in range(2):
        shapes_bench.write_docs([row], floor, md, "sg2image bench --run R", 3)
    text = md.read_text()
    assert text.count(shapes_bench.SECTION_START) == 1 and "## Serving\n\nkept" in text
    assert "| sg2image | dpm++ 2, cfg 2.0 | 2 |" in text
    assert "| system | " + " | ".join(PREDICATE_PHRASES) + " |" in text  # per-predicate table
    assert (md.parent / "benchmark_examples.png").stat().st_size > 1000


def test_systems_for_names_ablations_and_sweep(tmp_path):
    from sg2image.eval.shapes_bench import systems_for

    abl = tmp_path / "abl" / "method"
    (abl / "pipeline").mkdir(parents=True)
    (abl / "config.json").write_text('{"stages": ["finetune"], "finetune": {"max_steps": 40}}')
    systems = systems_for(tmp_path / "run", {"no-gca": str(abl / "pipeline")}, True, 50)
    by_name = {s.name: s for s in systems}
    assert by_name["no-gca"].note == "ablation; layout-free; stages finetune, fine-tuned 40 steps"
    # --sweep-n shortens the sweep only: an ablation runs on all n graphs, as the model
    assert by_name["no-gca"].num_graphs is None and by_name["sg2image"].num_graphs is None
    sweep = [s for s in systems if s.name.startswith(("lms-", "dpm-", "ddim-"))]
    assert len(sweep) == 12 and {s.num_graphs for s in sweep} == {50}
    assert [s.kind for s in systems[:2]] == ["ground_truth", "shuffled"]  # no model needed
    assert by_name["lms-100"].steps == 100 and by_name["lms-100"].scheduler == "lms"
    assert by_name["dpm-20-bf16"].bf16 and by_name["dpm-20-no-cfg"].guidance == 1.0


def test_layout_model_gets_a_true_layout_row(tmp_path):
    from sg2image.eval.shapes_bench import is_layout_model, systems_for

    pipe = tmp_path / "run" / "method" / "pipeline"
    pipe.mkdir(parents=True)
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "layout_encoder": [None, None]}
    (pipe / "model_index.json").write_text(json.dumps(index))
    assert not is_layout_model(pipe)
    assert "sg2image-true-layout" not in [s.name for s in systems_for(tmp_path / "run", {}, False)]
    index["layout_encoder"] = ["sg2image.models.layout", "LayoutEncoder"]
    (pipe / "model_index.json").write_text(json.dumps(index))
    rows = {s.name: s for s in systems_for(tmp_path / "run", {}, False)}
    assert rows["sg2image-true-layout"].layout == "given" and rows["sg2image"].layout is None


@pytest.fixture(scope="module")
def depth_pipe(tiny):
    torch.manual_seed(0)
    enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
    pipe = pipeline_from_base(load_base(tiny / "base"), shapes_vocab("depth"), enc)
    pipe.save_pretrained(tiny / "depth-pipe")
    return tiny / "depth-pipe"


def test_depth_run_is_scored_on_the_depth_split_with_a_plain_row(tiny, depth_pipe, tmp_path):
    from sg2image.eval.shapes_bench import write_docs

    systems = [
        System("ground-truth", "ground_truth", world="depth"),
        System("sg2image", "pipeline", str(depth_pipe), steps=2, world="depth"),
        System("sg2image-plain-test", "pipeline", str(depth_pipe), steps=2),
    ]
    res = tmp_path / "res"
    rows = run_benchmark(systems, str(tiny / "clip"), res, n=3, diversity_n=1, world="depth")
    gt, ours, plain = rows
    # depth test scenes 0-2 hold one depth triple each; their renders follow all three
    assert gt["occlusion_judged"] == 3 and gt["occlusion_accuracy"] == 1.0
    assert gt["relation_accuracy"] == 1.0 and gt["fid"] == pytest.approx(0.0, abs=1e-2)
    assert ours["occlusion_judged"] <= 3 and ours["system"]["world"] == "depth"
    # the plain row: the plain world's graphs (no depth triple), against its own renders
    assert plain["occlusion_judged"] == 0 and plain["occlusion_accuracy"] is None
    assert not set(plain["per_predicate"]) & {"in front of", "behind"}
    depth_graphs = make_split("test", n=3, world="depth")
    assert plain["num_graphs"] == 3 and make_split("test", n=3) != depth_graphs
    floor = json.loads((res / "floor.json").read_text())
    assert floor["world"] == "depth" and "depth world's val renders" in floor["system"]
    table = markdown_table(rows, {**floor, "num_graphs": 3}).splitlines()
    assert table[0].startswith("| system | sampler | graphs | test split | obj. recall |")
    assert "| placement (judged) | occl. acc. (judged) | FID |" in table[0]
    assert table[2].startswith("| ground-truth | – | 3 | depth | 1.000 | 1.000 |")
    assert "| 1.000 (3) |" in table[2] and "| plain |" in table[4]
    assert table[5].startswith("| real-vs-real floor | – | 3 | depth | –")
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert per_predicate_table(rows).splitlines()[0].endswith("| in front of | behind |")
    # a depth run's docs section is its own: the plain one stays
    md = tmp_path / "docs" / "benchmarks.md"
    md.parent.mkdir()
    plain_section = "<!-- shapes-bench:start -->\nplain table\n<!-- shapes-bench:end -->\n"
    md.write_text("# Benchmarks\n\n" + plain_section)
    for _ in range(2):
        write_docs(rows, floor, md, "sg2image bench --run R --world depth", 3, "depth")
    text = md.read_text()
    assert plain_section in text and text.count("<!-- shapes-bench-depth:start -->") == 1
    assert "## Shapes depth world benchmark" in text and "Occlusion accuracy" in text
    assert (md.parent / "benchmark_examples_depth.png").stat().st_size > 1000


def test_depth_run_rows_and_world(tmp_path):
    from sg2image.eval.shapes_bench import _done, run_world, systems_for

    run = tmp_path / "run"
    pipe, abl = run / "method" / "pipeline", tmp_path / "abl" / "method" / "pipeline"
    index = {"layout_encoder": ["sg2image.models.layout", "LayoutEncoder"],
             "predicate_names": ["__in_image__", "left of", "in front of", "behind"]}  # fmt: skip
    for d in (pipe, abl):
        d.mkdir(parents=True)
        (d / "model_index.json").write_text(json.dumps(index))
        (d.parent / "config.json").write_text('{"world": "depth", "stages": ["finetune"]}')
    assert run_world(run) == "depth" and run_world(tmp_path / "plain-run") == "plain"
    systems = systems_for(run, {"no-order": str(abl)}, False, world=run_world(run))
    by_name = {s.name: s for s in systems}
    assert by_name["sg2image-plain-test"].world == "plain"
    assert by_name["sg2image-plain-test"].model == str(pipe)
    others = [s for s in systems if s.name != "sg2image-plain-test"]
    assert {s.world for s in others} == {"depth"}
    # boxes given carry no order: a layout ablation's row with the true boxes
    assert by_name["no-order-true-layout"].layout == "given"
    assert by_name["sg2image-true-layout"].layout == "given"
    # a plain run: the rows as they were
    plain = systems_for(run, {}, False)
    assert {s.world for s in plain} == {"plain"}
    assert "sg2image-plain-test" not in [s.name for s in plain]
    # a plain-world model cannot be scored on the depth split
    index["predicate_names"] = ["__in_image__", "left of"]
    (abl / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="plain-world model"):
        systems_for(run, {"plain": str(abl)}, False, world="depth")
    # a row saved before worlds existed is the plain world's, and is reused as such
    row = {"system": {k: v for k, v in vars(System("x", "ground_truth")).items() if k != "world"},
           "seed": 0, "num_graphs": 3}  # fmt: skip
    (tmp_path / "x.json").write_text(json.dumps(row))
    assert _done(tmp_path / "x.json", System("x", "ground_truth"), 3, 0) is not None
    assert _done(tmp_path / "x.json", System("x", "ground_truth", world="depth"), 3, 0) is None


def test_bench_refuses_an_unknown_world(tmp_path):
    from typer.testing import CliRunner

    from sg2image.cli import app

    result = CliRunner().invoke(app, ["bench", "--run", str(tmp_path), "--world", "deep"])
    assert result.exit_code == 2 and "--world 'deep': expected one of plain, depth" in result.output


def test_student_rows_count_their_evaluations_and_draw_a_curve(tiny, tmp_path):
    """A pipeline with a distilled student gets rows student-1/2/4/8 (its default marked):
    N steps are N UNet evaluations (no CFG), and the plot draws their curve."""
    import copy

    from sg2image.eval.shapes_bench import STUDENT_STEPS, has_student, systems_for
    from sg2image.pipeline import load_pipeline
    from sg2image.training.config import DistillConfig
    from sg2image.training.distill import student_scheduler

    pipe = load_pipeline(tiny / "pipe")
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 2, 2.0)
    folder = tmp_path / "run" / "method" / "pipeline"
    pipe.save_pretrained(folder)
    assert has_student(folder) and not has_student(tiny / "pipe")
    systems = {s.name: s for s in systems_for(tmp_path / "run", {}, False)}
    assert [systems[f"student-{k}"].steps for k in STUDENT_STEPS] == [1, 2, 4, 8]
    assert systems["student-2"].note == "the default sampler"
    assert systems["sg2image"].note == "the full sampler" and systems["sg2image"].sampler is None
    chosen = [systems["student-1"], systems["student-2"], systems["sg2image"]]
    chosen[2] = System("sg2image", "pipeline", str(folder), steps=2, guidance=2.0)
    rows = run_benchmark(chosen, str(tiny / "clip"), tmp_path / "res", n=2, diversity_n=0)
    assert [r["unet_evals_per_image"] for r in rows] == [1, 2, 4]
    table = markdown_table(rows)
    assert "| student-2 | LCM student 2, cfg 2.0 folded in | 2 |" in table
    plot_accuracy_vs_evals(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_a_finisher_student_is_benchmarked_at_the_steps_it_takes(tiny, tmp_path):
    """distill.max_timestep=59 learns 3 timesteps: rows student-1 to student-4, not 8."""
    import copy

    from sg2image.eval.shapes_bench import student_steps, systems_for
    from sg2image.pipeline import load_pipeline
    from sg2image.training.config import DistillConfig
    from sg2image.training.distill import student_scheduler

    pipe = load_pipeline(tiny / "pipe")
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 2, 2.0, max_timestep=59)
    folder = tmp_path / "run" / "method" / "pipeline"
    pipe.save_pretrained(folder)
    assert student_steps(folder) == [1, 2, 3, 4]
    names = [s.name for s in systems_for(tmp_path / "run", {}, False)]
    assert [n for n in names if n.startswith("student-")] == [f"student-{k}" for k in (1, 2, 3, 4)]


def test_a_layout_model_with_a_finish_sampler_gets_its_row(tiny, tmp_path):
    """finish_timestep set on a layout model: a "finish" row (the default sampler, 3 UNet
    evaluations an image), while the "sg2image" row stays the full sampler."""
    from serve_fixtures import tiny_layout_pipeline

    from sg2image.eval.shapes_bench import systems_for

    pipe = tiny_layout_pipeline(tmp_path / "layout")
    pipe.register_to_config(finish_timestep=39)
    folder = tmp_path / "run" / "method" / "pipeline"
    pipe.save_pretrained(folder)
    systems = {s.name: s for s in systems_for(tmp_path / "run", {}, False)}
    assert systems["finish"].sampler == "finish" and systems["finish"].note == "the default sampler"
    assert systems["sg2image"].note == "the full sampler"
    rows = run_benchmark([systems["finish"]], str(tiny / "clip"), tmp_path / "res", n=2,
                         diversity_n=0)  # fmt: skip
    assert rows[0]["unet_evals_per_image"] == 3
    assert "draft + guided finish, cfg 2.0" in markdown_table(rows)

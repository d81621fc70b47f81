"""The Shapes adherence benchmark: does the image follow its graph, at what cost?

For each system it generates one image per fixed test graph (and a second sample of the
first ``diversity_n`` graphs), then reports the oracle's object recall, relation accuracy
(overall and per predicate) and placement (colour blobs, shape ignored), FID / KID against
ground-truth renders on Shapes-CLIP features, feature diversity, UNet evaluations per image
(counted by a hook, not assumed) and seconds per image. Two rows need no model and frame
the others: the ground truth (the oracle's ceiling) and a graph-shuffled control (graph i
scored against the render of graph i + 1: what an image that ignores its graph gets).

A run of the depth world (``world`` in its config.json, or ``--world depth``) is scored on
the depth world's test split, with the oracle's occlusion accuracy (depth triples) as one
more column and the depth predicates in the per-predicate table; the same model on the
plain world's test split is one more row (``sg2image-plain-test``), so that its
six-predicate numbers compare with those of the plain model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sg2image.data.shapes import (
    DEFAULT_WORLD,
    DEPTH_PHRASES,
    PREDICATE_PHRASES,
    RELATION_PHRASES,
    WORLDS,
    make_split,
    render,
)
from sg2image.eval.metrics import (
    ClipImageFeatures,
    feature_diversity,
    features,
    fid_kid_from_features,
    to_uint8_batch,
)
from sg2image.eval.oracle import score_images
from sg2image.graph import DEPTH_PREDICATES, SceneGraph


@dataclass
class System:
    """One row of the benchmark table."""

    name: str
    # "pipeline" (a SceneGraphPipeline folder), "text" (a base model), or no model:
    # "ground_truth" (renders of the graphs) or "shuffled" (graph i against render i + 1)
    kind: str
    model: str | None = None  # folder of the pipeline or base model
    scheduler: str = "dpm++"  # see sg2image.pipeline.SCHEDULERS
    steps: int = 20
    guidance: float = 2.0
    note: str = ""  # e.g. "trained 4x shorter"
    num_graphs: int | None = None  # the first k test graphs only (None: all of the run's n)
    bf16: bool = False  # sample under CPU/GPU bfloat16 autocast
    layout: str | None = None  # a layout model's boxes: "predicted" (None) or "given" (true)
    world: str = DEFAULT_WORLD  # whose test split: a Shapes world ("plain" or "depth")
    # "fast": the pipeline's distilled student (LCMScheduler, `steps` evaluations, guidance
    # folded in; scheduler and guidance unused); "finish": a layout model's draft and guided
    # step (its own timesteps; steps unused); "full" (or None): the UNet with CFG
    sampler: str | None = None
    batch_size: int = 16  # graphs per pipeline call (s/img depends on it)


def graph_sentence(graph: SceneGraph, tokenizer=None) -> str:
    """The graph as one English sentence: what a user of a text-to-image model writes.

    Every object is named: first relations between objects not yet named ("a red circle to
    the left of a blue square", the base's caption style), then the objects left, then the
    other relations while the sentence fits the tokenizer's ``model_max_length`` (a longer
    prompt would be cut off at the end, objects and all)."""

    def phrase(s, p, o):
        return f"a {graph.objects[s]} {RELATION_PHRASES[p]} a {graph.objects[o]}"

    relations = [(s, p, o) for s, p, o in graph.relationships if p in RELATION_PHRASES]
    named: set[int] = set()
    parts, rest = [], []
    for s, p, o in relations:
        if s != o and not named & {s, o}:
            parts.append(phrase(s, p, o))
            named |= {s, o}
        else:
            rest.append((s, p, o))
    parts += [f"a {name}" for i, name in enumerate(graph.objects) if i not in named]

    def join(items):
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    for triple in rest:
        if tokenizer is not None:
            ids = tokenizer(join([*parts, phrase(*triple)]), verbose=False).input_ids
            if len(ids) > tokenizer.model_max_length:
                break
        parts.append(phrase(*triple))
    return join(parts)


class _Counter:
    """Counts UNet evaluations per image: batch rows seen by the UNets' forwards (the
    pipeline's and its student's)."""

    def __init__(self, *unets):
        self.rows = 0
        for unet in unets:
            if unet is not None:
                unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.rows += sample.shape[0]


def _text_pipeline(base_dir: str):
    from sg2image.models.base import load_base

    return load_base(base_dir).text_to_image_pipeline()


def _load(system: System, device: str = "cpu"):
    from sg2image.pipeline import SCHEDULERS, load_pipeline

    pipe = (
        load_pipeline(system.model) if system.kind == "pipeline" else _text_pipeline(system.model)
    ).to(device)
    if system.sampler not in ("fast", "finish"):  # these sample with their own LCMScheduler
        pipe.scheduler = SCHEDULERS[system.scheduler].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


MODEL_KINDS = ("pipeline", "text")  # the kinds that sample; the others render


def _renders(system: System, graphs: list[SceneGraph]):
    """Ground-truth renders (N, 3, 64, 64) uint8 for a row without a model, seconds per
    image. "shuffled" pairs graph i with the render of graph i + 1 (mod N)."""
    start = time.perf_counter()
    n = len(graphs)
    order = range(n) if system.kind == "ground_truth" else [(i + 1) % n for i in range(n)]
    images = [render(graphs[j]) for j in order]
    return to_uint8_batch(images), (time.perf_counter() - start) / n


def generate(system: System, graphs: list[SceneGraph], seed: int, device: str = "cpu"):
    """uint8 images (N, 3, 64, 64), seconds per image, UNet evaluations per image."""
    batch_size = system.batch_size
    if system.kind not in MODEL_KINDS:
        return (*_renders(system, graphs), 0.0)
    pipe = _load(system, device)
    counter = _Counter(pipe.unet, getattr(pipe, "student_unet", None))
    out: list[np.ndarray] = []
    start = time.perf_counter()
    autocast = torch.autocast(pipe.device.type, torch.bfloat16, enabled=system.bf16)
    for i in tqdm(range(0, len(graphs), batch_size), desc=system.name, leave=False):
        chunk = graphs[i : i + batch_size]
        gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))]
        kw = dict(num_inference_steps=system.steps, guidance_scale=system.guidance, generator=gens)
        if system.sampler == "fast":
            kw.update(guidance_scale=None, sampler="fast")
        elif system.sampler == "finish":
            kw.update(sampler="finish", num_inference_steps=None)
        with autocast:
            if system.kind == "pipeline":
                if system.layout is not None:
                    kw["layout"] = system.layout
                result = pipe(chunk, output_type="np", **kw).images
            else:
                prompts = [graph_sentence(g, pipe.tokenizer) for g in chunk]
                result = pipe(prompts, output_type="np", height=64, width=64, **kw).images
        out += list((np.asarray(result, dtype=np.float32) * 255).round().astype(np.uint8))
    seconds = (time.perf_counter() - start) / len(graphs)
    return to_uint8_batch(out), seconds, counter.rows / len(graphs)


def evaluate(
    system: System,
    graphs: list[SceneGraph],
    extractor: ClipImageFeatures,
    real_feats: torch.Tensor,
    seed: int = 0,
    diversity_n: int = 200,
    device: str = "cpu",
) -> dict:
    """All numbers of one system, as a JSON-able dict (``_images``: its uint8 images).
    ``real_feats`` (N, D): the extractor's features of the ground-truth renders of ``graphs``."""
    if system.num_graphs is not None:
        graphs, real_feats = graphs[: system.num_graphs], real_feats[: system.num_graphs]
    images, seconds, evals = generate(system, graphs, seed, device)
    report = score_images(list(images.permute(0, 2, 3, 1).numpy()), graphs).to_json()
    fake_feats = features(extractor, images)
    dist = _fid_kid(real_feats, fake_feats)
    k = min(diversity_n, len(graphs))
    diversity = None
    if system.kind in MODEL_KINDS and k:  # renders are the same every time
        again, _, _ = generate(system, graphs[:k], seed + 10_000_000, device)
        diversity = feature_diversity(fake_feats[:k], features(extractor, again))
    return {
        "system": asdict(system),
        "num_graphs": len(graphs),
        "object_recall": report["object_recall"],
        "relation_accuracy": report["relation_accuracy"],
        "relation_accuracy_matched": report["relation_accuracy_matched"],
        "placement": report["placement"],
        "placement_judged": report["placement_judged"],
        "occlusion_accuracy": report["occlusion_accuracy"],  # None: no depth triple
        "occlusion_judged": report["occlusion_judged"],
        "per_predicate": report["per_predicate"],
        **dist,
        "feature_diversity": diversity,
        "diversity_graphs": k if diversity is not None else 0,
        "unet_evals_per_image": evals,
        "seconds_per_image": seconds,
        "torch_threads": torch.get_num_threads(),  # s/img depends on it (and on machine load)
        "device": _device_name(device),
        "resolution": int(images.shape[-1]),
        "feature_extractor": "Shapes-CLIP image_embeds",
        "_images": images,
    }


def _device_name(device: str) -> str:
    """What sampled: "CPU", or the GPU's name (s/img compares only on one machine)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def _fid_kid(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> dict[str, float]:
    """FID and KID (subsets of 100, seeded) between feature rows."""
    out = fid_kid_from_features(real_feats, fake_feats, kid_subset=100)
    return {key: out[key] for key in ("fid", "kid", "kid_std")}


def _done(path: Path, system: System, n: int, seed: int) -> dict | None:
    """The saved row of an identical system run (same settings, graphs and seed), if any."""
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    # rows saved before worlds and batch sizes were settings
    saved = {"world": DEFAULT_WORLD, "batch_size": 16, **row.get("system", {})}
    same = saved == asdict(system) and row.get("seed") == seed
    return row if same and row.get("num_graphs") == min(system.num_graphs or n, n) else None


def run_benchmark(
    systems: list[System],
    clip_dir: str,
    out_dir: str | Path,
    n: int = 1000,
    seed: int = 0,
    diversity_n: int = 200,
    reuse: bool = False,
    world: str = DEFAULT_WORLD,
    device: str = "cpu",
) -> list[dict]:
    """Run every system on the first ``n`` test graphs of its world; write one JSON per
    system. ``reuse``: a system whose JSON already holds the same settings is read, not
    re-run (so an interrupted benchmark resumes, and systems can be run by separate
    processes). ``world``: the run's world, whose val renders make the FID floor."""
    from sg2image.models.base import load_clip_vision

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    worlds = [world, *sorted({s.world for s in systems} - {world})]
    split = {w: make_split("test", n=n, world=w) for w in worlds}
    extractor = ClipImageFeatures(load_clip_vision(clip_dir))
    real = {w: features(extractor, to_uint8_batch([render(g) for g in split[w]])) for w in worlds}
    # The floor: real renders of other graphs (val) against the test renders. A system
    # cannot be expected below it; ground truth of the *same* graphs gives 0 by construction.
    other = to_uint8_batch([render(g) for g in make_split("val", n=min(n, 1000), world=world)])
    which = "" if world == DEFAULT_WORLD else f"{world} world's "
    floor = {
        "system": f"real-vs-real ({which}val renders vs test renders)",
        "world": world,
        **_fid_kid(real[world], features(extractor, other)),
    }
    (out_dir / "floor.json").write_text(json.dumps(floor, indent=1))
    rows = []
    for system in tqdm(systems, desc="systems"):
        path = out_dir / f"{system.name}.json"
        row = _done(path, system, n, seed) if reuse else None
        if row is None:
            row = evaluate(system, split[system.world], extractor, real[system.world], seed,
                           diversity_n, device)  # fmt: skip
            images = row.pop("_images")
            path.write_text(json.dumps({**row, "seed": seed}, indent=1))
            row["_images"] = images
        rows.append(row)
    return rows


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


COLUMNS = (
    "system", "sampler", "graphs", "obj. recall", "rel. acc.", "rel. acc. (both found)",
    "placement (judged)", "FID", "KID", "diversity",
    "UNet evals/img", "s/img", "note",
)  # fmt: skip
# Shown only when a row needs them: the test split when a row is not the plain world's, the
# occlusion accuracy (and its number of depth triples) when a row has depth triples.
SPLIT_COLUMN, OCCLUSION_COLUMN = "test split", "occl. acc. (judged)"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _placement(r: dict) -> str:
    """Placement and its number of judged triples ("–" in rows saved before it existed)."""
    if r.get("placement_judged") is None:
        return "–"
    return f"{_fmt(r['placement'])} ({r['placement_judged']})"


def _occlusion(r: dict) -> str:
    if not r.get("occlusion_judged"):
        return "–"
    return f"{_fmt(r['occlusion_accuracy'])} ({r['occlusion_judged']})"


def _columns(rows: list[dict]) -> list[str]:
    cols = list(COLUMNS)
    if any(r["system"].get("world", DEFAULT_WORLD) != DEFAULT_WORLD for r in rows):
        cols.insert(cols.index("graphs") + 1, SPLIT_COLUMN)
    if any(r.get("occlusion_judged") for r in rows):
        cols.insert(cols.index("placement (judged)") + 1, OCCLUSION_COLUMN)
    return cols


def _sampler(s: dict) -> str:
    if s["kind"] not in MODEL_KINDS:
        return "–"
    if s.get("sampler") == "fast":
        return f"LCM student {s['steps']}, cfg {s['guidance']} folded in"
    if s.get("sampler") == "finish":
        return f"draft + guided finish, cfg {s['guidance']}"
    return f"{s['scheduler']} {s['steps']}, cfg {s['guidance']}" + (", bf16" if s["bf16"] else "")


def markdown_table(rows: list[dict], floor: dict | None = None) -> str:
    cols = _columns(rows)
    lines = [_row(cols), _row(["---"] * len(cols))]
    for r in rows:
        s = r["system"]
        cells = dict(zip(COLUMNS, [
            s["name"], _sampler(s), r["num_graphs"], _fmt(r["object_recall"]),
            _fmt(r["relation_accuracy"]), _fmt(r.get("relation_accuracy_matched")),
            _placement(r), _fmt(r["fid"], 2), _fmt(r["kid"], 4),
            _fmt(r["feature_diversity"]), f"{r['unet_evals_per_image']:.0f}",
            _fmt(r["seconds_per_image"], 4), s["note"],
        ], strict=True))  # fmt: skip
        cells[SPLIT_COLUMN] = s.get("world", DEFAULT_WORLD)
        cells[OCCLUSION_COLUMN] = _occlusion(r)
        lines.append(_row([cells[c] for c in cols]))
    if floor:
        cells = {c: "–" for c in cols}
        cells.update({"system": "real-vs-real floor", "graphs": floor.get("num_graphs", "–"),
                      "FID": _fmt(floor["fid"], 2), "KID": _fmt(floor["kid"], 4),
                      SPLIT_COLUMN: floor.get("world", DEFAULT_WORLD),
                      "note": "val renders vs test renders"})  # fmt: skip
        lines.append(_row([cells[c] for c in cols]))
    return "\n".join(lines) + "\n"


def per_predicate_table(rows: list[dict]) -> str:
    """Relation accuracy per predicate (and its number of triples), one row per system; the
    depth world's two predicates as two more columns when a row has them."""
    preds = list(PREDICATE_PHRASES)
    if any(p in r["per_predicate"] for p in DEPTH_PHRASES for r in rows):
        preds += list(DEPTH_PHRASES)
    lines = [_row(["system", *preds]), _row(["---"] * (len(preds) + 1))]
    for r in rows:
        stats = [r["per_predicate"].get(p) for p in preds]
        cells = [f"{_fmt(s['accuracy'])} ({s['total']})" if s else "–" for s in stats]
        lines.append(_row([r["system"]["name"], *cells]))
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_evals(rows: list[dict], path: str | Path) -> None:
    """Relation accuracy against UNet evaluations per image (log x), one point per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (max(r["unet_evals_per_image"], 1), r["relation_accuracy"], r["system"]["name"])
        for r in rows
        if r["system"]["kind"] in MODEL_KINDS and r["relation_accuracy"] is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    student = sorted(
        (max(r["unet_evals_per_image"], 1), r["relation_accuracy"])
        for r in rows
        if r["system"].get("sampler") == "fast" and r["relation_accuracy"] is not None
    )
    if len(student) > 1:  # the distilled student's curve over its step counts
        xs, ys = zip(*student, strict=True)
        ax.plot(xs, ys, "-", color="tab:red", lw=1, label="distilled student (LCM), by steps")
        ax.legend(loc="center left", fontsize=7)
    points_y = [y for _, y, _ in points] or [0.0]
    gap = max(max(points_y) - min(points_y), 1e-3) * 0.045  # one label's height, data units
    top = max(points_y)
    for x in sorted({x for x, _, _ in points}):
        # Many rows share an x (40 evaluations): stack their labels upwards so that none
        # overlaps, each joined to its point by a thin line.
        label_y = float("-inf")
        for _, y, name in sorted(p for p in points if p[0] == x):
            label_y = max(y, label_y + gap)
            ax.scatter(x, y, s=30)
            line = None
            if label_y - y > gap / 4:  # moved up: a line from the label's left edge
                line = dict(arrowstyle="-", lw=0.5, color="0.5", relpos=(0, 0.5))
            ax.annotate(name, (x, y), xytext=(x * 1.12, label_y), textcoords="data",
                        fontsize=7, va="center", arrowprops=line)  # fmt: skip
            top = max(top, label_y)
    ax.set_ylim(top=top + gap)
    ax.set_xscale("log")
    ax.set_xlabel("UNet evaluations per image")
    ax.set_ylabel("relation accuracy (Shapes oracle)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def example_grid(row: dict, graphs: list[SceneGraph], path: str | Path, k: int = 8) -> None:
    """The first k images of a system, each beside its graph (re-sampled with the benchmark's
    seeds when the row was read from its JSON)."""
    from sg2image.drawing import image_grid

    images = row.get("_images")
    if images is None:
        images, _, _ = generate(System(**row["system"]), graphs[:k], row.get("seed", 0))
    k = min(k, len(images), len(graphs))  # a run on fewer than k graphs has fewer images
    image_grid(list(images[:k].permute(0, 2, 3, 1).numpy()), graphs[:k], cols=2, size=192).save(
        path
    )


def _ablation_note(pipeline_dir: str) -> str:
    """What an ablation changed and how long it trained, read from its run's config.json."""
    cfg_file = Path(pipeline_dir).parent / "config.json"
    if not cfg_file.is_file():
        return "ablation"
    cfg = json.loads(cfg_file.read_text())
    steps = cfg.get("finetune", {}).get("max_steps")
    stages = "+".join(cfg.get("stages", []))
    kind = "layout model" if cfg.get("layout_encoder") is not None else "layout-free"
    return f"ablation; {kind}; stages {stages}, fine-tuned {steps} steps"


def _model_index(pipeline_dir: str | Path) -> dict:
    index = Path(pipeline_dir) / "model_index.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def is_layout_model(pipeline_dir: str | Path) -> bool:
    """Whether a saved pipeline folder is a layout model (without loading it)."""
    return (_model_index(pipeline_dir).get("layout_encoder") or [None])[0] is not None


def run_world(run: str | Path) -> str:
    """The Shapes world a ``train --preset`` run folder was trained on (its config.json's
    ``world``; "plain" for runs saved before worlds)."""
    for cfg in (Path(run) / "method" / "config.json", Path(run) / "shapes-base" / "config.json"):
        if cfg.is_file():
            return json.loads(cfg.read_text()).get("world", DEFAULT_WORLD)
    return DEFAULT_WORLD


def _check_knows_world(pipeline_dir: str, world: str) -> None:
    """A depth split needs a model whose vocabulary has the depth predicates."""
    names = _model_index(pipeline_dir).get("predicate_names")
    if world == "depth" and names is not None and not set(DEPTH_PREDICATES) <= set(names):
        raise ValueError(
            f"{pipeline_dir}: a plain-world model (no 'in front of' / 'behind'); it cannot be "
            "scored on the depth world's test split (use --world plain)"
        )


STUDENT_STEPS = (1, 2, 4, 8)  # a finisher student (distill.max_timestep) takes those it can


def student_steps(pipeline_dir: str | Path) -> list[int]:
    """The student's step counts the benchmark samples: STUDENT_STEPS, or for a finisher
    (``fast_max_timestep``) 1 up to the most it takes, read from the folder's JSON."""
    from sg2image.pipeline import student_timesteps

    index = json.loads((Path(pipeline_dir) / "model_index.json").read_text())
    top = index.get("fast_max_timestep")
    if top is None:
        return list(STUDENT_STEPS)
    lcm = Path(pipeline_dir) / "student_scheduler" / "scheduler_config.json"
    lcm = json.loads(lcm.read_text())
    steps = []
    for k in range(1, max(STUDENT_STEPS) + 1):
        try:
            student_timesteps(k, top, lcm["num_train_timesteps"], lcm["original_inference_steps"])
        except ValueError:
            break
        steps.append(k)
    return steps


def has_student(pipeline_dir: str | Path) -> bool:
    """Whether a saved pipeline folder holds a distilled student (without loading it)."""
    index = Path(pipeline_dir) / "model_index.json"
    if not index.is_file():
        return False
    return (json.loads(index.read_text()).get("student_unet") or [None])[0] is not None


def systems_for(
    run: Path,
    ablations: dict[str, str],
    sweep: bool,
    sweep_n: int | None = None,
    model: str | Path | None = None,
    world: str = DEFAULT_WORLD,
) -> list[System]:
    """The benchmark's rows for a ``train --preset shapes`` run folder; ablations on all the
    run's graphs, as the model they are compared with, and the sampler sweep on the first
    ``sweep_n`` (None: all). ``model``: the pipeline to measure, if not the run's own (e.g.
    the shipped copy of it)."""
    pipe = str(model or run / "method" / "pipeline")
    base = str(run / "shapes-base" / "base")
    # ``world``: whose test split the rows are scored on. For the depth world the model on
    # the plain split is one more row, and a layout ablation also draws the true boxes
    # (which carry no depth order: the order then comes from the graph alone).
    if world not in WORLDS:
        raise ValueError(f"world {world!r}: expected one of {', '.join(WORLDS)}")
    for d in [pipe, *ablations.values()]:
        _check_knows_world(d, world)
    # With a student or a finish sampler, the default is one of those (rows student-k,
    # finish); this row stays the full sampler, dpm++ 20 steps with guidance 2.
    index_file = Path(pipe) / "model_index.json"  # absent: a run still training
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    finish = index.get("finish_timestep") is not None and is_layout_model(pipe)
    full_note = "the full sampler" if has_student(pipe) or finish else "default settings"
    systems = [
        System("ground-truth", "ground_truth"),
        System("shuffled-control", "shuffled", note="graph i against the render of graph i+1"),
        System("sg2image", "pipeline", pipe, note=full_note),
        System("text-baseline", "text", base, note="graph flattened into one sentence"),
    ]
    if is_layout_model(pipe):  # the ceiling: the same model drawing the true boxes
        note = "the test graphs' true boxes (layout given)"
        systems.append(System("sg2image-true-layout", "pipeline", pipe, note=note, layout="given"))
    systems += [
        System(name, "pipeline", d, note=_ablation_note(d)) for name, d in ablations.items()
    ]
    fast_default = has_student(pipe) and index.get("fast_default") is not False
    if finish:  # a draft, a guided step: 3 or 4 UNet evaluations (the model's finish_draft)
        note = "finish sampler" if fast_default else "the default sampler"
        systems.append(System("finish", "pipeline", pipe, "lcm", 2, 2.0, sampler="finish",
                              note=note))  # fmt: skip
    if has_student(pipe):  # the distilled student at 1, 2, 4 and 8 steps (its default marked)
        default = index.get("fast_steps") if fast_default else None
        systems += [
            System(f"student-{k}", "pipeline", pipe, "lcm", k, 2.0, sampler="fast",
                   note="the default sampler" if k == default else "distilled student")
            for k in student_steps(pipe)
        ]  # fmt: skip
    if sweep:
        k = sweep_n
        systems += [
            System("lms-100", "pipeline", pipe, "lms", 100, 2.0, "the paper's sampler", k),
            System("dpm-10", "pipeline", pipe, "dpm++", 10, 2.0, num_graphs=k),
            System("dpm-20", "pipeline", pipe, "dpm++", 20, 2.0, "default, on the subset", k),
            System("ddim-50", "pipeline", pipe, "ddim", 50, 2.0, num_graphs=k),
            System("lms-100-no-cfg", "pipeline", pipe, "lms", 100, 1.0, num_graphs=k),
            System("dpm-20-no-cfg", "pipeline", pipe, "dpm++", 20, 1.0, num_graphs=k),
            System("dpm-10-no-cfg", "pipeline", pipe, "dpm++", 10, 1.0, num_graphs=k),
            System("dpm-20-bf16", "pipeline", pipe, "dpm++", 20, 2.0, num_graphs=k, bf16=True),
        ]
        systems += [
            System(f"dpm-20-cfg{g}", "pipeline", pipe, "dpm++", 20, g, num_graphs=k)
            for g in (1.5, 3.0, 4.0, 6.0)
        ]
    if world != DEFAULT_WORLD:
        systems += [
            System(f"{name}-true-layout", "pipeline", d, layout="given",
                   note=_ablation_note(d) + "; true boxes (layout given)")
            for name, d in ablations.items() if is_layout_model(d)
        ]  # fmt: skip
    systems = [dataclasses.replace(s, world=world) for s in systems]
    if world != DEFAULT_WORLD:  # the six-predicate numbers, comparable with a plain run's
        note = "the plain world's test split (six predicates)"
        systems.insert(3, System("sg2image-plain-test", "pipeline", pipe, note=note))
    return systems


SECTION_START, SECTION_END = "<!-- shapes-bench:start -->", "<!-- shapes-bench:end -->"


def _section_marks(world: str) -> tuple[str, str]:
    """Each world's benchmark has its own section, so that one does not replace the other."""
    if world == DEFAULT_WORLD:
        return SECTION_START, SECTION_END
    return f"<!-- shapes-bench-{world}:start -->", f"<!-- shapes-bench-{world}:end -->"


def write_docs(rows, floor, out_md: Path, command: str, n: int, world: str = DEFAULT_WORLD) -> None:
    """The Shapes section of docs/benchmarks.md (other sections of the file are kept), the
    plot and the example grid next to it; a depth-world run writes its own section."""
    docs = out_md.parent
    docs.mkdir(parents=True, exist_ok=True)
    start, end = _section_marks(world)
    suffix = "" if world == DEFAULT_WORLD else f"_{world}"
    plot, grid = f"benchmark_accuracy_vs_evals{suffix}.png", f"benchmark_examples{suffix}.png"
    own = [r for r in rows if r["system"].get("world", DEFAULT_WORLD) == world]
    plot_accuracy_vs_evals(own, docs / plot)
    ours = next(r for r in rows if r["system"]["name"] == "sg2image")
    example_grid(ours, make_split("test", n=8, world=world), docs / grid)
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores (threads per row: `torch_threads` in its JSON)"
    title, graphs = "Shapes adherence benchmark", "Shapes test graphs"
    if world != DEFAULT_WORLD:
        title = f"Shapes {world} world benchmark"
        graphs = f"test graphs of the Shapes {world} world"
    depth = (
        " Occlusion accuracy: the oracle's depth rule over the depth triples (their number in "
        "brackets); the row on the plain world's test split gives the same model's "
        "six-predicate numbers."
        if world == "depth"
        else ""
    )
    section = (
        f"{start}\n## {title}\n\n"
        f"The first {n} fixed {graphs} (rows with fewer graphs say so). "
        "Recall and relation accuracy from the Shapes oracle; placement: the same rules on "
        "each colour's largest blob, shape ignored, over the triples whose two colours occur "
        "once in their graph (their number in brackets); shuffled-control: each graph scored "
        "against the ground-truth render of the next graph. FID/KID on Shapes-CLIP image "
        "features against ground-truth renders of the same graphs; diversity: mean feature "
        f"distance between two samples of the same graph.{depth}\n\n"
        f"Machine: {machine}, torch {torch.__version__}; sampling on "
        f"{', '.join(sorted({r.get('device') or 'CPU' for r in own}))}.\n\n"
        f"Command: `{command}`\n\n"
        + markdown_table(rows, floor)
        + "\nRelation accuracy per predicate:\n\n"
        + per_predicate_table(rows)
        + f"\n![relation accuracy vs UNet evaluations]({plot})\n\n"
        "Examples (sg2image: the full sampler, DPM-Solver++ 20 steps, guidance 2), each image "
        "beside its graph:\n\n"
        f"![examples]({grid})\n{end}\n"
    )
    old = out_md.read_text() if out_md.is_file() else "# Benchmarks\n\n"
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = old.rstrip("\n") + "\n\n" + section
    out_md.write_text(text)


def run_and_report(
    run: Path,
    ablations: dict[str, str],
    sweep: bool,
    n: int,
    diversity_n: int,
    results: Path,
    docs: Path,
    command: str,
    sweep_n: int | None = None,
    reuse: bool = False,
    only: list[str] | None = None,
    model: str | Path | None = None,
    world: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> str:
    """The whole benchmark of a `--preset shapes` run folder; returns the markdown table.
    ``only``: run just these systems and write no docs (for splitting over processes);
    ``world``: whose test split (None: the run's own, :func:`run_world`)."""
    world = world or run_world(run)
    systems = systems_for(Path(run), ablations, sweep, sweep_n, model, world)
    systems = [dataclasses.replace(s, batch_size=batch_size) for s in systems]
    if only:
        unknown = set(only) - {s.name for s in systems}
        if unknown:
            raise ValueError(f"--only {sorted(unknown)[0]!r}: no such system")
        systems = [s for s in systems if s.name in only]
    clip = str(Path(run) / "shapes-base" / "clip")
    rows = run_benchmark(systems, clip, results, n=n, diversity_n=diversity_n, reuse=reuse,
                         world=world, device=device)  # fmt: skip
    floor = json.loads((Path(results) / "floor.json").read_text())
    floor["num_graphs"] = n
    if not only:
        write_docs(rows, floor, Path(docs), command, n, world)
    return markdown_table(rows, floor)

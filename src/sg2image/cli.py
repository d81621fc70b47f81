"""The `sg2image` command line. It parses arguments and calls the library, nothing more."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
from pathlib import Path
from typing import Annotated

import typer

from sg2image.cli_common import (
    GraphsArg,
    OutOpt,
    UserError,
    _vocab,
    _write_json,
    friendly,
    make_out_dir,
)
from sg2image.cli_data import data_app, shapes_app
from sg2image.graph import GraphValidationError, Vocab, load_graphs

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="sg2image: images from scene graphs."
)
app.add_typer(shapes_app, name="shapes")
app.add_typer(data_app, name="data")


@app.command()
@friendly
def validate(
    graphs: GraphsArg,
    model: Annotated[
        str | None,
        typer.Option(
            help="Check against this pipeline's vocabulary and object limit "
            "(default: the model `generate` uses, the one shipped in the package)."
        ),
    ] = None,
    vocab: Annotated[
        Path | None, typer.Option(help="vocab.json to check names against, instead of a model.")
    ] = None,
    max_objects: Annotated[
        int | None, typer.Option(help="Largest number of objects (default: the model's).")
    ] = None,
    max_relationships: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Check a scene graph file against the model `generate` would use: prints ok, or every
    problem with its location (exit 1)."""
    if model is not None and vocab is not None:
        raise UserError("give --model or --vocab, not both")
    if vocab is not None:
        names, against = _vocab(vocab), f"the vocabulary {vocab}"
    elif model is None and not default_model_path().is_dir():
        names, against = None, "no model (none is shipped in this install; pass --model)"
    else:
        # The same checks as generate's (SceneGraphPipeline.check_inputs), from the model's
        # model_index.json alone: loading the model would cost seconds.
        source = _model_source(model)
        names, limit = read_model_vocab(source)
        max_objects = limit if max_objects is None else max_objects
        against = f"the model {'shipped in the package' if model is None else source}"
    try:
        found = load_graphs(
            graphs,
            vocab=names,
            max_objects=max_objects,
            max_relationships=max_relationships,
        )
    except GraphValidationError as e:
        for p in e.problems:
            typer.echo(p)
        typer.secho(
            f"{len(e.problems)} problem(s) in {graphs}, checked against {against}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1) from None
    limit_note = "" if max_objects is None else f", at most {max_objects} objects"
    typer.echo(f"ok: {len(found)} scene graph(s), checked against {against}{limit_note}")


@app.command()
@friendly
def draw(
    graphs: GraphsArg,
    out: OutOpt = Path("out/graphs"),
    size: Annotated[int, typer.Option(help="Picture size in pixels.")] = 256,
) -> None:
    """Draw each scene graph as a PNG (objects as nodes, predicates as labelled edges)."""
    from sg2image.drawing import draw_graph

    found = load_graphs(graphs)
    make_out_dir(out)
    for i, g in enumerate(found):
        draw_graph(g, size=size).save(out / f"{i:05d}_graph.png")
    typer.echo(f"drew {len(found)} graph(s) into {out}")


DEFAULT_MODEL_HELP = (
    "Pipeline folder, hub id, or a shipped model's name: 'shapes' (the default) or "
    "'shapes-depth' (the depth world's)."
)


def default_model_path() -> Path:
    """The model shipped inside the package (see sg2image/assets)."""
    from sg2image import SHAPES_MODEL

    return SHAPES_MODEL


def _model_source(model: str | None) -> str | Path:
    """--model as a folder or hub id; a shipped model's name (no such folder here) means
    that model."""
    from sg2image import SHIPPED_MODELS

    if model is None and not default_model_path().is_dir():
        raise UserError("no model is shipped in this install yet: pass --model DIR_OR_HUB_ID")
    if model in SHIPPED_MODELS and not Path(model).exists():
        if not SHIPPED_MODELS[model].is_dir():
            raise UserError(f"--model {model}: not shipped in this install; pass a folder")
        return SHIPPED_MODELS[model]
    return model or default_model_path()


def _hub_file(repo_id: str, filename: str) -> Path:
    """One file of a hub repository: from the cache when there (no network round trip and
    its retries), else downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # not cached; the download below says what else is wrong
        pass
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as e:  # offline, no such repository or file, a malformed id
        raise UserError(
            f"{repo_id}: not a local folder, and its {filename} could not be read from the "
            f"hub ({type(e).__name__}). Pass a local pipeline folder."
        ) from None


def read_model_vocab(source: str | Path) -> tuple[Vocab, int | None]:
    """A saved pipeline's vocabulary and object limit, read from its model_index.json
    without loading the model (or importing torch): what `validate` checks against."""
    folder = Path(source)
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise UserError(f"{source}: no model_index.json; not a saved pipeline folder")
    elif str(source).startswith((".", "/", "~")) or str(source).count("/") != 1:
        raise UserError(f"{source}: no such folder")
    else:
        index = _hub_file(str(source), "model_index.json")
    try:
        config = json.loads(index.read_text())
        names = Vocab(config["object_names"], config["predicate_names"])
    except json.JSONDecodeError as e:
        raise UserError(f"{index}: not JSON ({e.msg} at line {e.lineno})") from None
    except (KeyError, TypeError):
        raise UserError(
            f"{index}: no object_names / predicate_names; not a scene-graph pipeline"
        ) from None
    except ValueError as e:  # names Vocab refuses (empty, duplicated, no __image__ first)
        raise UserError(f"{index}: {e}") from None
    limit = config.get("max_objects")
    if limit is not None and not isinstance(limit, int):
        raise UserError(f"{index}: max_objects must be an integer or null, got {limit!r}")
    return names, limit


SAMPLER_HELP = (
    "'finish': a layout model's draft, then one guided step at a low timestep (the shipped "
    "model's default: the distilled student drafts in 2 steps, 4 UNet evaluations; a model "
    "without a student drafts with one unguided step, 3); 'fast': the model's distilled few-step "
    "student; 'full': the fine-tuned model with classifier-free guidance (20 steps, guidance 2 "
    "unless --steps/--guidance say otherwise). With --steps, --guidance or --scheduler and no "
    "--sampler: 'full'."
)


@app.command()
@friendly
def generate(
    graphs: GraphsArg,
    out: OutOpt = Path("out/generated"),
    model: Annotated[str | None, typer.Option(help=DEFAULT_MODEL_HELP)] = None,
    sampler: Annotated[str | None, typer.Option(help=SAMPLER_HELP)] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Sampler steps (full: 20; fast: the student's; finish: its own, 2 or 3).",
        ),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(min=0.0, help="Classifier-free guidance scale (full sampler; default 2)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Image i uses seed + i.")] = 0,
    scheduler: Annotated[
        str | None,
        typer.Option(help="The full sampler's: dpm++ (default), unipc, ddim, lms, euler, ddpm."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Graphs per forward pass.")] = 16,
    with_graph: Annotated[
        bool, typer.Option(help="Also write each image beside its graph.")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    layout: Annotated[
        str | None,
        typer.Option(
            help="Layout models: 'predicted' (default) samples the boxes from the graph, "
            "'given' uses each graph's boxes."
        ),
    ] = None,
    height: Annotated[
        int | None, typer.Option(min=1, help="Pixels (default: the model's training size).")
    ] = None,
    width: Annotated[
        int | None, typer.Option(min=1, help="Pixels (default: the model's training size).")
    ] = None,
) -> None:
    """Generate one image per scene graph into OUT/000000_0.png, OUT/000001_0.png, ...
    (graph index, sample 0) and the graphs into OUT/graphs.json: `sample`'s names, so
    `sg2image eval --generated OUT` and `sg2image shapes check GRAPHS OUT` read the folder.

    The default sampler of the shipped model, and of every layout model, is "finish": a
    draft, then one guided step (guidance 2) of the fine-tuned UNet at timestep 39. The
    shipped model's distilled student drafts (2 steps, timesteps 999 and 59):
    4 UNet evaluations an image, the full sampler's recall and relations at a lower FID
    (docs/benchmarks.md); a layout model without a student drafts with one unguided step of
    the fine-tuned UNet (3 evaluations). The full sampler, 20 DPM-Solver++ steps with
    guidance 2 (40 evaluations an image), is --steps 20 --guidance 2, or --sampler full; any
    --steps, --guidance or --scheduler without --sampler gives it. --sampler fast samples a model's
    distilled student (one evaluation a step, guidance folded in; the shipped one: 2 steps),
    the default of a model whose student is made its default.

    A layout model also writes OUT/layouts.json: per image, its graph, seed and boxes."""
    import torch
    from tqdm import tqdm

    from sg2image.graph import save_graphs
    from sg2image.pipeline import load_pipeline
    from sg2image.sampling import sample_name

    pipe = load_pipeline(_model_source(model), device=device)
    if scheduler is not None:
        if sampler in ("fast", "finish"):
            raise UserError(f"--scheduler: the {sampler} sampler has its own (LCM); drop one")
        pipe.set_scheduler(scheduler)
        sampler = "full"
    if sampler == "fast" and guidance is not None:
        raise UserError(
            "--guidance: the fast sampler has its guidance built in; use --sampler full to set it"
        )
    sampler, steps, guidance = pipe.resolve_sampler(sampler, steps, guidance)
    typer.echo(
        f"sampler: {sampler} ({steps} steps, "
        + ("guidance folded in)" if sampler == "fast" else f"guidance {guidance:g})")
        + (f": {pipe.finish_text()}" if sampler == "finish" else ""),
        err=True,
    )  # fmt: skip
    found = pipe.check_inputs(load_graphs(graphs))
    # all graphs at once, before any image: the error names the graph in the file
    layout = pipe.check_layout(found, layout)
    height, width = pipe.check_size(height, width)
    make_out_dir(out)
    # The graphs as checked (what eval and the oracle score the images against), first:
    # an interrupted run leaves a folder that is still read right.
    save_graphs(found, out / "graphs.json")
    layouts = []
    if with_graph:
        from sg2image.drawing import side_by_side

        (out / "with_graph").mkdir(exist_ok=True)
    for start in tqdm(range(0, len(found), batch_size), desc="generating", unit="batch"):
        chunk = found[start : start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + k) for k in range(len(chunk))]
        result = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=None if sampler == "fast" else guidance,
            sampler=sampler,
            generator=gens,
            layout=layout,
            height=height,
            width=width,
        )
        boxes = result.boxes or [None] * len(chunk)
        for k, (image, g, b) in enumerate(zip(result.images, chunk, boxes, strict=True)):
            i, name = start + k, sample_name(start + k, 0)  # seed + i, as `sample`'s k = 0
            image.save(out / name)
            if b is not None:
                record = {"image": name, "graph": i, "seed": seed + i}
                layouts.append({**record, "layout": layout, "boxes": b})
            if with_graph:
                side_by_side(image, g, caption=f"seed {seed + i}", boxes=b).save(
                    out / "with_graph" / name
                )
    typer.echo(f"wrote {len(found)} image(s) and graphs.json to {out}")
    if layouts:  # one image a line: easy to read, to diff, and to grep
        rows = ",\n".join(json.dumps(r) for r in layouts)
        (out / "layouts.json").write_text(f"[\n{rows}\n]\n")
        typer.echo(f"and the {layout} layout of each to {out / 'layouts.json'}")


@app.command()
@friendly
def serve(
    model: Annotated[str | None, typer.Option(help=DEFAULT_MODEL_HELP)] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    max_batch: Annotated[int, typer.Option(min=1, help="Images per forward pass; 1: off.")] = 8,
    max_queue: Annotated[int, typer.Option(min=1, help="Waiting requests before 503.")] = 32,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per request.")] = 120.0,
    max_images: Annotated[int, typer.Option(min=1, help="Images per request.")] = 8,
    max_steps: Annotated[int, typer.Option(min=1, help="Sampler steps per request.")] = 100,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name to answer besides localhost, 127.0.0.1, [::1] and the bound "
            "address (repeat for more; '*': any, which lets web pages reach the server by "
            "DNS rebinding)."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (/api/..., schema at /openapi.json) and the editor page (/)."""
    try:
        import uvicorn

        from sg2image.serve import ServeSettings, create_app
    except ImportError as e:
        hint = f"serving needs the 'serve' extra: pip install 'sg2image[serve]' ({e})"
        raise UserError(hint) from None
    from sg2image.pipeline import load_pipeline

    settings = ServeSettings(
        max_batch=max_batch,
        max_queue=max_queue,
        timeout_s=timeout,
        max_images=max_images,
        max_steps=max_steps,
        default_steps=min(20, max_steps),
        # the bound address is a name clients use; a wildcard one (0.0.0.0, ::) is not
        allow_hosts=(*([] if host in ("0.0.0.0", "::", "") else [host]), *(allow_host or [])),
    )
    if host in ("0.0.0.0", "::") and not allow_host:
        typer.echo(
            f"note: bound to {host}, but only requests naming localhost are answered; "
            "add the names clients use with --allow-host NAME"
        )
    source = _model_source(model)
    pipe = load_pipeline(source, device=device)
    name = Path(str(source)).name  # shown by /api/health; the path itself stays private
    typer.echo(f"serving {name} on http://{host}:{port}/ (API schema: /openapi.json)")
    uvicorn.run(create_app(pipe, settings, model_name=name), host=host, port=port)


CONFIGS = Path(__file__).parent / "configs"


def resolve_config(config: Path | None) -> Path | None:
    """A config file, or the name of a shipped one (sd14-paper, coco256-sd14, vg256-sd14)."""
    if config is None or config.exists():
        return config
    shipped = CONFIGS / f"{config.name}.toml"
    if shipped.is_file() and config.name == str(config):
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.toml")))
    raise UserError(f"{config}: no such config file, and not a shipped config ({names})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Argument(
            help="TOML/JSON config or a shipped name (sd14-paper, coco256-sd14, vg256-sd14)."
        ),
    ] = None,
    stages: Annotated[str | None, typer.Option(help="Comma list: layout, gca, finetune.")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint folder.")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="A whole recipe: 'shapes' trains the embedded model (layout model); "
            "'shapes-paper' the paper's layout-free model on the same base; 'shapes-gpu' the "
            "chain of 'shapes' sized for one GPU (about 26 minutes of training on one H200); "
            "'shapes-depth', 'shapes-depth-paper', 'shapes-gpu-depth' the same on the depth "
            "world (in front of / behind), with a depth-ordered layout map and object tokens; "
            "'shapes-gpu-depth-f2' that on a factor-2 VAE (32 x 32 latents)."
        ),
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(
            help="With --preset: a few steps of every part at the preset's batch sizes, then "
            "the full run's time projected from them (OUT/projection.json)."
        ),
    ] = False,
    budget_scale: Annotated[
        float, typer.Option(min=0.001, help="With --preset: every part's steps times this.")
    ] = 1.0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Preset run folder.")] = None,
    ship: Annotated[
        bool, typer.Option(help="Install the preset's result as the default model.")
    ] = False,
) -> None:
    """Train the graph encoder (GCA) and fine-tune the UNet on graphs.

    Extra arguments are overrides, dotted for nested fields: finetune.lr=1e-5 seed=3
    """
    overrides = list(ctx.args)
    if config is not None and "=" in str(config) and not config.exists():  # `--preset shapes a=1`:
        overrides.insert(0, str(config))  # the first override lands in CONFIG's place
        config = None
    words = ["sg2image", "train"]  # the command that continues this run, said when it stops
    if preset is not None:
        out = out or Path("runs") / (preset + ("-smoke" if smoke else ""))
        words += ["--preset", preset, "-o", str(out)]
        words += (["--smoke"] if smoke else []) + (["--budget-scale", f"{budget_scale:g}"]
                                                    if budget_scale != 1 else [])  # fmt: skip
    else:
        words += ([str(config)] if config else []) + (["--stages", stages] if stages else [])
    with stop_says_how_to_resume(shlex.join(words + overrides)):
        _train(config, stages, resume, preset, smoke, budget_scale, out, ship, overrides)


@contextlib.contextmanager
def stop_says_how_to_resume(command: str):
    """Ctrl-C or SIGTERM (a job scheduler's stop) ends training with where it stopped and
    the command that continues it, exit status 130, instead of a silent exit."""
    from sg2image.training.loop import Interrupted

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as e:
        where = str(e) if isinstance(e, Interrupted) else "stopped (finished parts are kept)"
        typer.echo(f"{where}\nto continue, run the same command again: {command}", err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(config, stages, resume, preset, smoke, budget_scale, out, ship, overrides) -> None:
    from sg2image.training import load_config
    from sg2image.training import train as run_training

    if preset is not None:
        from sg2image.training.presets import run_preset
        from sg2image.training.presets import ship as ship_pipeline

        if config is not None:
            raise UserError("give a CONFIG file or --preset, not both")
        if smoke and ship:
            raise UserError("--smoke: a smoke run's model is not for shipping; drop --ship")
        pipeline = run_preset(preset, out, overrides, budget_scale=budget_scale, smoke=smoke)
        typer.echo(f"trained pipeline written to {pipeline}")
        if smoke:
            projection = json.loads((out / "projection.json").read_text())
            parts = ", ".join(f"{k} {v:.0f} s" for k, v in projection["seconds"].items())
            typer.echo(f"projected full run (training steps only): {parts}; "
                       f"total {projection['total_s'] / 60:.1f} min")
        if ship:
            from sg2image import SHIPPED_MODELS

            # a depth preset's model ships beside the default one, not over it
            name = "shapes-depth" if "depth" in preset else "shapes"
            where = ship_pipeline(pipeline, SHIPPED_MODELS[name])
            typer.echo(f"shipped as the model '{name}' (--model {name}): {where}")
        return
    if stages is not None:
        overrides.append("stages=" + json.dumps([s.strip() for s in stages.split(",")]))
    if resume is not None:
        overrides.append(f"resume={json.dumps(resume)}")
    cfg = load_config(resolve_config(config), overrides)
    out = run_training(cfg)
    typer.echo(f"trained pipeline written to {out}")


@app.command()
@friendly
def sample(
    out: OutOpt,
    model: Annotated[str | None, typer.Option(help=DEFAULT_MODEL_HELP)] = None,
    dataset: Annotated[str, typer.Option(help="shapes, coco or vg.")] = "shapes",
    data_root: Annotated[Path | None, typer.Option(help="Prepared folder (coco, vg).")] = None,
    split: Annotated[str, typer.Option(help="val or test.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="First N graphs only.")] = None,
    resolution: Annotated[int, typer.Option(help="Resolution of the dataset's images.")] = 64,
    samples_per_graph: Annotated[int, typer.Option(min=1)] = 1,
    steps: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    guidance: Annotated[float, typer.Option(min=0.0)] = 2.0,
    seed: int = 0,
    scheduler: Annotated[str | None, typer.Option(help="dpm++, unipc, ddim, lms, ...")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    device: str = "cpu",
) -> None:
    """Sample a whole split to OUT/{index:06d}_{k}.png; resumable, shardable with accelerate."""
    from sg2image.pipeline import load_pipeline
    from sg2image.sampling import sample_split
    from sg2image.training.config import load_config, make_dataset

    if split not in ("val", "test"):
        raise UserError(f"split {split!r}: sample val or test")
    size = limit or (1000 if dataset == "shapes" else 10**9)
    overrides = [f"dataset={dataset}", f"resolution={resolution}", f"val_size={size}"]
    if data_root is not None:
        overrides.append(f"data_root={data_root}")
    data = make_dataset(load_config(None, overrides), split)
    pipe = load_pipeline(_model_source(model), device=device)
    if scheduler is not None:
        pipe.set_scheduler(scheduler)
    written = sample_split(pipe, data, out, samples_per_graph, batch_size, seed, steps, guidance)
    typer.echo(f"wrote {written} image(s) to {out} ({len(data)} graphs x {samples_per_graph})")


@app.command("eval")
@friendly
def eval_cmd(
    generated: Annotated[
        Path,
        typer.Option(help="Samples named {index:06d}_{k}.png, as `generate` and `sample` write."),
    ],
    reference: Annotated[Path, typer.Option(help="Folder of real images.")],
    inception: Annotated[
        str | None,
        typer.Option(
            help="InceptionV3 FID weights file (weights-inception-2015-12-05-6726825d.pth) or "
            "'download': FID/KID/IS comparable with the literature; needs sg2image\\[fidelity]."
        ),
    ] = None,
    clip: Annotated[
        str | None, typer.Option(help="Else: a CLIP vision folder as the feature space (no IS).")
    ] = None,
    graphs: Annotated[Path | None, typer.Option(help="Default: GENERATED/graphs.json.")] = None,
    resolution: Annotated[
        int | None, typer.Option(help="Compare at this size (default: the generated size).")
    ] = None,
    detector: Annotated[
        str, typer.Option(help="'shapes' (the oracle), 'none', or MODULE:FACTORY.")
    ] = "none",
    lpips: Annotated[
        bool | None,
        typer.Option(help="DS with LPIPS (default: when sg2image\\[lpips] is installed)."),
    ] = None,
    lpips_weights: Annotated[
        Path | None, typer.Option(help="torchvision's alexnet-owt-7be5be79.pth for LPIPS.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    report: Annotated[Path | None, typer.Option(help="JSON (default GENERATED/eval.json).")] = None,
) -> None:
    """FID / KID / IS, DS (LPIPS) or feature diversity, OOR and relation accuracy."""
    from sg2image.eval.suite import evaluate_folders, format_table

    found = None
    if detector != "none":
        found = load_graphs(graphs or generated / "graphs.json")
    result = evaluate_folders(
        generated,
        reference,
        clip,
        found,
        resolution,
        inception=inception,
        detector=detector,
        lpips=lpips,
        lpips_weights=None if lpips_weights is None else str(lpips_weights),
        device=device,
    )
    _write_json(result, report or generated / "eval.json")
    typer.echo(format_table(result))


@app.command()
@friendly
def bench(
    run: Annotated[Path, typer.Option(help="A `train --preset shapes` run folder.")],
    n: Annotated[int, typer.Option(min=1, max=1000, help="Fixed test graphs to use.")] = 1000,
    diversity_n: Annotated[int, typer.Option(help="Graphs sampled twice for diversity.")] = 200,
    ablation: Annotated[
        list[str] | None, typer.Option(help="NAME=PIPELINE_DIR, repeatable.")
    ] = None,
    sweep: Annotated[bool, typer.Option(help="Include the sampler sweep.")] = True,
    sweep_n: Annotated[
        int | None,
        typer.Option(min=1, help="Graphs for the sampler sweep (default: n; ablations use n)."),
    ] = None,
    reuse: Annotated[bool, typer.Option(help="Keep results already saved for a system.")] = False,
    model: Annotated[
        str | None, typer.Option(help="Pipeline to measure (default: the run's own).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only this system (repeatable); no docs.")
    ] = None,
    world: Annotated[
        str | None,
        typer.Option(
            help="Whose test split: plain or depth (default: the run's world, from its "
            "config.json). Depth: occlusion accuracy as a column, and the model on the plain "
            "split as one more row."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Graphs per pipeline call (a GPU takes more).")
    ] = 16,
    device: Annotated[
        str, typer.Option(help="Where the pipelines sample: cpu, or cuda on a GPU machine.")
    ] = "cpu",
    results: Annotated[Path, typer.Option(help="Folder of the JSON results.")] = Path(
        "benchmarks/results"
    ),
    docs: Annotated[Path, typer.Option(help="Markdown report to write.")] = Path(
        "docs/benchmarks.md"
    ),
) -> None:
    """The Shapes adherence benchmark: oracle, FID/KID, diversity, cost, for each system."""
    from sg2image.data.shapes import WORLDS
    from sg2image.eval.shapes_bench import run_and_report

    if world is not None and world not in WORLDS:
        raise UserError(f"--world {world!r}: expected one of {', '.join(WORLDS)}")
    bad = [a for a in ablation or [] if "=" not in a]
    if bad:
        raise UserError(f"--ablation {bad[0]!r}: expected NAME=PIPELINE_DIR")
    ablations = dict(a.split("=", 1) for a in ablation or [])
    command = f"sg2image bench --run {run} --n {n}" + "".join(
        f" --ablation {a}" for a in ablation or []
    )
    command += f" --sweep-n {sweep_n}" if sweep_n else ""
    command += f" --model {model}" if model else ""
    command += f" --world {world}" if world else ""
    command += f" --batch-size {batch_size}" if batch_size != 16 else ""
    command += f" --device {device}" if device != "cpu" else ""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: this machine has no CUDA GPU; use --device cpu")
    args = (run, ablations, sweep, n, diversity_n, results, docs, command, sweep_n, reuse, only)
    typer.echo(run_and_report(*args, model=model, world=world, batch_size=batch_size,
                               device=device))


if __name__ == "__main__":  # `python -m sg2image.cli`, e.g. under accelerate launch
    app()

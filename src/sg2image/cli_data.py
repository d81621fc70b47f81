"""`sg2image data ...` (preparing COCO-Stuff and Visual Genome as sg2im does) and
`sg2image shapes ...` (the Shapes world: make, vocab, render, check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sg2image.cli_common import (
    GraphsArg,
    OutOpt,
    UserError,
    _write_json,
    format_report,
    friendly,
    make_out_dir,
)
from sg2image.graph import load_graphs

shapes_app = typer.Typer(no_args_is_help=True, help="The Shapes world: make, vocab, render, check.")
data_app = typer.Typer(
    no_args_is_help=True, help="Real datasets: COCO-Stuff 2017, Visual Genome 1.4."
)

_COCO, _VG, _BOTH = "COCO-Stuff 2017", "Visual Genome 1.4", "Both datasets"

WorldOpt = Annotated[
    str,
    typer.Option(
        help="plain (six predicates, every object apart; the shipped model's) or depth "
        "(plus 'in front of' / 'behind': overlapping pairs drawn back to front)."
    ),
]


def _world(world: str) -> str:
    from sg2image.data.shapes import WORLDS

    if world not in WORLDS:
        raise UserError(f"--world {world!r}: expected one of {', '.join(WORLDS)}")
    return world


def _shapes_graphs(path: Path):
    """Graphs of either world (the depth vocabulary holds the plain one; its depth order is
    checked)."""
    from sg2image.data.shapes import shapes_vocab

    return load_graphs(path, vocab=shapes_vocab("depth"))


def _opt(panel: str, help: str, *names: str):
    # Every preparation flag defaults to None: "not given", so the config file or the
    # library's sg2im default applies (the defaults differ between the datasets).
    return typer.Option(*names, help=help, rich_help_panel=panel)


@data_app.command("prepare")
@friendly
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="coco or vg.")],
    src: Annotated[Path, typer.Option(help="Folder of the raw annotation files.")],
    out: Annotated[Path, typer.Option(help="Folder for the prepared splits and vocab.json.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML/JSON file of these options (keys: the names with _); flags given here win."
        ),
    ] = None,
    split_protocol: Annotated[
        str | None, _opt(_COCO, "deprecated-2017 (24,972 / 1,024 / 2,048) or full.")
    ] = None,
    deprecated_ids: Annotated[
        Path | None,
        _opt(
            _COCO,
            "Folder of train-ids.txt / val-ids.txt (default: SRC/annotations/"
            "deprecated-challenge2017, else SRC/deprecated-challenge2017).",
        ),
    ] = None,
    num_val: Annotated[
        int | None, _opt(_COCO, "val = the first N kept val2017 images (sg2im: 1024).")
    ] = None,
    test_split: Annotated[
        str | None,
        _opt(
            _COCO,
            "test = the 'rest' of val2017 (sg2im) or the 'last' --num-test "
            "(LayoutDiffusion) (default: rest).",
        ),
    ] = None,
    num_test: Annotated[
        int | None, _opt(_COCO, "Test size with --test-split last (sg2im: 2048).")
    ] = None,
    seed: Annotated[
        int | None, _opt(_COCO, "Seed of the synthetic relations (default: 0).")
    ] = None,
    include_other: Annotated[
        bool | None,
        _opt(
            _COCO, "Keep the 'other' stuff class (sg2im: no).", "--include-other/--no-include-other"
        ),
    ] = None,
    stuff_only: Annotated[
        bool | None,
        _opt(
            _COCO,
            "Only images with stuff annotations (sg2im: yes).",
            "--stuff-only/--no-stuff-only",
        ),
    ] = None,
    drop_iscrowd: Annotated[
        bool | None,
        _opt(_COCO, "Drop crowd objects (LostGAN; sg2im: no).", "--drop-iscrowd/--no-drop-iscrowd"),
    ] = None,
    min_object_size: Annotated[
        float | None,
        _opt(
            _BOTH,
            "coco: box area / image area must exceed it (sg2im: 0.02); "
            "vg: both box sides in px (sg2im: 32).",
        ),
    ] = None,
    min_objects_per_image: Annotated[
        int | None, _opt(_BOTH, "Kept objects per image (sg2im: coco 3, vg 3).")
    ] = None,
    max_objects_per_image: Annotated[
        int | None, _opt(_BOTH, "Images with more are dropped (sg2im: coco 8, vg 30).")
    ] = None,
    min_image_size: Annotated[
        int | None, _opt(_VG, "min(width, height) in px (sg2im: 200).")
    ] = None,
    min_object_instances: Annotated[
        int | None, _opt(_VG, "Train instances for an object name (sg2im: 2000).")
    ] = None,
    min_attribute_instances: Annotated[
        int | None, _opt(_VG, "Train instances for an attribute (sg2im: 2000).")
    ] = None,
    max_attributes_per_image: Annotated[
        int | None, _opt(_VG, "Attributes kept per object, as sg2im (sg2im: 30).")
    ] = None,
    min_relationship_instances: Annotated[
        int | None, _opt(_VG, "Train instances for a predicate (sg2im: 500).")
    ] = None,
    min_relationships_per_image: Annotated[
        int | None, _opt(_VG, "Fewer: dropped (sg2im: 1).")
    ] = None,
    max_relationships_per_image: Annotated[
        int | None, _opt(_VG, "More: dropped (sg2im: 30).")
    ] = None,
    clean_names: Annotated[
        bool | None,
        _opt(
            _VG,
            "Lower-case / strip all names, clean every split's predicates "
            "(not sg2im's counts; default: no).",
            "--clean-names/--no-clean-names",
        ),
    ] = None,
) -> None:
    """Turn raw COCO-Stuff or Visual Genome annotations into sg2image's prepared format,
    as sg2im prepares them (sg2im's values in brackets)."""
    given = {k: v for k, v in locals().items() if v is not None}  # first: only the flags
    for key in ("dataset", "src", "out", "config"):
        given.pop(key, None)
    import logging

    from sg2image.data.prepare import prepare

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    counts = prepare(dataset, src, out, config, given)
    typer.echo(json.dumps(counts, indent=1, default=str))


@shapes_app.command("make")
@friendly
def shapes_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Graph JSON file to write.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n: Annotated[int | None, typer.Option(help="Number of scenes (test: 1000).")] = None,
    start: Annotated[int, typer.Option(help="Index of the first scene.")] = 0,
    world: WorldOpt = "plain",
) -> None:
    """Write Shapes scene graphs (deterministic: scene i of a split is always the same)."""
    from sg2image.data.shapes import make_split
    from sg2image.graph import save_graphs

    graphs = make_split(split, n=n, start=start, world=_world(world))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_graphs(graphs, out)
    which = "" if world == "plain" else f" {world}-world"
    typer.echo(f"wrote {len(graphs)}{which} {split} scene graph(s) to {out}")


@shapes_app.command("vocab")
@friendly
def shapes_vocab_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="vocab.json to write.")],
    world: WorldOpt = "plain",
) -> None:
    """Write the Shapes vocabulary to a vocab.json file.

    18 objects and 6 predicates (plain world: the shipped model's) or 8 (depth world) in
    sg2im's format, for `validate --vocab` and any tool that reads sg2im vocabularies."""
    from sg2image.data.shapes import shapes_vocab

    if out.is_dir():
        raise UserError(f"{out}: is a folder; give -o a file name such as {out / 'vocab.json'}")
    vocab = shapes_vocab(_world(world))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        vocab.save(out)
    except FileExistsError:  # mkdir met a file where a folder should be
        raise UserError(f"{out}: a folder in this path is a file") from None
    except OSError as e:
        raise UserError(f"{out}: cannot write this file ({e.strerror})") from None
    typer.echo(
        f"wrote the Shapes vocabulary ({vocab.num_objects - 1} objects, "
        f"{vocab.num_predicates - 1} predicates) to {out}"
    )


@shapes_app.command("render")
@friendly
def shapes_render(
    graphs: GraphsArg,
    out: OutOpt = Path("out/shapes"),
    with_graph: Annotated[bool, typer.Option(help="Also save the graph drawn beside.")] = False,
) -> None:
    """Render ground-truth Shapes images of graphs that carry boxes (either world; depth
    triples set the drawing order, back to front)."""
    from PIL import Image

    from sg2image.data.shapes import render

    found = _shapes_graphs(graphs)
    missing = [i for i, g in enumerate(found) if g.boxes is None]
    if missing:
        raise UserError(f"scenes {missing[:10]}: no boxes; Shapes renders need boxes")
    make_out_dir(out)
    for i, g in enumerate(found):
        image = render(g)
        Image.fromarray(image).save(out / f"{i:05d}.png")
        if with_graph:
            from sg2image.drawing import side_by_side

            side_by_side(image, g).save(out / f"{i:05d}_with_graph.png")
    typer.echo(f"rendered {len(found)} image(s) into {out}")


@shapes_app.command("check")
@friendly
def shapes_check(
    graphs: GraphsArg,
    images: Annotated[Path, typer.Argument(help="Folder of images named by graph index.")],
    report: Annotated[
        Path | None, typer.Option(help="JSON report (default IMAGES/oracle.json).")
    ] = None,
) -> None:
    """Score images against their graphs with the Shapes oracle (recall, relations,
    placement; occlusion for depth triples)."""
    from sg2image.eval.oracle import check_folder

    found = _shapes_graphs(graphs)
    result = check_folder(found, images)
    data = result.to_json()
    _write_json(data, report or images / "oracle.json")
    typer.echo(format_report(data))

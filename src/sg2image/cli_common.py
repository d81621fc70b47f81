"""What every `sg2image` command shares: one-line errors instead of tracebacks, output
folders, reports, the common arguments."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from sg2image.graph import GraphValidationError, Vocab


class UserError(Exception):
    """A problem with what the user asked for: printed as one clean message, no traceback."""


def _fail(lines: list[str], code: int = 2) -> None:
    for line in lines:
        typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def friendly(fn):
    """Turn the errors a user can cause into messages that say where and what."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GraphValidationError as e:
            _fail(e.problems)
        except (UserError, ValueError, FileNotFoundError, OSError) as e:
            _fail([str(e)])

    return wrapper


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def format_report(data: dict) -> str:
    """An oracle report as a small table."""
    lines = [
        f"images:            {data['num_images']}",
        f"object recall:     {_num(data['object_recall'])}",
        f"relation accuracy: {_num(data['relation_accuracy'])}",
        # placement alone: over the triples whose two objects were both found
        f"  of found pairs:  {_num(data.get('relation_accuracy_matched'))}"
        f"  ({data.get('matched_relations', 0)} of {data['num_relations']} triples)",
        # placement with the shape ignored: colour blobs, triples of colours unique in a graph
        f"placement:         {_num(data.get('placement'))}"
        f"  ({data.get('placement_judged', 0)} triples judged, by colour, shape ignored)",
    ]
    if data.get("occlusion_judged"):  # the depth world: over the depth triples
        lines.append(
            f"occlusion:         {_num(data.get('occlusion_accuracy'))}"
            f"  ({data['occlusion_judged']} depth triples; "
            f"{data.get('hidden_matches', 0)} objects found by their visible part)"
        )
    for pred, row in data["per_predicate"].items():
        lines.append(f"  {pred:<14} {_num(row['accuracy'])}  ({row['correct']}/{row['total']})")
    return "\n".join(lines)


def _vocab(path: Path | None) -> Vocab | None:
    return None if path is None else Vocab.load(path)


def make_out_dir(out: Path) -> Path:
    """Create the output folder, or say in one line why it cannot be (not an OS traceback)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give -o a folder to write into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create this folder ({e.strerror})") from None
    return out


def _write_json(data: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))


GraphsArg = Annotated[Path, typer.Argument(help="Scene graph JSON: one scene or a list.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]

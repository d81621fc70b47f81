"""``sg2image data prepare``: one entry for COCO-Stuff and Visual Genome, options from the
command line and/or a TOML / JSON file (keys are the parameter names; the command line
wins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sg2image.data.raw import RawFormatError, check_type, read_options, require_dir

DATASETS = ("coco", "vg")


def _allowed(dataset: str) -> dict[str, type]:
    if dataset == "coco":
        from sg2image.data.coco import OPTIONS
    else:
        from sg2image.data.vg_prepare import OPTIONS
    return OPTIONS


def resolve_options(
    dataset: str, config: str | Path | None, given: dict[str, Any]
) -> dict[str, Any]:
    """The options for ``dataset``: the config file's, overridden by ``given`` (the flags
    the user passed). An option of the other dataset is an error, not silently ignored."""
    allowed = _allowed(dataset)
    options = read_options(config, allowed) if config is not None else {}
    other_name = "vg" if dataset == "coco" else "coco"
    other = _allowed(other_name)
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        if key not in allowed:
            for_what = other_name if key in other else "neither dataset"
            raise RawFormatError(f"{flag} does not apply to {dataset} (it is for {for_what})")
        if allowed[key] is int and isinstance(value, float):
            # min_object_size is one flag: a fraction of the image for coco, pixels for vg.
            if not value.is_integer():
                raise RawFormatError(f"{flag}: {dataset} takes a whole number, got {value}")
            value = int(value)
        if allowed[key] is str and isinstance(value, Path):
            value = str(value)
        options[key] = check_type(value, allowed[key], flag)
    return options


def prepare(
    dataset: str,
    src: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    given: dict[str, Any] | None = None,
) -> dict:
    """Check the dataset name and the source folder first, then prepare it."""
    if dataset not in DATASETS:
        raise RawFormatError(f"dataset {dataset!r} unknown; choose coco or vg")
    require_dir(src, f"the raw {dataset} files")
    options = resolve_options(dataset, config, given or {})
    if dataset == "coco":
        from sg2image.data.coco import prepare_coco

        return prepare_coco(src, out, **options)
    from sg2image.data.vg_prepare import prepare_vg

    return prepare_vg(src, out, **options)

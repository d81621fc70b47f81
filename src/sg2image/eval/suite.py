"""`sg2image eval`: metrics of a folder of samples against a folder of real images.

Samples are named ``{index:06d}_{k}.png`` (``sg2image sample``); graphs default to the
``graphs.json`` that sampling writes beside them. Recorded with every result: sample
counts, resolution and feature extractor, since FID moves with all three.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sg2image.eval.metrics import (
    ClipImageFeatures,
    feature_diversity,
    features,
    fid_kid,
    to_uint8_batch,
)

SAMPLE = re.compile(r"^(\d+)_(\d+)\.png$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _load(paths: list[Path], size: int | None) -> torch.Tensor:
    images = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            images.append(np.asarray(im))
    return to_uint8_batch(images)


def read_samples(folder: Path) -> dict[int, dict[int, Path]]:
    """{graph index: {sample k: path}} of a sampling folder."""
    found: dict[int, dict[int, Path]] = defaultdict(dict)
    for p in folder.iterdir():
        m = SAMPLE.match(p.name)
        if m:
            found[int(m.group(1))][int(m.group(2))] = p
    if not found:
        raise ValueError(f"{folder}: no samples named like 000012_0.png")
    return dict(found)


def evaluate_folders(
    generated: Path,
    reference: Path,
    clip_dir: str,
    graphs=None,
    resolution: int | None = None,
    shapes_oracle: bool = False,
) -> dict:
    """FID / KID on CLIP features, feature diversity between samples 0 and 1 of a graph,
    and, with the Shapes oracle as detector, OOR (object recall) and relation accuracy."""
    from sg2image.models.base import load_clip_vision

    samples = read_samples(generated)
    ref_paths = sorted(p for p in reference.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not ref_paths:
        raise ValueError(f"{reference}: no reference images")
    extractor = ClipImageFeatures(load_clip_vision(clip_dir))
    gen_paths = [p for i in sorted(samples) for _, p in sorted(samples[i].items())]
    fake, real = _load(gen_paths, resolution), _load(ref_paths, resolution)
    result = {
        **fid_kid(real, fake, extractor),
        "num_generated": len(gen_paths),
        "num_reference": len(ref_paths),
        "resolution": int(fake.shape[-1]),
        "feature_extractor": f"CLIP image_embeds of {clip_dir}",
    }
    pairs = [i for i in sorted(samples) if 0 in samples[i] and 1 in samples[i]]
    if pairs:
        a = features(extractor, _load([samples[i][0] for i in pairs], resolution))
        b = features(extractor, _load([samples[i][1] for i in pairs], resolution))
        result["feature_diversity"] = feature_diversity(a, b)
        result["diversity_pairs"] = len(pairs)
    if shapes_oracle and graphs is not None:
        from sg2image.eval.oracle import score_images

        index = [i for i in sorted(samples) for _ in samples[i]]
        missing = [i for i in index if i >= len(graphs)]
        if missing:
            raise ValueError(f"sample index {missing[0]} has no graph ({len(graphs)} graphs)")
        images = list(_load(gen_paths, None).permute(0, 2, 3, 1).numpy())
        report = score_images(images, [graphs[i] for i in index]).to_json()
        result["oor"] = report["object_recall"]
        result["relation_accuracy"] = report["relation_accuracy"]
        result["per_predicate"] = report["per_predicate"]
        result["detector"] = "Shapes oracle"
    return result

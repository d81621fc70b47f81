"""`sg2image eval`: metrics of a folder of samples against a folder of real images.

Samples are named ``{index:06d}_{k}.png`` (``sg2image sample``); graphs default to the
``graphs.json`` that sampling writes beside them. Reported:

* FID / KID on the feature extractor's features (Inception with the standard weights when
  given, else CLIP or a custom module: the extractor is recorded, never implied);
* IS on class logits, when the extractor is a real classifier (Inception), else None with
  the reason;
* DS: LPIPS between every pair of samples of a graph, when LPIPS is available, else None
  with the reason; always ``feature_diversity``, the L2 distance of the same pairs in the
  FID feature space (a different number, never called DS);
* with a detector (eval/detector.py): OOR and relation accuracy; with the built-in Shapes
  detector also placement (colour blobs, shape ignored) and its number of judged triples.

Recorded with every result: image, graph and sample counts, the resolution, the feature
extractor and the detector, since FID moves with all of them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sg2image.eval.detector import (
    Detector,
    ShapesDetector,
    describe,
    load_detector,
    score_detections,
    summarise,
)
from sg2image.eval.diversity import Lpips, lpips_installed, sample_pairs
from sg2image.eval.errors import EvalSetupError
from sg2image.eval.extractors import ClipExtractor, FeatureExtractor, InceptionExtractor
from sg2image.eval.metrics import (
    fid_kid_from_features,
    inception_score_from_logits,
    pair_distances,
    to_uint8_batch,
)

SAMPLE = re.compile(r"^(\d+)_(\d+)\.png$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _load(paths: Sequence[Path], size: int | None) -> torch.Tensor:
    """Images as uint8 (N, 3, size, size): resized (bicubic, no crop) when not that size."""
    images = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            images.append(np.asarray(im))
    return to_uint8_batch(images)


def _batches(paths: Sequence[Path], size: int, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(paths), batch_size):
        yield _load(paths[i : i + batch_size], size)


def read_samples(folder: Path) -> dict[int, dict[int, Path]]:
    """{graph index: {sample k: path}} of a sampling folder."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    found: dict[int, dict[int, Path]] = defaultdict(dict)
    for p in folder.iterdir():
        m = SAMPLE.match(p.name)
        if m:
            found[int(m.group(1))][int(m.group(2))] = p
    if not found:
        raise ValueError(f"{folder}: no samples named like 000012_0.png")
    return dict(found)


@torch.no_grad()
def extract(
    extractor: FeatureExtractor,
    paths: Sequence[Path],
    size: int,
    device: str = "cpu",
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (N, D) and logits (N, C) or None of the images at ``paths``, read and
    resized batch by batch, so a folder never has to fit in memory."""
    feats, logits = [], []
    for batch in _batches(paths, size, batch_size):
        f, lg = extractor(batch.to(device))
        feats.append(f.float().cpu())
        if lg is not None:
            logits.append(lg.float().cpu())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def choose_extractor(
    clip_dir: str | None, inception: str | None, extractor: FeatureExtractor | None
) -> FeatureExtractor:
    if extractor is not None:
        return extractor
    if inception and clip_dir:
        raise EvalSetupError("give one feature space: --inception or --clip, not both")
    if inception:
        return InceptionExtractor(inception)
    if clip_dir:
        return ClipExtractor(clip_dir)
    raise EvalSetupError(
        "no feature extractor: pass --inception PATH (the standard FID weights, numbers "
        "comparable with the literature) or --clip DIR (a CLIP vision folder, e.g. the Shapes "
        "CLIP of a run, RUN/shapes-base/clip)"
    )


def _square_size(path: Path) -> int:
    with Image.open(path) as im:
        w, h = im.size
    if w != h:
        raise ValueError(f"{path}: {w} x {h} is not square; pass --resolution")
    return w


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    std = float(values.std()) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _samples_per_graph(samples: dict[int, dict[int, Path]]) -> int | str:
    counts = sorted({len(ks) for ks in samples.values()})
    return counts[0] if len(counts) == 1 else f"{counts[0]}..{counts[-1]}"


def evaluate_folders(
    generated: Path,
    reference: Path,
    clip_dir: str | None = None,
    graphs=None,
    resolution: int | None = None,
    shapes_oracle: bool = False,
    *,
    inception: str | None = None,
    extractor: FeatureExtractor | None = None,
    detector: Detector | str | None = None,
    lpips: bool | None = None,
    lpips_weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    kid_subset: int = 1000,
    is_splits: int = 10,
) -> dict:
    """Every metric of the module docstring, as one flat JSON-able dict.

    The feature space is ``extractor`` (a FeatureExtractor), else Inception from the
    ``inception`` weights file ("download": torch-fidelity's download), else the CLIP
    folder ``clip_dir``. ``detector``: a Detector, 'shapes', 'none' or MODULE:FACTORY
    (``shapes_oracle=True`` is the older spelling of 'shapes'). ``lpips``: None uses LPIPS
    when the package is installed or weights are given. Images are compared at
    ``resolution`` (default: the generated images' size; the reference is resized to it).
    """
    generated, reference = Path(generated), Path(reference)
    samples = read_samples(generated)
    if not reference.is_dir():
        raise ValueError(f"{reference}: not a directory")
    ref_paths = sorted(p for p in reference.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not ref_paths:
        raise ValueError(f"{reference}: no reference images (.png, .jpg)")
    gen_paths = [p for i in sorted(samples) for _, p in sorted(samples[i].items())]
    size = resolution or _square_size(gen_paths[0])

    # Everything that can fail on set-up fails here, before any image is read.
    if detector is None and shapes_oracle:
        detector = "shapes"
    spec = detector if isinstance(detector, str) else type(detector).__name__
    if isinstance(detector, str):
        detector = load_detector(detector)
    if detector is not None:
        if graphs is None:
            raise EvalSetupError("a detector needs the graphs: --graphs FILE")
        beyond = [i for i in sorted(samples) if i >= len(graphs)]
        if beyond:
            raise ValueError(f"sample index {beyond[0]} has no graph ({len(graphs)} graphs)")
    pairs = sample_pairs(samples)
    use_lpips = lpips if lpips is not None else (lpips_weights is not None or lpips_installed())
    lpips_model = Lpips(lpips_weights, device) if use_lpips and pairs else None
    feature_extractor = choose_extractor(clip_dir, inception, extractor).to(device)
    no_lpips = (
        "turned off (--no-lpips)"
        if lpips is False
        else "the lpips package is not installed (pip install 'sg2image[lpips]')"
    )

    result: dict = {
        "num_generated": len(gen_paths),
        "num_reference": len(ref_paths),
        "num_graphs": len(samples),
        "samples_per_graph": _samples_per_graph(samples),
        "resolution": size,
        "resize": f"bicubic to {size} x {size}, no crop, where an image differs",
        "feature_extractor": feature_extractor.describe(),
    }
    fake, logits = extract(feature_extractor, gen_paths, size, device, batch_size)
    real, _ = extract(feature_extractor, ref_paths, size, device, batch_size)
    result.update(fid_kid_from_features(real, fake, kid_subset))

    if logits is not None:
        result.update(inception_score_from_logits(logits, is_splits))
        result["is_classifier"] = feature_extractor.name
    else:
        result.update({"is": None, "is_unavailable": feature_extractor.no_logits_reason})

    result.update(_diversity(pairs, gen_paths, fake, lpips_model, no_lpips, size, batch_size))
    if detector is not None:
        result.update(_detect(detector, samples, graphs, gen_paths))
        result["detector"] = describe(detector, spec)
    else:
        result["detector"] = None
    return result


def _diversity(pairs, gen_paths, fake, lpips_model, no_lpips, size, batch_size) -> dict:
    """feature_diversity always; DS (LPIPS) when a model is given, else ``no_lpips``."""
    if not pairs:
        reason = "one sample per graph: no pairs to compare"
        return {"ds": None, "ds_unavailable": reason, "diversity_pairs": 0}
    row = {p: i for i, p in enumerate(gen_paths)}
    a = torch.tensor([row[p] for p, _ in pairs])
    b = torch.tensor([row[q] for _, q in pairs])
    mean, std = _mean_std(pair_distances(fake[a], fake[b]))
    out: dict = {"feature_diversity": mean, "feature_diversity_std": std}
    out["diversity_pairs"] = len(pairs)
    if lpips_model is None:
        return {**out, "ds": None, "ds_unavailable": no_lpips}
    dists = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        first, second = _load([p for p, _ in chunk], size), _load([q for _, q in chunk], size)
        dists.append(lpips_model(first, second))
    ds_mean, ds_std = _mean_std(torch.cat(dists))
    return {**out, "ds": ds_mean, "ds_std": ds_std, "ds_model": lpips_model.describe()}


def _detect(detector: Detector, samples, graphs, gen_paths) -> dict:
    """Each generated image, at its own size, through the detector and against its graph."""
    labels = getattr(detector, "labels", None)
    index = {p: i for i in samples for p in samples[i].values()}
    scores = []
    for path in gen_paths:
        image = _load([path], None)[0].permute(1, 2, 0).numpy()
        graph = graphs[index[path]]
        scored = score_detections(graph, detector.detect(image), image.shape[:2], labels)
        if isinstance(detector, ShapesDetector):
            scored.placement = detector.placement(image, graph)
        scores.append(scored)
    return summarise(scores)


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(result: dict) -> str:
    """The result as a small table: counts and set-up first, since FID moves with them."""
    fx, det = result["feature_extractor"], result.get("detector")
    lines = [
        f"generated images   {result['num_generated']} ({result['num_graphs']} graphs x "
        f"{result['samples_per_graph']} samples)",
        f"reference images   {result['num_reference']}",
        f"resolution         {result['resolution']} px",
        f"feature extractor  {fx['name']}" + (f" [{fx['source']}]" if fx.get("source") else ""),
        f"detector           {det['name'] if det else 'none'}",
        "",
        f"{'metric':<19}{'value':>12}  note",
        f"{'FID':<19}{_num(result['fid']):>12}  on the features above",
        f"{'KID':<19}{_num(result['kid']):>12}  +- {_num(result['kid_std'])} "
        f"({result['kid_subsets']} subsets of {result['kid_subset_size']})",
    ]
    if result["is"] is None:
        lines.append(f"{'IS':<19}{'n/a':>12}  {result['is_unavailable']}")
    else:
        lines.append(
            f"{'IS':<19}{_num(result['is'], 3):>12}  +- {_num(result['is_std'], 3)} "
            f"({result['is_splits']} splits)"
        )
    if result.get("ds") is None:
        lines.append(f"{'DS (LPIPS)':<19}{'n/a':>12}  {result['ds_unavailable']}")
    else:
        lines.append(
            f"{'DS (LPIPS)':<19}{_num(result['ds']):>12}  +- {_num(result['ds_std'])} "
            f"({result['diversity_pairs']} pairs)"
        )
    if "feature_diversity" in result:
        lines.append(
            f"{'feature diversity':<19}{_num(result['feature_diversity']):>12}  +- "
            f"{_num(result['feature_diversity_std'])} (L2 of the features, "
            f"{result['diversity_pairs']} pairs; not DS)"
        )
    if det:
        lines.append(
            f"{'OOR':<19}{_num(result['oor']):>12}  {result['matched_objects']}/"
            f"{result['num_objects']} objects found"
        )
        note = f"{result['num_relations_judged']} triples judged"
        skipped = sum(result["relations_not_judged"].values())
        if skipped:
            note += f", {skipped} not judged (no rule or no box)"
        lines.append(f"{'relation accuracy':<19}{_num(result['relation_accuracy']):>12}  {note}")
    if det and result.get("placement_judged") is not None:
        lines.append(
            f"{'placement':<19}{_num(result['placement']):>12}  "
            f"{result['placement_judged']} triples judged (colour blobs, shape ignored)"
        )
    return "\n".join(lines)

"""Distribution metrics on a feature space: FID, KID, IS and a feature diversity score.

FID moves with the feature extractor, the sample count and the resolution, so every
result records all three. The metrics are torchmetrics' own classes; features are
computed once per image (eval/extractors.py: Inception, CLIP or a custom module) and handed
to each metric through an identity ``feature=`` module, instead of running the network once
per metric.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> CLIP image embeddings (N, D), for torchmetrics."""

    def __init__(self, vision_model, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.model = vision_model.eval().requires_grad_(False)
        self.size = vision_model.config.image_size
        self.num_features = vision_model.config.projection_dim
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        x = (x - self.mean) / self.std
        return self.model(pixel_values=x).image_embeds


def to_uint8_batch(images) -> torch.Tensor:
    """A list of (H, W, 3) uint8 arrays / PIL images -> (N, 3, H, W) uint8 tensor."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def features(extractor: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    return torch.cat(
        [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def feature_diversity(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Mean L2 distance between the features of two samples of the same graph (row i vs i):
    0 when a model ignores its noise. Not LPIPS, hence not called DS."""
    return float((feats_a - feats_b).norm(dim=1).mean())


class Precomputed(nn.Module):
    """The identity on rows that an extractor already computed, (N, D) -> (N, D): the
    ``feature=`` module that lets torchmetrics' FID / KID / IS take features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


def fid_kid_from_features(
    real: torch.Tensor,
    fake: torch.Tensor,
    kid_subset: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float | int]:
    """FID and KID (mean, std) between feature rows real (N, D) and fake (M, D).

    KID draws ``kid_subsets`` random subsets of min(kid_subset, N, M) rows (torch-fidelity's
    and torchmetrics' defaults 100 x 1000); the draw is seeded, so reruns agree."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(
            f"FID needs at least 2 images on each side ({len(real)} reference, {len(fake)} "
            "generated)"
        )
    subset = min(kid_subset, len(real), len(fake))
    given = Precomputed(real.shape[1])
    fid = FrechetInceptionDistance(feature=given)
    with warnings.catch_warnings():  # "will save all extracted features": that is the point
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real.float(), real=True)
        metric.update(fake.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "kid_subsets": kid_subsets,
    }


def inception_score_from_logits(
    logits: torch.Tensor, splits: int = 10, seed: int = 0
) -> dict[str, float | int]:
    """IS (mean, std over ``splits`` splits) of class logits (N, C) of a real classifier.
    torchmetrics shuffles before splitting; seeded here, so reruns agree."""
    splits = max(1, min(splits, len(logits)))
    with warnings.catch_warnings():  # "will save all extracted features": they are given
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=splits)
    metric.update(logits.float())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"is": float(mean), "is_std": float(std), "is_splits": splits}


def pair_distances(feats_a: torch.Tensor, feats_b: torch.Tensor) -> torch.Tensor:
    """L2 distance of row i of (P, D) to row i of (P, D): (P,)."""
    return (feats_a.float() - feats_b.float()).norm(dim=1)

"""Aligning graph vectors with CLIP image embeddings: GAN (GCA), MMD and a direct CLIP loss.

Shapes: N graph vectors of width ``graph_dim`` (the encoder's global vector), M CLIP image
embeddings of width ``clip_dim`` (512 for clip-vit-base-patch32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class GraphToClipProjection(ModelMixin, ConfigMixin):
    """Linear map of the global graph vector (N, global_dim) to CLIP image space (N, clip_dim),
    shared by the CLIP and MMD losses (both compare with CLIP image embeddings)."""

    @register_to_config
    def __init__(self, global_dim: int = 512, clip_dim: int = 512):
        super().__init__()
        self.proj = nn.Linear(global_dim, clip_dim)

    def forward(self, graph_vec: torch.Tensor) -> torch.Tensor:
        return self.proj(graph_vec)


class GCADiscriminator(ModelMixin, ConfigMixin):
    """GAN discriminator of GCA: real = CLIP image embeddings, fake = graph vectors.

    Both kinds are projected to ``proj_dim`` (768) by *learned* Linear maps (the authors
    re-drew random projections every step and never trained them, so the discriminator
    saw a different input space at each step), then MLP 768 -> 256 -> 128 -> 1 with
    BatchNorm1d, LeakyReLU(0.2), Dropout(0.3). Returns logits: pair them with
    BCE-with-logits (:func:`discriminator_loss`, :func:`generator_loss`), the numerically
    stable form of sigmoid + BCE.

    ``shared_projection`` (default True, needs graph_dim == clip_dim): one projection for
    both kinds. With two separate learned projections the discriminator can tell the kinds
    apart by *which* projection they went through (e.g. different biases, or directions
    outside the graph projection's range), even when the two distributions are identical,
    and the generator cannot undo that: the game has no useful equilibrium (see
    tests/test_alignment.py). With separate projections, use it only on vectors that went
    through a fixed map, or feed it ``GraphToClipProjection`` outputs with sharing on.

    BatchNorm: score real and fake *together* with :meth:`forward`. Scoring them in
    separate train-mode batches normalises each batch by its own statistics, which erases
    the very mean/scale differences the discriminator should see.
    """

    @register_to_config
    def __init__(
        self,
        graph_dim: int = 512,
        clip_dim: int = 512,
        proj_dim: int = 768,
        hidden_dims: Sequence[int] = (256, 128),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        shared_projection: bool = True,
    ):
        super().__init__()
        self.clip_proj = nn.Linear(clip_dim, proj_dim)
        if shared_projection:
            if graph_dim != clip_dim:
                raise ValueError(
                    f"shared_projection needs graph_dim == clip_dim, got {graph_dim} != "
                    f"{clip_dim}: project the graph vectors to CLIP space first"
                )
            self.graph_proj = None
        else:
            self.graph_proj = nn.Linear(graph_dim, proj_dim)
        layers: list[nn.Module] = []
        d = proj_dim
        for h in hidden_dims:
            layers += [
                nn.Linear(d, h),
                nn.BatchNorm1d(h),
                nn.LeakyReLU(negative_slope),
                nn.Dropout(dropout),
            ]
            d = h
        layers.append(nn.Linear(d, 1))
        self.mlp = nn.Sequential(*layers)

    def _project_fake(self, graph_vec: torch.Tensor) -> torch.Tensor:
        proj = self.clip_proj if self.graph_proj is None else self.graph_proj
        return proj(graph_vec)

    def forward(
        self, clip_emb: torch.Tensor, graph_vec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """clip_emb (M, clip_dim), graph_vec (N, graph_dim) -> (real_logits (M,),
        fake_logits (N,)), scored in one batch (shared BatchNorm statistics)."""
        h = torch.cat([self.clip_proj(clip_emb), self._project_fake(graph_vec)], dim=0)
        logits = self.mlp(h).squeeze(-1)
        return logits[: clip_emb.size(0)], logits[clip_emb.size(0) :]

    def score_real(self, clip_emb: torch.Tensor) -> torch.Tensor:
        """clip_emb (M, clip_dim) -> logits (M,). Alone: prefer eval mode (see class doc)."""
        return self.mlp(self.clip_proj(clip_emb)).squeeze(-1)

    def score_fake(self, graph_vec: torch.Tensor) -> torch.Tensor:
        """graph_vec (N, graph_dim) -> logits (N,). Alone: prefer eval mode (see class doc)."""
        return self.mlp(self._project_fake(graph_vec)).squeeze(-1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(real -> 1) + BCE(fake -> 0), on logits; call with ``fake`` detached from the
    generator. softplus(-x) = -log sigmoid(x) exactly, without overflow."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log D(fake) = BCE(fake -> 1).

    The minimax form log(1 - D(fake)) has a vanishing gradient exactly when the
    discriminator confidently rejects the fakes (early training); -log D(fake) has the
    same fixed point and a strong gradient there (Goodfellow et al. 2014).
    """
    return F.softplus(-fake_logits).mean()


def mmd_loss(
    x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (10.0, 15.0, 20.0, 50.0)
) -> torch.Tensor:
    """Maximum mean discrepancy (biased, V-statistic) between x (N, C) and y (M, C).

    Kernel sum_a exp(-0.5 * d / a), d the squared Euclidean distance;
    loss = mean(K_xx) + mean(K_yy) - 2 mean(K_xy). Both sets must live in the same space:
    pass graph vectors already mapped by :class:`GraphToClipProjection`. The bandwidths
    suit CLIP image embeddings (unnormalised, squared distances of tens); rescale them for
    other data. Zero for x == y, >= 0 up to rounding.
    """
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"mmd_loss: x and y widths differ, {tuple(x.shape)} vs {tuple(y.shape)}")

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Direct differences, not |a|^2 + |b|^2 - 2ab: exact zeros on the diagonal and no
        # cancellation error at CLIP norms (cdist's zero-distance gradient is 0, not NaN).
        d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        return sum(torch.exp(-0.5 * d / bw) for bw in bandwidths)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def clip_alignment_loss(
    graph_clip: torch.Tensor, image_clip: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """graph_clip (N, C) projected graph vectors vs their own images' image_clip (N, C).

    ``"mse"`` (the authors'): mean squared error, sensitive to the embedding norm too;
    ``"cosine"``: mean of 1 - cosine similarity, direction only (CLIP compares directions).
    """
    if graph_clip.shape != image_clip.shape:
        raise ValueError(
            f"clip_alignment_loss: shapes differ, {tuple(graph_clip.shape)} vs "
            f"{tuple(image_clip.shape)}"
        )
    if kind == "mse":
        return F.mse_loss(graph_clip, image_clip)
    if kind == "cosine":
        return (1 - F.cosine_similarity(graph_clip, image_clip, dim=-1)).mean()
    raise ValueError(f"kind must be 'mse' or 'cosine', got {kind!r}")

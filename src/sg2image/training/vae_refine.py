"""Decoder-only refinement of a trained VAE against off-colour specks.

Why: the decoder's GroupNorms (16 groups; at its 16-channel levels one channel per group,
an instance norm) take away each image's feature scale, and the decoder steers it back
the way StyleGAN's generator did (Karras et al. 2020, section 2): one activation spike
per image, up to ~28 standard deviations, whose size sets the normalisation statistics.
Where that "droplet" leaks through the output conv it draws a speck at an object corner;
removing it ruins the whole image (measured: docs/benchmarks.md, "VAE specks"). An L1
loss barely notices a few-pixel speck, so the decoder is fine-tuned with an added hinge
that weighs errors above ``threshold`` ``hinge_weight`` times more: the droplet stays
(the statistics need it) but learns to stay out of the picture.

The encoder and quant_conv do not change, bit for bit, so the latent space, the scaling
factor and every UNet trained on them stay valid; the result is an ordinary
AutoencoderKL folder.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

_STREAM = 3  # rng key of this phase, apart from the base's parts (0..2)
# 600 steps at 10 / 0.25 left specks in 20% of reconstructions; 50 / 0.15 leaves 1%
# (docs/benchmarks.md, "VAE specks"). VaePart and benchmarks/vae_specks.py take these.
HINGE_WEIGHT = 50.0  # extra weight of the channel error above THRESHOLD
THRESHOLD = 0.15  # channel error in [-1, 1] units (~19 RGB levels)


def speck_loss(rec: torch.Tensor, x: torch.Tensor, hinge_weight: float, threshold: float):
    """L1 plus `hinge_weight` times the part of each channel error above `threshold`
    (images in [-1, 1]): a speck pixel (error ~1) weighs ~(1 + hinge_weight) times, a
    pixel within `threshold` as in plain L1."""
    err = (rec - x).abs()
    return err.mean() + hinge_weight * F.relu(err - threshold).mean()


def decoder_parameters(vae: AutoencoderKL) -> list[torch.nn.Parameter]:
    """What the refinement trains: everything after the latent."""
    post = vae.post_quant_conv
    return list(vae.decoder.parameters()) + (list(post.parameters()) if post else [])


def refine_vae_decoder(
    vae: AutoencoderKL,
    pool,
    steps: int,
    batch_size: int = 8,
    lr: float = 3e-4,
    warmup: int = 20,
    hinge_weight: float = HINGE_WEIGHT,
    threshold: float = THRESHOLD,
    seed: int = 0,
    log=None,
    log_offset: int = 0,
    autocast=None,
    log_every: int = 1,
    timer=None,
) -> AutoencoderKL:
    """Fine-tune `vae`'s decoder in place on `pool` (``pool.images`` uint8 (N, 3, H, W),
    ``pool.pixels(idx)`` in [-1, 1]) with ``speck_loss``, latents sampled from the frozen
    encoder as in the VAE's own training; returns it in eval mode. `log`: a MetricsLog,
    whose rows continue the VAE's own steps from `log_offset`, one every `log_every` steps;
    `autocast`: a torch.autocast context for the forward passes (None: full precision);
    `timer`: a training.timing.StepTimer told of each step."""
    device = vae.device
    vae.requires_grad_(False)
    params = decoder_parameters(vae)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    sched = get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=steps)
    vae.eval()  # the encoder; the decoder has no dropout or batch norm either way
    for step in tqdm(range(steps), desc="vae decoder refine"):
        rng = np.random.default_rng([seed, _STREAM, step])
        idx = rng.choice(len(pool.images), batch_size, replace=False)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x = pool.pixels(idx).to(device)
        with autocast or contextlib.nullcontext():
            with torch.no_grad():
                z = vae.encode(x).latent_dist.sample(generator=gen)
            rec = vae.decode(z).sample.float()
        loss = speck_loss(rec, x, hinge_weight, threshold)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            log.write(
                {"global_step": log_offset + step + 1, "phase": "refine", "loss": loss.item()}
            )
        if timer is not None:
            timer.step()
    vae.requires_grad_(False)
    return vae.eval()

"""The two training stages of the method, one micro-batch at a time.

Stage 1, ``GCAStage`` (GAN-based CLIP alignment): the graph encoder's global vector,
mapped to CLIP space by ``GraphToClipProjection``, is the generator's output; the CLIP
image embeddings of the training images are the real samples. Non-saturating GAN, plus
optional MMD and CLIP-distance terms on the projected vectors.

Stage 2, ``FinetuneStage``: UNet, graph encoder, conditioner and projection trained with
L = lambda * L_recon + (1 - lambda) * (beta * L_clip + (1 - beta) * L_mmd). A layout model
also trains its layout encoder here, the UNet reading the map of the data's true boxes.

``LayoutStage`` (layout models, run first): the layout generator learns the boxes from the
graphs alone (rectified-flow or L1 loss, models/layout.py).

Randomness that shapes a loss (latent sample, noise, timestep, conditioning dropout) comes
from one generator per example (see loop.example_generators), so how a batch is sharded
over processes does not change it. Batch-level losses (MMD) are computed on the batch
gathered from all processes, so they do not change either.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from torch import nn

from sg2image.graph import DEPTH_PREDICATES, pack_graphs
from sg2image.models.alignment import (
    clip_alignment_loss,
    discriminator_loss,
    generator_loss,
    mmd_loss,
)
from sg2image.pipeline import build_context, build_layout_map
from sg2image.training.config import make_dataset
from sg2image.training.localisation import (
    dense_boxes,
    localisation_loss,
    recording_cross_attention,
)

# Optimizers here are fused (fused=True): one kernel for every parameter, the same update
# up to rounding; +6-12% samples/s on the Shapes base UNet on a 2-core CPU
# (benchmarks/train_throughput.py) and fewer kernel launches on a GPU.

# OpenAI CLIP's normalisation, used when the CLIP folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@torch.no_grad()
def clip_image_embeds(clip_vision, pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """pixels (B, 3, H, W) in [-1, 1] -> CLIP image_embeds (B, clip_dim), preprocessed like
    CLIPImageProcessor does for square images: resize (bicubic) to the model's size,
    mean/std normalisation."""
    size = clip_vision.config.image_size
    x = (pixels.float() + 1) / 2
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    x = ((x.clamp(0, 1) - m) / s).to(clip_vision.dtype)
    return clip_vision(pixel_values=x).image_embeds.float()


class EncodingCache:
    """Outputs of the frozen encoders per dataset example, computed on first use.

    Exact only because an example's pixels never change (no random augmentation) and the
    encoders are frozen; with ``enabled=False`` every call computes.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.store: dict[tuple[str, int], tuple[torch.Tensor, ...]] = {}

    def get(self, kind: str, indices: list[int], pixels: torch.Tensor, encode):
        """``encode(pixels) -> tuple of (B, ...) tensors`` for the examples ``indices``."""
        if not self.enabled:
            return encode(pixels)
        missing = [j for j, i in enumerate(indices) if (kind, i) not in self.store]
        if missing:
            fresh = encode(pixels[missing])
            for row, j in enumerate(missing):
                self.store[(kind, indices[j])] = tuple(t[row] for t in fresh)
        rows = [self.store[(kind, i)] for i in indices]
        return tuple(torch.stack(column) for column in zip(*rows, strict=True))


def collate(items: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "graphs": [it["graph"] for it in items],
        "index": [int(it["index"]) for it in items],
    }


@torch.no_grad()
def alignment_metrics(parts, dataset, bandwidths=(10.0, 15.0, 20.0, 50.0), batch_size=16):
    """Held-out distance between projected graph vectors and CLIP image embeddings: the MMD
    over the whole set and the mean L2 distance of matching pairs. Lower is better."""
    enc, graph_vecs, image_vecs = parts.pipe.graph_encoder, [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        global_vec = enc.encode(pack_graphs(batch["graphs"], parts.vocab)).global_vec
        graph_vecs.append(parts.projection(global_vec).float())
        pixels = batch["pixel_values"].to(enc.device)
        image_vecs.append(clip_image_embeds(parts.clip_vision, pixels, *parts.clip_norm))
    x, y = torch.cat(graph_vecs), torch.cat(image_vecs)
    l2 = (x - y).norm(dim=1).mean()
    return {"val_mmd": mmd_loss(x, y, bandwidths).item(), "val_l2": l2.item()}


class _GatherKeepGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the gradient, times the world
    size: every rank computes the same global loss, and DDP then averages the gradients over
    the ranks, so the world-size factor makes the result the gradient of that global loss."""

    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n] * ctx.world


def alignment_terms(cfg, accelerator, graph_clip, image_clip) -> dict[str, torch.Tensor]:
    """The enabled alignment losses: "clip" (per example, a mean over the local shard, which
    DDP's gradient average turns into the global mean) and "mmd" (over the global batch)."""
    terms = {}
    graph_clip = graph_clip.float()
    if cfg.use_clip_loss:
        terms["clip"] = clip_alignment_loss(graph_clip, image_clip, cfg.clip_loss_kind)
    if cfg.use_mmd:
        if accelerator.num_processes > 1:
            graph_clip = _GatherKeepGrad.apply(graph_clip)
            image_clip = accelerator.gather(image_clip)
        terms["mmd"] = mmd_loss(graph_clip, image_clip, cfg.mmd_bandwidths)
    return terms


def image_embeds(parts, batch: dict) -> tuple[torch.Tensor]:
    """(CLIP image embeddings (B, clip_dim),) of a batch's images, through the run's cache."""

    def encode(pixels):
        return (clip_image_embeds(parts.clip_vision, pixels, *parts.clip_norm),)

    return parts.cache.get("clip", batch["index"], batch["pixel_values"], encode)


class GraphToClip(nn.Module):
    """The GCA generator: graphs -> encoder global vector -> CLIP space (B, clip_dim)."""

    def __init__(self, graph_encoder, projection, vocab):
        super().__init__()
        self.graph_encoder, self.projection, self.vocab = graph_encoder, projection, vocab

    def forward(self, graphs):
        batch = pack_graphs(graphs, self.vocab)
        return self.projection(self.graph_encoder.encode(batch).global_vec)


class GCAStage:
    """Alternating D and G updates per micro-batch (paper: Adam 2e-4, betas (0.5, 0.999))."""

    name = "gca"

    def __init__(self, cfg, parts, accelerator, total_steps: int):
        self.cfg, self.parts, self.accelerator = cfg, parts, accelerator
        self.stage_cfg, self.total_steps = cfg.gca, total_steps
        gen = GraphToClip(parts.pipe.graph_encoder, parts.projection, parts.vocab)
        disc = parts.discriminator
        gen.train(), disc.train()
        adam = dict(lr=cfg.gca.lr, betas=tuple(cfg.gca.betas), fused=True)
        opt_g = torch.optim.Adam(gen.parameters(), **adam)
        opt_d = torch.optim.Adam(disc.parameters(), **adam)
        self.gen, self.disc, self.opt_g, self.opt_d = accelerator.prepare(gen, disc, opt_g, opt_d)
        # D scored for the generator's loss without its DDP wrapper: D must get no gradient
        # from that loss, and a DDP forward would then wait for one.
        self.disc_raw = disc

    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def evaluate(self) -> list[dict]:
        """End of stage: the alignment on held-out examples (logged as an "eval" row)."""
        val, batch = make_dataset(self.cfg, "val"), self.stage_cfg.batch_size
        return [alignment_metrics(self.parts, val, self.cfg.mmd_bandwidths, batch)]

    def train_step(self, batch: dict, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        cfg, acc, parts, logs = self.cfg, self.accelerator, self.parts, {}
        (real,) = image_embeds(parts, batch)
        with acc.accumulate(self.gen, self.disc):
            fake = self.gen(batch["graphs"])
            g_loss = fake.new_zeros(())
            if cfg.use_gca:
                # Real and fake scored in one call: they share BatchNorm statistics (see
                # GCADiscriminator); fake detached, so this loss trains D only.
                real_logits, fake_logits = self.disc(real, fake.detach())
                d_loss = discriminator_loss(real_logits.float(), fake_logits.float())
                acc.backward(d_loss)
                self.opt_d.step()
                self.opt_d.zero_grad()
                _, fake_logits = self.disc_raw(real, fake)
                g_adv = generator_loss(fake_logits.float())
                g_loss = g_loss + g_adv
                d_real, d_fake = (
                    torch.sigmoid(real_logits).mean(),
                    torch.sigmoid(fake_logits).mean(),
                )
                logs.update(d_loss=d_loss, g_loss=g_adv, d_real=d_real, d_fake=d_fake)
            terms = alignment_terms(cfg, acc, fake, real)
            weights = {"clip": self.stage_cfg.clip_weight, "mmd": self.stage_cfg.mmd_weight}
            for key, value in terms.items():
                g_loss = g_loss + weights[key] * value
            logs.update(terms)
            # inputs=: the generator's parameters only (D's grads stay those of d_loss).
            acc.backward(g_loss, inputs=[p for p in self.gen.parameters() if p.requires_grad])
            self.opt_g.step()
            self.opt_g.zero_grad()
        return {k: v.detach().float() for k, v in logs.items()}


class Denoiser(nn.Module):
    """Everything stage 2 trains, as one module, so accelerate/DDP see one model whose
    forward runs every trained parameter: the context comes from ``build_context``, the
    function the pipeline samples with."""

    def __init__(self, pipe, projection, with_projection: bool, localise: bool = False):
        super().__init__()
        self.unet, self.graph_encoder = pipe.unet, pipe.graph_encoder
        self.conditioner, self.projection = pipe.conditioner, projection
        self.layout_encoder = pipe.layout_encoder  # None for the paper's layout-free model
        self.with_projection = with_projection
        self.localise = localise  # record the object tokens' attention for its loss
        self.pipe = pipe  # not an nn.Module: the frozen text encoder is not registered here

    def forward(self, noisy, timesteps, graphs, drop):
        ctx = build_context(self.pipe, graphs, drop, true_boxes=True)
        if self.layout_encoder is not None:  # trained on the true boxes; sampled on any
            batch = pack_graphs(graphs, self.pipe.vocab)
            if batch.boxes is None:
                raise ValueError("a layout model trains on graphs with boxes; this data has none")
            layout = build_layout_map(self.pipe, batch, batch.boxes, noisy.shape[-2:], drop=drop)
            noisy = torch.cat([noisy, layout.to(noisy.dtype)], 1)
        else:  # a layout-free model: its position grid, the pipeline's, if it has one
            grid = self.pipe.layout_map(None, False, noisy.shape[-2:], len(noisy))
            if grid is not None:
                noisy = torch.cat([noisy, grid.to(noisy)], 1)
        aux = {}  # the auxiliary losses this model has, by name
        with contextlib.ExitStack() as stack:
            if self.localise:
                columns = self.conditioner.object_columns(ctx.context.shape[1])
                maps = stack.enter_context(recording_cross_attention(self.unet, columns))
            pred = self.unet(
                noisy, timesteps, encoder_hidden_states=ctx.context, encoder_attention_mask=ctx.mask
            ).sample
        if self.localise:
            boxes, ranks = dense_boxes(graphs, columns.stop - columns.start)
            aux["localise"] = localisation_loss(
                maps, boxes.to(pred.device), ctx.mask[:, columns], ranks.to(pred.device)
            )
        # Returned only when a loss uses it: DDP expects a gradient for whatever it returns.
        graph_clip = self.projection(ctx.global_vec) if self.with_projection else None
        if ctx.boxes is not None:
            if ctx.target_boxes is None:
                raise ValueError("a box-token model trains on graphs with boxes; these have none")
            aux["box"] = F.l1_loss(ctx.boxes.float(), ctx.target_boxes.float())
        return pred, graph_clip, aux


def depth_overlap_weights(graphs, size: tuple[int, int], extra: float) -> torch.Tensor:
    """(B, 1, H, W) loss weights: 1, and 1 + ``extra`` on the latent pixels where the boxes
    of a depth triple's two objects overlap (about where the oracle judges front from back).
    Graphs without boxes or depth triples weigh 1 everywhere."""
    h, w = size
    weights = torch.ones(len(graphs), 1, h, w)
    for i, g in enumerate(graphs):
        if g.boxes is None:
            continue
        for s, p, o in g.relationships:
            if p not in DEPTH_PREDICATES:
                continue
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = g.boxes[s], g.boxes[o]
            x0, y0 = math.floor(max(ax0, bx0) * w), math.floor(max(ay0, by0) * h)
            x1, y1 = math.ceil(min(ax1, bx1) * w), math.ceil(min(ay1, by1) * h)
            if x1 > x0 and y1 > y0:
                weights[i, 0, y0:y1, x0:x1] = 1 + extra
    return weights


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None):
    """Mean squared error, each pixel's term times its weight, over the weights' sum (so
    that weights of 1 everywhere give F.mse_loss)."""
    if weights is None:
        return F.mse_loss(pred, target)
    weights = weights.to(pred.device, pred.dtype).expand_as(pred)
    return ((pred - target) ** 2 * weights).sum() / weights.sum()


def align_weights(cfg) -> dict[str, float]:
    """Weights of the terms inside L_align. With one term off the other takes all of
    L_align: use_mmd=false gives the authors' VG recipe 0.7 * recon + 0.3 * clip."""
    both, beta = cfg.use_clip_loss and cfg.use_mmd, cfg.finetune.beta_clip
    return {"clip": beta if both else 1.0, "mmd": 1 - beta if both else 1.0}


def _randn(generators, shape, device) -> torch.Tensor:
    """(B, *shape) normal draws, row i from generator i."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


@torch.no_grad()
def training_latents(parts, batch: dict, generators) -> torch.Tensor:
    """The batch's latents as the UNet is trained on them: SD's sample of the VAE posterior,
    scaled (the posterior through the run's cache; its draw from each example's generator),
    or the pixels for a pixel-space base."""
    vae, pixels = parts.pipe.vae, batch["pixel_values"]
    if vae is None:
        return pixels.float()

    def encode(x):
        dist_ = vae.encode(x.to(vae.dtype)).latent_dist
        return dist_.mean, dist_.std

    mean, std = parts.cache.get("latent", batch["index"], pixels, encode)
    eps = _randn(generators, mean.shape[1:], pixels.device).to(mean.dtype)
    return (mean + std * eps).float() * vae.config.scaling_factor


class FinetuneStage:
    """AdamW (paper: lr 5e-6, weight decay 1e-2, grad-norm clip 1.0); VAE, text encoder and
    CLIP vision frozen."""

    name = "finetune"

    def __init__(self, cfg, parts, accelerator, total_steps: int):
        self.cfg, self.parts, self.accelerator = cfg, parts, accelerator
        sc = self.stage_cfg = cfg.finetune
        self.total_steps = total_steps
        self.align = cfg.use_clip_loss or cfg.use_mmd
        self.step = 0  # optimizer steps done in this stage (set by the loop, resumes included)
        model = Denoiser(parts.pipe, parts.projection, self.align, sc.localises)
        model.train()
        unet_ids = {id(p) for p in model.unet.parameters()}
        others = [p for p in model.parameters() if id(p) not in unet_ids]
        groups = [
            {"params": list(model.unet.parameters()), "lr": sc.lr},
            {"params": others, "lr": sc.graph_lr or sc.lr},
        ]
        opt = torch.optim.AdamW(
            groups, betas=tuple(sc.betas), weight_decay=sc.weight_decay, fused=True
        )
        warmup, steps = sc.lr_warmup_steps, total_steps
        sched = get_scheduler(
            sc.lr_scheduler, opt, num_warmup_steps=warmup, num_training_steps=steps
        )
        self.model, self.opt, self.sched = accelerator.prepare(model, opt, sched)

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def evaluate(self) -> list[dict]:
        return []  # sample-quality metrics belong to the benchmarks (FID, oracle), not here

    @torch.no_grad()
    def _targets(self, batch, generators):
        """Latents, noisy latents, timesteps, targets and drop flags; each example's draws
        come from its own generator, in a fixed order."""
        noise_sched = self.parts.noise_scheduler
        pixels = batch["pixel_values"]
        latents = training_latents(self.parts, batch, generators)
        noise = _randn(generators, latents.shape[1:], pixels.device)
        steps = noise_sched.config.num_train_timesteps
        t = torch.cat([torch.randint(0, steps, (1,), generator=g) for g in generators])
        u = torch.cat([torch.rand(1, generator=g) for g in generators])
        t, drop = t.to(pixels.device), (u < self.stage_cfg.cond_dropout).to(pixels.device)
        noisy = noise_sched.add_noise(latents, noise, t)
        kind = noise_sched.config.prediction_type  # what the base UNet was trained to predict
        if kind == "v_prediction":
            return noisy, t, noise_sched.get_velocity(latents, noise, t), drop
        if kind not in ("epsilon", "sample"):
            raise ValueError(f"scheduler prediction_type {kind!r} is not supported")
        return noisy, t, noise if kind == "epsilon" else latents, drop

    def train_step(self, batch: dict, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        cfg, sc, acc, parts = self.cfg, self.stage_cfg, self.accelerator, self.parts
        noisy, t, target, drop = self._targets(batch, generators)
        if self.align:
            (image_clip,) = image_embeds(parts, batch)
        with acc.accumulate(self.model):
            pred, graph_clip, aux = self.model(noisy, t, batch["graphs"], drop)
            weights = None
            if sc.overlap_weight:
                weights = depth_overlap_weights(batch["graphs"], pred.shape[-2:], sc.overlap_weight)
            recon = weighted_mse(pred.float(), target.float(), weights)
            logs = {"recon": recon}
            loss = sc.lambda_recon * recon
            aux_weights = {"box": sc.box_weight, "localise": sc.localise_weight_at(self.step)}
            for name, value in aux.items():  # box regression, attention localisation
                loss = loss + aux_weights[name] * value
                logs[name] = value
            if self.align:
                terms = alignment_terms(cfg, acc, graph_clip, image_clip)
                weights = align_weights(cfg)
                loss = loss + (1 - sc.lambda_recon) * sum(weights[k] * v for k, v in terms.items())
                logs.update(terms)
            acc.backward(loss)
            if acc.sync_gradients:
                logs["grad_norm"] = acc.clip_grad_norm_(self.model.parameters(), sc.max_grad_norm)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad()
        logs["loss"] = loss
        return {k: v.detach().float() for k, v in logs.items()}


class LayoutStage:
    """The layout generator alone, on graphs with boxes (AdamW, cosine by default)."""

    name = "layout"

    def __init__(self, cfg, parts, accelerator, total_steps: int):
        self.cfg, self.parts, self.accelerator = cfg, parts, accelerator
        sc = self.stage_cfg = cfg.layout
        self.total_steps = total_steps
        model = parts.pipe.layout_generator
        model.train()
        opt = torch.optim.AdamW(
            model.parameters(), lr=sc.lr, weight_decay=sc.weight_decay, fused=True
        )
        sched = get_scheduler(
            sc.lr_scheduler,
            opt,
            num_warmup_steps=sc.lr_warmup_steps,
            num_training_steps=total_steps,
        )
        self.model, self.opt, self.sched = accelerator.prepare(model, opt, sched)
        self.raw = model

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def evaluate(self) -> list[dict]:
        """Relation accuracy and overlap of sampled boxes on held-out graphs (logged)."""
        from sg2image.eval.layout import layout_report
        from sg2image.sampling import graph_at

        val = make_dataset(self.cfg, "val")
        graphs = [graph_at(val, i) for i in range(len(val))]
        self.raw.eval()
        report = layout_report(self.raw, graphs, self.parts.vocab, seed=self.cfg.seed)
        self.raw.train()
        return [report]

    def train_step(self, batch: dict, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        acc, sc = self.accelerator, self.stage_cfg
        graphs = batch["graphs"]
        packed = pack_graphs(graphs, self.parts.vocab)
        dims = self.raw.config.box_dims
        # Per graph, its objects' (and image node's) noise and times, from its own generator.
        noise = torch.cat(
            [
                torch.randn(len(g.objects) + 1, dims, generator=r)
                for g, r in zip(graphs, generators, strict=True)
            ]
        )
        t = torch.cat(
            [
                torch.rand(len(g.objects) + 1, generator=r)
                for g, r in zip(graphs, generators, strict=True)
            ]
        )
        with acc.accumulate(self.model):
            loss = self.model.loss(packed, noise.to(acc.device), t.to(acc.device))
            acc.backward(loss)
            logs = {"loss": loss}
            if acc.sync_gradients:
                logs["grad_norm"] = acc.clip_grad_norm_(self.model.parameters(), sc.max_grad_norm)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad()
        return {k: v.detach().float() for k, v in logs.items()}

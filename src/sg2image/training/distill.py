"""The distill stage: a few-step student of the fine-tuned model, by latent consistency
distillation with the guidance folded in (LCM, Luo et al. 2023, arXiv 2310.04378).

The student starts as a copy of the fine-tuned UNet (same widened ``conv_in``, same
context: the layout map and label + graph tokens). Per example, with a skipping schedule of
``solver_steps`` of the teacher's timesteps (k = 1000 / 50 = 20 by default):

    x_t     = noised training latent at a grid timestep t
    x_prev  = one DDIM step of the teacher from t to t - k, on its guided prediction
              uncond + w * (cond - uncond), both branches built as the pipeline builds them
              (the unconditional one: empty caption, null graph token, zero layout map)
    loss    = d(f_student(x_t, t), f_target(x_prev, t - k)),   f = c_skip x + c_out x0_pred

where the target network is an EMA of the student and (c_skip, c_out) are LCM's boundary
conditions, which make f the identity at t = 0. The student is then sampled by diffusers'
LCMScheduler (same noise schedule, ``original_inference_steps`` = ``solver_steps``,
``timestep_scaling``) on the conditional branch only: N steps = N UNet evaluations.

The graph encoder, conditioner, layout encoder and teacher UNet are frozen here; the
student is the only trained part, and its EMA target is saved with it in the checkpoints.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers import LCMScheduler
from diffusers.optimization import get_scheduler
from torch import nn

from sg2image.pipeline import build_context, build_layout_map, lcm_scheduler
from sg2image.training.stages import training_latents

SIGMA_DATA = 0.5  # LCM's boundary conditions (and LCMScheduler's)


def boundary_scalings(t: torch.Tensor, timestep_scaling: float) -> tuple[torch.Tensor, ...]:
    """LCM's (c_skip, c_out) at integer timesteps ``t`` (B,), as LCMScheduler computes them
    when sampling: c_skip(0) = 1, c_out(0) = 0."""
    scaled = t.float() * timestep_scaling
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def to_x0_eps(pred, x, alpha, sigma, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prediction ``pred`` at x = alpha x0 + sigma eps as (x0, eps)."""
    if kind == "v_prediction":
        return alpha * x - sigma * pred, sigma * x + alpha * pred
    if kind == "epsilon":
        return (x - sigma * pred) / alpha, pred
    if kind == "sample":
        return pred, (x - alpha * pred) / sigma
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported")


def student_scheduler(teacher_config, dc) -> LCMScheduler:
    """The LCMScheduler that samples a student distilled with DistillConfig ``dc``: the
    teacher's noise schedule and prediction type, the solver's grid and boundary scaling."""
    return lcm_scheduler(teacher_config, dc.solver_steps, dc.timestep_scaling)


class Distiller(nn.Module):
    """What the distill stage holds, as one module so that its checkpoints keep all of it:
    the trained ``student``, its EMA ``target`` and the frozen teacher parts (a resume after
    the fine-tuning stage gets the fine-tuned weights back from here). ``forward`` runs the
    student only (the one part with gradients, which DDP wraps)."""

    def __init__(self, pipe):
        super().__init__()
        self.student = copy.deepcopy(pipe.unet).requires_grad_(True)
        self.target = copy.deepcopy(pipe.unet).requires_grad_(False)
        self.teacher, self.graph_encoder = pipe.unet, pipe.graph_encoder
        self.conditioner, self.layout_encoder = pipe.conditioner, pipe.layout_encoder
        for frozen in (self.teacher, self.graph_encoder, self.conditioner, self.layout_encoder):
            if frozen is not None:
                frozen.requires_grad_(False).eval()

    def forward(self, x, t, context, mask):
        return self.student(x, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample

    @torch.no_grad()
    def update_target(self, decay: float) -> None:
        for tgt, src in zip(self.target.parameters(), self.student.parameters(), strict=True):
            tgt.lerp_(src.detach(), 1 - decay)


class DistillStage:
    """AdamW on the student; teacher, encoders and VAE frozen."""

    name = "distill"

    def __init__(self, cfg, parts, accelerator, total_steps: int):
        self.cfg, self.parts, self.accelerator = cfg, parts, accelerator
        dc = self.stage_cfg = cfg.distill
        self.total_steps = total_steps
        pipe, noise = parts.pipe, parts.noise_scheduler
        steps = noise.config.num_train_timesteps
        if steps % dc.solver_steps:
            raise ValueError(
                f"distill.solver_steps: {dc.solver_steps} does not divide the teacher's "
                f"{steps} training timesteps"
            )
        self.k = steps // dc.solver_steps
        self.kind = noise.config.prediction_type
        # LCM's grid: t_n = (n + 1) k - 1, n < solver_steps; the solver goes from t_n to t_n - k.
        self.grid = torch.arange(1, dc.solver_steps + 1) * self.k - 1
        if dc.max_timestep is not None:
            self.grid = self.grid[self.grid <= dc.max_timestep]
            if not len(self.grid):
                raise ValueError(
                    f"distill.max_timestep: {dc.max_timestep} is below the first grid timestep "
                    f"{self.k - 1}"
                )
        self.alphas = noise.alphas_cumprod.float()
        raw = Distiller(pipe)
        raw.student.train()
        opt = torch.optim.AdamW(
            raw.student.parameters(), lr=dc.lr, betas=tuple(dc.betas),
            weight_decay=dc.weight_decay, fused=True,
        )  # fmt: skip
        warmup = dc.lr_warmup_steps
        sched = get_scheduler(
            dc.lr_scheduler, opt, num_warmup_steps=warmup, num_training_steps=total_steps
        )
        self.model, self.opt, self.sched = accelerator.prepare(raw, opt, sched)
        self.raw = raw
        # In the pipeline from the start, so every export (and a resume's) carries the student.
        lcm = student_scheduler(pipe.scheduler.config, dc)
        pipe.set_student(
            raw.student, lcm, dc.sample_steps, dc.guidance_scale, dc.student_default,
            dc.max_timestep,
        )  # fmt: skip
        pipe.student_timesteps(dc.sample_steps)  # a finisher too short for its steps fails here

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def evaluate(self) -> list[dict]:
        return []  # sample quality belongs to the benchmarks (oracle, FID), not here

    def _coefficients(self, t: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) (B, 1, 1, 1) of timesteps ``t``; t < 0 is the clean end (t = 0's)."""
        a = self.alphas[t.clamp(min=0).cpu()].to(device)
        return a.sqrt().view(-1, 1, 1, 1), (1 - a).sqrt().view(-1, 1, 1, 1)

    @torch.no_grad()
    def _inputs(self, batch, generators):
        """x_t, t, t_prev, the cond and guided-teacher inputs; per-example draws from each
        example's generator, in a fixed order."""
        pipe, dc = self.parts.pipe, self.stage_cfg
        latents = training_latents(self.parts, batch, generators)
        device = latents.device
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
        n = torch.cat([torch.randint(0, len(self.grid), (1,), generator=g) for g in generators])
        t = self.grid[n].to(device)
        t_prev = (t - self.k).clamp(min=0)
        alpha, sigma = self._coefficients(t, device)
        x_t = alpha * latents + sigma * noise.to(device, latents.dtype)
        graphs = batch["graphs"]
        b = len(graphs)
        # Both branches as the pipeline's CFG builds them: unconditional half first.
        drop = torch.tensor([True] * b + [False] * b)
        ctx = build_context(pipe, [*graphs, *graphs], drop=drop)
        layout = None
        if pipe.layout_encoder is not None:
            # predicted boxes: their noise from each example's generator, after its draws above
            packed, boxes = pipe.prepare_layout(graphs, dc.boxes, generators)
            if boxes is None:  # "given" on data without boxes
                raise ValueError("a layout model distils on graphs with boxes; this data has none")
            layout = build_layout_map(pipe, packed, boxes, x_t.shape[-2:], do_cfg=True)
        else:  # the position grid of a layout-free model that has one, else None
            layout = pipe.layout_map(None, True, x_t.shape[-2:], b)
        return x_t, t, t_prev, ctx.context, ctx.mask, layout

    def _unet_input(self, x, layout):
        return x if layout is None else torch.cat([x, layout.to(x.dtype)], 1)

    @staticmethod
    def _cond_half(context, mask, layout, b: int):
        """The conditional branch (second half) of the CFG inputs: what student and target
        read."""
        half = [None if x is None else x[b:] for x in (mask, layout)]
        return context[b:], *half

    def _consistency(self, x, x0, t):
        """f = c_skip(t) x + c_out(t) x0, LCM's parametrisation (the identity at t = 0)."""
        c_skip, c_out = boundary_scalings(t, self.stage_cfg.timestep_scaling)
        return c_skip.view(-1, 1, 1, 1) * x + c_out.view(-1, 1, 1, 1) * x0

    @torch.no_grad()
    def _target(self, x_t, t, t_prev, context, mask, layout):
        """f_target(x_prev, t_prev), x_prev being the teacher's guided DDIM step from x_t."""
        dc, raw, b = self.stage_cfg, self.raw, x_t.shape[0]
        device = x_t.device
        alpha, sigma = self._coefficients(t, device)
        both = self._unet_input(torch.cat([x_t, x_t]), layout)
        with self.accelerator.autocast():
            v = raw.teacher(
                both, torch.cat([t, t]), encoder_hidden_states=context, encoder_attention_mask=mask
            ).sample.float()
        uncond, cond = v.chunk(2)
        guided = uncond + dc.guidance_scale * (cond - uncond)
        x0, eps = to_x0_eps(guided, x_t, alpha, sigma, self.kind)
        # To t - k; from the first grid point (t = k - 1) to t = 0's alpha, as LCM's solver.
        a_prev, s_prev = self._coefficients(t_prev, device)
        x_prev = a_prev * x0 + s_prev * eps
        cond_ctx, cond_mask, cond_layout = self._cond_half(context, mask, layout, b)
        with self.accelerator.autocast():
            v_tgt = raw.target(
                self._unet_input(x_prev, cond_layout), t_prev,
                encoder_hidden_states=cond_ctx, encoder_attention_mask=cond_mask,
            ).sample.float()  # fmt: skip
        x0_tgt, _ = to_x0_eps(v_tgt, x_prev, a_prev, s_prev, self.kind)
        return self._consistency(x_prev, x0_tgt, t_prev)

    def train_step(self, batch: dict, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        dc, acc = self.stage_cfg, self.accelerator
        x_t, t, t_prev, context, mask, layout = self._inputs(batch, generators)
        target = self._target(x_t, t, t_prev, context, mask, layout)
        cond_ctx, cond_mask, cond_layout = self._cond_half(context, mask, layout, x_t.shape[0])
        alpha, sigma = self._coefficients(t, x_t.device)
        with acc.accumulate(self.model):
            pred = self.model(self._unet_input(x_t, cond_layout), t, cond_ctx, cond_mask)
            x0, _ = to_x0_eps(pred.float(), x_t, alpha, sigma, self.kind)
            f = self._consistency(x_t, x0, t)
            if dc.loss == "huber":
                loss = (torch.sqrt((f - target) ** 2 + dc.huber_c**2) - dc.huber_c).mean()
            else:
                loss = F.mse_loss(f, target)
            acc.backward(loss)
            logs = {"loss": loss}
            if acc.sync_gradients:
                params = self.raw.student.parameters()
                logs["grad_norm"] = acc.clip_grad_norm_(params, dc.max_grad_norm)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad()
            if acc.sync_gradients:
                self.raw.update_target(dc.ema_decay)
        return {k: v.detach().float() for k, v in logs.items()}

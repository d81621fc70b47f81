"""`SceneGraphPipeline`: scene graphs -> images with a graph-conditioned diffusion model.

    graphs --(1) check--> SceneGraph list --(2) encode--> context (label + graph tokens)
           --(3) layout--> boxes (given or sampled) -> layout map (layout models only)
           --(4) latents--> noise --(5) denoise (CFG)--> latents --(6) decode--> images

Any base in the Stable Diffusion 1.x folder layout works (unet, vae, text_encoder,
tokenizer, scheduler); ``vae=None`` is a pixel-space base. The folder written by
``save_pretrained`` adds ``graph_encoder/`` and ``conditioner/``; the vocabulary is in
``model_index.json``. A layout model (:mod:`sg2image.models.layout`) also has
``layout_generator/`` (graph -> boxes) and ``layout_encoder/`` (boxes -> the map its UNet's
widened ``conv_in`` reads); without them it is the paper's layout-free model.

Three samplers. "full": the fine-tuned UNet with CFG and the pipeline's scheduler (20
DPM-Solver++ steps, guidance 2). "finish" (layout models with a ``finish_timestep``, their
default): a draft from pure noise, noised again to that timestep, then the UNet's guided
estimate there; the draft is a finisher student's 2 steps where the model asks for it
(``finish_draft="student"``, the shipped model: 4 UNet evaluations), else the UNet's own
unguided clean-image estimate (3). "fast": a distilled few-step
student (``student_unet/`` with its ``student_scheduler/``, an LCMScheduler;
training/distill.py), the teacher's guidance folded in, one evaluation a step; the default
of a model whose student is made its default. A call with steps or guidance and no sampler
gets "full".
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from sg2image.graph import (
    GraphBatch,
    SceneGraph,
    Vocab,
    label_prompt,
    pack_graphs,
    parse_graphs,
)
from sg2image.models.base import vae_downsampling
from sg2image.models.conditioning import GraphConditioner, encode_prompts
from sg2image.models.graph_encoder import SceneGraphEncoder
from sg2image.models.layout import (
    LayoutEncoder,
    LayoutGenerator,
    instance_index,
    refine_boxes,
    widen_conv_in,
)

LAYOUT_MODES = ("predicted", "given")
# "fast": the distilled student (LCMScheduler, guidance folded in, no CFG); "finish" (layout
# models): a draft, then one guided step of the fine-tuned UNet at a low timestep; the draft
# is the student's two steps where the model says so (finish_draft="student", 4 UNet
# evaluations), else the fine-tuned UNet's own unguided step (3); "full": the fine-tuned UNet
# with classifier-free guidance and the pipeline's scheduler.
SAMPLERS = ("fast", "finish", "full")
FULL_STEPS, FULL_GUIDANCE = 20, 2.0  # the full sampler's defaults


def lcm_scheduler(
    config, original_steps: int = 50, timestep_scaling: float = 10.0
) -> LCMScheduler:
    """An LCMScheduler on the noise schedule and prediction type of scheduler ``config``
    (its other keys dropped: LCMScheduler would warn of them), over a grid of
    ``original_steps`` of the training timesteps; no clipping or thresholding."""
    accepted = inspect.signature(LCMScheduler.__init__).parameters
    shared = {k: v for k, v in config.items() if k in accepted}
    return LCMScheduler.from_config(
        shared, original_inference_steps=original_steps, timestep_scaling=timestep_scaling,
        clip_sample=False, thresholding=False,
    )  # fmt: skip


def student_timesteps(
    steps: int, max_timestep: int | None, num_train_timesteps: int, original_steps: int
) -> list[int] | None:
    """A student's timesteps for ``steps`` steps; None: LCM's even spacing over its grid of
    ``original_steps`` (a student distilled on the whole grid).

    A student distilled only at timesteps <= ``max_timestep`` (e.g. 59) is a finisher: its
    first step, from pure noise at the top of the schedule, is close to the clean-image
    estimate of the fine-tuned UNet it was copied from (a layout map fixes the scene there),
    and the rest are the low timesteps it learnt, where the teacher's guidance sharpens
    small shapes: 2 steps -> [999, 59], 3 -> [999, 59, 19], 4 -> [999, 59, 39, 19].
    ValueError when ``steps`` exceeds what it learnt."""
    if max_timestep is None:
        return None
    k = num_train_timesteps // original_steps
    learnt = list(range(k - 1, max_timestep + 1, k))[::-1]  # descending: [59, 39, 19]
    if steps - 1 > len(learnt):
        raise ValueError(
            f"num_inference_steps: {steps}; this student learnt {len(learnt)} timesteps "
            f"(<= {max_timestep}) and takes at most {len(learnt) + 1} steps"
        )
    picks = np.linspace(0, len(learnt) - 1, steps - 1).round().astype(int) if steps > 1 else []
    return [num_train_timesteps - 1] + [learnt[i] for i in picks]

# Names a user can pick with --scheduler. "lms" with 100 steps is the paper's sampler.
SCHEDULERS = {
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "lms": LMSDiscreteScheduler,
    "euler": EulerDiscreteScheduler,
    "ddpm": DDPMScheduler,
}


@dataclass
class SceneGraphPipelineOutput(BaseOutput):
    """images: PIL images, or an array (B, H, W, 3) in [0, 1] for output_type="np", or a
    tensor (B, 3, H, W) in [-1, 1] for "pt"; graphs: the validated inputs; context: the
    conditional cross-attention context (B, L, D) that produced them; boxes: per image, the
    layout it was drawn from (one [x0, y0, x1, y1] in [0, 1] per object), None for a
    layout-free model."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    graphs: list[SceneGraph]
    context: torch.Tensor
    boxes: list[list[list[float]]] | None = None


class SceneGraphPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->graph_encoder->conditioner->unet->vae"
    _optional_components = [
        "vae",
        "layout_generator",
        "layout_encoder",
        "student_unet",
        "student_scheduler",
    ]

    def __init__(
        self,
        unet,
        scheduler,
        text_encoder,
        tokenizer,
        graph_encoder: SceneGraphEncoder,
        conditioner: GraphConditioner,
        vae=None,
        layout_generator: LayoutGenerator | None = None,
        layout_encoder: LayoutEncoder | None = None,
        student_unet=None,
        student_scheduler: LCMScheduler | None = None,
        object_names: Sequence[str] | None = None,
        predicate_names: Sequence[str] | None = None,
        max_objects: int | None = None,
        resolution: int | None = None,
        fast_steps: int | None = None,
        fast_guidance: float | None = None,
        fast_default: bool | None = None,
        fast_max_timestep: int | None = None,
        finish_timestep: int | None = None,
        finish_draft: str | None = None,
        position_grid: bool | None = None,
    ):
        super().__init__()
        if object_names is None or predicate_names is None:
            raise ValueError("SceneGraphPipeline needs the vocabulary (object and predicate names)")
        if finish_draft not in (None, "student", "teacher"):
            raise ValueError(f"finish_draft: {finish_draft!r} is not 'student' or 'teacher'")
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            graph_encoder=graph_encoder,
            conditioner=conditioner,
            vae=vae,
            layout_generator=layout_generator,
            layout_encoder=layout_encoder,
            student_unet=student_unet,
            student_scheduler=student_scheduler,
        )
        self.register_to_config(
            object_names=list(object_names),
            predicate_names=list(predicate_names),
            max_objects=max_objects,
            # The side, in pixels, the model was fine-tuned at: its default image size.
            # None: the UNet's own sample size (a base that was not fine-tuned here).
            resolution=resolution,
            # The student's default steps and the guidance scale folded into it (None
            # without a student).
            fast_steps=fast_steps,
            fast_guidance=fast_guidance,
            # Whether the student is the default sampler (False: sampled only when asked
            # for, e.g. a student that does not reach the full sampler's fidelity).
            fast_default=fast_default,
            # A student distilled only at timesteps <= this (a finisher, see
            # student_timesteps); None: on the whole LCM grid, sampled at LCM's spacing.
            fast_max_timestep=fast_max_timestep,
            # The "finish" sampler's second timestep (None: the model has no such sampler).
            # Set on layout models, whose map fixes the scene in the draft; chosen on the
            # val split (benchmarks/student_schedules.py).
            finish_timestep=finish_timestep,
            # Who drafts for the finish sampler: "student" (the distilled student's steps at
            # [999, fast_max_timestep], guidance folded in: its draft has the lower FID), or
            # "teacher" / None (the fine-tuned UNet's unguided estimate from pure noise).
            finish_draft=finish_draft,
            # A layout-free model whose UNet also reads two fixed channels, each pixel's x and
            # y (position_grid): so that a pixel's cross-attention query can know where it
            # is, and match position-aware graph tokens (conditioner.object_boxes).
            position_grid=position_grid,
        )
        self.vocab = Vocab(object_names, predicate_names)

    @property
    def has_student(self) -> bool:
        """True when the pipeline holds a distilled few-step student (the "fast" sampler)."""
        return self.student_unet is not None and self.student_scheduler is not None

    @property
    def fast_is_default(self) -> bool:
        """True when a call that names no sampler, steps or guidance gets the student."""
        return self.has_student and self.config.fast_default is not False

    def set_student(
        self,
        unet,
        scheduler: LCMScheduler,
        steps: int,
        guidance: float,
        default: bool = True,
        max_timestep: int | None = None,
    ) -> None:
        """Add (or replace) the distilled student: its UNet, its LCMScheduler, its default
        steps, the teacher's guidance scale it learnt, whether it is the default, and the
        highest timestep it was distilled at (None: all of them)."""
        self.register_modules(student_unet=unet, student_scheduler=scheduler)
        self.register_to_config(
            fast_steps=steps, fast_guidance=guidance, fast_default=default,
            fast_max_timestep=max_timestep,
        )  # fmt: skip

    def student_timesteps(self, steps: int) -> list[int] | None:
        """The student's timesteps for ``steps`` steps (:func:`student_timesteps`)."""
        cfg = self.student_scheduler.config
        return student_timesteps(
            steps, self.config.get("fast_max_timestep"), cfg.num_train_timesteps,
            cfg.original_inference_steps,
        )  # fmt: skip

    @property
    def has_finish(self) -> bool:
        """True when the "finish" sampler applies: a layout model with a finish timestep."""
        return self.has_layout and self.config.get("finish_timestep") is not None

    @property
    def finish_drafter(self) -> str:
        """Who drafts for the finish sampler: "student" when the model asks for it
        (``finish_draft``) and has a finisher student (one distilled at the low timesteps,
        ``fast_max_timestep``), else "teacher"."""
        wanted = self.config.get("finish_draft") == "student"
        finisher = self.has_student and self.config.get("fast_max_timestep") is not None
        return "student" if wanted and finisher else "teacher"

    def finish_schedule(self) -> list[int]:
        """The finish sampler's timesteps, its draft's then the guided step's: [999, 39]
        with the teacher's draft; [999, 59, 39] with a finisher student's."""
        last = self.scheduler.config.num_train_timesteps - 1
        draft = self.student_timesteps(2) if self.finish_drafter == "student" else None
        return (draft or [last]) + [self.config.finish_timestep]

    def finish_text(self) -> str:
        """What the finish sampler does, in a few words (CLI and server help)."""
        *draft, t = self.finish_schedule()
        evals = len(draft) + 2  # the guided step evaluates both CFG halves
        who = (f"the distilled student's {len(draft)}-step draft"
               if self.finish_drafter == "student" else "an unguided draft")  # fmt: skip
        return f"{who}, then one guided step at t={t} ({evals} UNet evaluations)"

    @property
    def default_sampler(self) -> str:
        """The sampler of a call that names none and gives no steps or guidance: the student
        when it is made the default, else "finish" where it applies, else "full"."""
        if self.fast_is_default:
            return "fast"
        return "finish" if self.has_finish else "full"

    def resolve_sampler(
        self, sampler: str | None, steps: int | None, guidance: float | None
    ) -> tuple[str, int, float]:
        """(sampler, steps, guidance) of a call. No sampler named: the default
        (:attr:`default_sampler`) when neither steps nor guidance is given, else "full".
        "fast" takes its steps (default: the student's) and no guidance (folded in);
        "finish" takes its own steps (:meth:`finish_schedule`) and the guidance of its
        finishing step (default 2); "full" defaults to 20 steps and guidance 2. ValueError
        naming the argument otherwise."""
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler: {sampler!r} is not one of {SAMPLERS}")
        if sampler is None:
            sampler = self.default_sampler if steps is None and guidance is None else "full"
        if sampler == "finish":
            if not self.has_finish:
                raise ValueError(
                    "sampler='finish': this model has no finish sampler (a layout model "
                    "with a finish_timestep); use 'full'"
                )
            own = len(self.finish_schedule())
            if steps not in (None, own):
                raise ValueError(f"num_inference_steps: {steps}; the finish sampler takes {own}")
            return sampler, own, FULL_GUIDANCE if guidance is None else guidance
        if sampler == "full":
            steps = FULL_STEPS if steps is None else steps
            return sampler, steps, FULL_GUIDANCE if guidance is None else guidance
        if not self.has_student:
            raise ValueError("sampler='fast': this model has no distilled student; use 'full'")
        if guidance is not None:
            raise ValueError(
                f"guidance_scale: the fast sampler has guidance {self.config.fast_guidance} "
                "built in and takes none; use sampler='full' to choose the guidance"
            )
        return sampler, self.config.fast_steps if steps is None else steps, 1.0

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return vae_downsampling(self.vae)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) of an image when the call names none: the training resolution."""
        side = self.config.resolution or self.unet.config.sample_size * self.vae_scale_factor
        return side, side

    def check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """The image size to sample at, (height, width) in pixels: each a positive multiple
        of the VAE's downsampling factor (ValueError naming it otherwise)."""
        default_h, default_w = self.default_size
        size = (default_h if height is None else height, default_w if width is None else width)
        f = self.vae_scale_factor
        for name, value in zip(("height", "width"), size, strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % f:
                raise ValueError(
                    f"{name} {value!r}: expected a positive multiple of {f} pixels "
                    f"(the VAE's downsampling factor); this model was trained at {default_h}"
                )
        return size

    @property
    def has_layout(self) -> bool:
        """True for a layout model (its UNet reads a layout map), False for the paper's."""
        return self.layout_encoder is not None

    @property
    def latent_channels(self) -> int:
        # Not in_channels: a layout model's UNet reads latents + map, and returns latents.
        return self.unet.config.out_channels

    def set_scheduler(self, name: str) -> None:
        """Swap the sampler by name (see SCHEDULERS), keeping the trained noise schedule."""
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler {name!r} unknown; choose one of {sorted(SCHEDULERS)}")
        self.scheduler = SCHEDULERS[name].from_config(self.scheduler.config)

    # -- (1) ------------------------------------------------------------------------------
    def check_inputs(self, graphs: Any) -> list[SceneGraph]:
        """Accept SceneGraph objects, one sg2im dict or a list of them; validate against
        this model's vocabulary and limits (raises GraphValidationError, located)."""
        if isinstance(graphs, SceneGraph):
            graphs = [graphs]
        if (
            isinstance(graphs, list | tuple)
            and graphs
            and all(isinstance(g, SceneGraph) for g in graphs)
        ):
            graphs = [g.to_json() for g in graphs]
        return parse_graphs(graphs, vocab=self.vocab, max_objects=self.config.max_objects)

    # -- (2) ------------------------------------------------------------------------------
    def encode_graphs(
        self, graphs: list[SceneGraph], do_cfg: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context (2B or B, L, D) and mask; with CFG the unconditional half comes first."""
        if not do_cfg:
            out = build_context(self, graphs)
        else:
            drop = torch.tensor([True] * len(graphs) + [False] * len(graphs))
            out = build_context(self, [*graphs, *graphs], drop=drop)
        return out.context, out.mask

    def check_layout(self, graphs: list[SceneGraph], layout: str | None) -> str | None:
        """The layout mode to use: None for a layout-free model, else "predicted" or "given"
        (default "predicted"); raises ValueError naming the graph that cannot be served."""
        if layout is not None and layout not in LAYOUT_MODES:
            raise ValueError(f"layout: {layout!r} is not one of {LAYOUT_MODES}")
        if not self.has_layout:
            if layout == "given":
                raise ValueError("layout='given': this model is layout-free; it takes no boxes")
            return None
        layout = layout or "predicted"
        if layout == "predicted" and self.layout_generator is None:
            raise ValueError("layout='predicted': this model has no layout generator; pass boxes")
        if layout == "given":
            for i, g in enumerate(graphs):
                if g.boxes is None:
                    raise ValueError(f"scenes[{i}]: layout='given' needs 'boxes' in every graph")
        return layout

    # -- (3) ------------------------------------------------------------------------------
    def prepare_layout(
        self, graphs: list[SceneGraph], layout: str | None, generator
    ) -> tuple[GraphBatch, torch.Tensor] | None:
        """The packed graphs and their boxes (O, 4), given or sampled; None without a layout.

        Sampled boxes start from noise drawn from each graph's own generator (after its
        latents), so a layout, like an image, depends only on its graph and seed."""
        if layout is None:
            return None
        batch = pack_graphs(graphs, self.vocab).to(self.device)
        if layout == "given":
            return batch, batch.boxes
        gen = self.layout_generator
        dims = gen.config.box_dims
        counts = torch.bincount(batch.obj_to_img.cpu(), minlength=len(graphs)).tolist()
        gens = generator if isinstance(generator, list) else [generator] * len(graphs)
        noise = torch.cat(
            [
                randn_tensor((n, dims), generator=g, device=self.device)
                for n, g in zip(counts, gens, strict=True)
            ]
        )
        return batch, gen.layout(batch, noise, self.vocab.predicate_names)

    def layout_map(
        self, layout, do_cfg: bool, size: tuple[int, int], batch_size: int
    ) -> torch.Tensor | None:
        """The map (2B or B, C, h, w) at latent resolution ``size`` (h, w); CFG's
        unconditional half is zero. A layout-free model: None, or its position grid (the
        same in both halves: it is not a condition)."""
        if layout is None:
            if not self.config.get("position_grid"):
                return None
            rows = batch_size * (2 if do_cfg else 1)
            return position_grid(rows, size, self.device, self.unet.dtype)
        batch, boxes = layout
        return build_layout_map(self, batch, boxes, size, do_cfg)

    # -- (4) ------------------------------------------------------------------------------
    def prepare_latents(
        self, batch_size: int, generator, dtype: torch.dtype, size: tuple[int, int], scheduler=None
    ) -> torch.Tensor:
        """Starting noise (B, C, h, w) at latent size ``size`` (h, w), scaled for
        ``scheduler`` (default: the pipeline's)."""
        shape = (batch_size, self.latent_channels, *size)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        return latents * (scheduler or self.scheduler).init_noise_sigma

    # -- (5) ------------------------------------------------------------------------------
    def denoise(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None,
        guidance_scale: float | Sequence[float],
        generator,
        layout_map: torch.Tensor | None = None,
        callback_on_step_end=None,
        unet=None,
        scheduler=None,
    ) -> torch.Tensor:
        """Sampling from ``latents`` with ``unet`` and ``scheduler`` (default: the
        pipeline's; the fast sampler passes the student's), whose timesteps are set.
        ``guidance_scale`` and ``unet``: one for every step, or one per step (the finish
        sampler: scales [1, g] or [1, 1, g], UNets [teacher, teacher] or [student, student,
        teacher]); a step at scale <= 1 reads only the conditional half of CFG inputs (2B
        rows)."""
        scheduler = scheduler or self.scheduler
        steps = len(scheduler.timesteps)
        scales = [guidance_scale] * steps if np.isscalar(guidance_scale) else guidance_scale
        unets = list(unet) if isinstance(unet, (list, tuple)) else [unet or self.unet] * steps
        b = latents.shape[0]
        extra = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            extra["generator"] = generator
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            if self.interrupt:  # set by a callback: the rest of the steps are skipped
                break
            do_cfg = scales[i] > 1.0
            ctx, ctx_mask, step_map = context, mask, layout_map
            if not do_cfg and context.shape[0] == 2 * b:  # CFG inputs, an unguided step
                ctx, ctx_mask, step_map = (None if v is None else v[b:]
                                           for v in (context, mask, layout_map))  # fmt: skip
            x = torch.cat([latents] * 2) if do_cfg else latents
            x = scheduler.scale_model_input(x, t)
            if step_map is not None:
                x = torch.cat([x, step_map.to(x.dtype)], 1)
            eps = unets[i](x, t, encoder_hidden_states=ctx, encoder_attention_mask=ctx_mask).sample
            if do_cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + scales[i] * (cond - uncond)
            latents = scheduler.step(eps, t, latents, **extra).prev_sample
            if callback_on_step_end is not None:
                given = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = given.get("latents", latents)
        return latents

    @property
    def interrupt(self) -> bool:
        """True once a ``callback_on_step_end`` has set ``pipe._interrupt = True``: the
        remaining denoising steps are skipped (diffusers' convention)."""
        return getattr(self, "_interrupt", False)

    # -- (6) ------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        latents = latents / self.vae.config.scaling_factor
        return self.vae.decode(latents.to(self.vae.dtype)).sample.clamp(-1, 1)

    @staticmethod
    def postprocess(images: torch.Tensor, output_type: str):
        if output_type == "pt":
            return images
        arr = ((images.float() + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return arr
        if output_type == "pil":
            return [PIL.Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]
        raise ValueError(f"output_type {output_type!r}: choose 'pil', 'np' or 'pt'")

    @torch.no_grad()
    def __call__(
        self,
        graphs: Any,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        layout: str | None = None,
        height: int | None = None,
        width: int | None = None,
        callback_on_step_end=None,
        sampler: str | None = None,
    ) -> SceneGraphPipelineOutput | tuple:
        """Generate one image per graph.

        ``sampler``: "fast" (the distilled student, ``num_inference_steps`` UNet evaluations,
        default its ``fast_steps``, no guidance argument), "finish" (layout models: a draft,
        then one guided step; :meth:`finish_text`) or "full" (the fine-tuned UNet with the
        pipeline's scheduler; default 20 steps, guidance 2). Default when neither steps nor
        guidance is given: :attr:`default_sampler`; else "full".

        ``generator`` may be a list with one generator per graph: then image i depends only
        on its own generator, not on the batch it was sampled in. ``layout`` (layout models):
        "predicted" (default) samples the boxes from the graph; "given" uses each graph's
        ``boxes``. ``height``, ``width``: pixels (default: the resolution it was trained at).
        ``callback_on_step_end(pipe, step, timestep, {"latents": ...})``, as in diffusers: called
        after each step; a dict it returns may replace the latents, and setting
        ``pipe._interrupt = True`` skips the remaining steps (the images are then decoded from
        the latents reached).
        """
        self._interrupt = False
        height, width = self.check_size(height, width)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        graphs = self.check_inputs(graphs)
        if isinstance(generator, list) and len(generator) != len(graphs):
            raise ValueError(f"{len(generator)} generators for {len(graphs)} graphs")
        layout = self.check_layout(graphs, layout)
        sampler, num_inference_steps, guidance_scale = self.resolve_sampler(
            sampler, num_inference_steps, guidance_scale
        )
        fast, finish = sampler == "fast", sampler == "finish"
        unet = self.student_unet if fast else self.unet
        scheduler = self.student_scheduler if fast else self.scheduler
        student_draft = finish and self.finish_drafter == "student"
        if finish:  # LCM's multistep rule: a clean-image estimate, noised again to the next t
            scheduler = (
                self.student_scheduler if student_draft else lcm_scheduler(self.scheduler.config)
            )
        do_cfg = guidance_scale > 1.0
        context, mask = self.encode_graphs(graphs, do_cfg)
        # Latents before the layout's noise: an image's starting noise depends on its seed
        # alone, so the same seed with the predicted boxes handed back as "given" (or one box
        # moved) gives the same image (or that image with the box moved).
        latents = self.prepare_latents(
            len(graphs), generator, context.dtype, latent_size, scheduler
        )
        boxes = self.prepare_layout(graphs, layout, generator)
        layout_map = self.layout_map(boxes, do_cfg, latent_size, len(graphs))
        custom = self.student_timesteps(num_inference_steps) if fast else None
        step_scales = guidance_scale
        if finish:  # the draft unguided from pure noise (the student's: guidance folded in)
            custom = self.finish_schedule()
            step_scales = [1.0] * (len(custom) - 1) + [guidance_scale]
            drafter = self.student_unet if student_draft else self.unet
            unet = [drafter] * (len(custom) - 1) + [self.unet]
        if custom is None:
            scheduler.set_timesteps(num_inference_steps, device=self.device)
        else:
            scheduler.set_timesteps(timesteps=custom, device=self.device)
        latents = self.denoise(
            latents, context, mask, step_scales, generator, layout_map, callback_on_step_end,
            unet=unet, scheduler=scheduler,
        )  # fmt: skip
        images = self.postprocess(self.decode(latents), output_type)
        context = context[len(graphs) :] if do_cfg else context
        boxes = None if boxes is None else unpack_boxes(*boxes)
        if not return_dict:
            return images, graphs
        return SceneGraphPipelineOutput(images=images, graphs=graphs, context=context, boxes=boxes)


@dataclass
class GraphContext:
    """context (B, L, D) and mask (B, L) bool or None for the UNet's cross-attention;
    global_vec (B, global_dim): the encoder's global vectors (before any drop), which the
    training losses align with CLIP; boxes (O', 4): the conditioner's box head's boxes of the
    real objects (``object_boxes`` models, else None) and target_boxes (O', 4) the graphs'
    own, where they have boxes: what the box loss compares."""

    context: torch.Tensor
    mask: torch.Tensor | None
    global_vec: torch.Tensor
    boxes: torch.Tensor | None = None
    target_boxes: torch.Tensor | None = None


def build_context(
    parts,
    graphs: Sequence[SceneGraph],
    drop: torch.Tensor | None = None,
    true_boxes: bool = False,
) -> GraphContext:
    """The cross-attention context of validated graphs: the one function that both sampling
    and training use, so the model is trained on exactly the context it is sampled with.

    ``parts``: anything with ``graph_encoder``, ``conditioner``, ``tokenizer``,
    ``text_encoder`` and ``vocab`` (a SceneGraphPipeline). ``drop`` (B,) bool: those graphs
    become the unconditional input (empty prompt, null graph), as in classifier-free guidance
    and conditioning dropout. ``true_boxes`` (training): the object tokens of an
    ``object_boxes`` model embed the graphs' own boxes, not the box head's (teacher forcing,
    as GLIGEN trains its grounding tokens); sampling always uses the box head's.
    """
    device = parts.graph_encoder.device
    batch: GraphBatch = pack_graphs(graphs, parts.vocab).to(device)
    enc = parts.graph_encoder.encode(batch)
    keep = [True] * len(graphs) if drop is None else (~drop).tolist()
    prompts = [label_prompt(g.objects) if k else "" for g, k in zip(graphs, keep, strict=True)]
    labels = encode_prompts(parts.tokenizer, parts.text_encoder, prompts)
    real = batch.objs != 0  # object tokens stand for the objects, not the image node
    inst = torch.full_like(batch.objs, -1)  # each object's index in its image; image node -1
    inst[real] = instance_index(batch.obj_to_img[real], len(graphs))
    boxes = targets = None
    if parts.conditioner.box_head is not None:
        boxes = parts.conditioner.predict_boxes(enc.obj_vecs[real])
        targets = None if batch.boxes is None else batch.boxes[real]
    token_boxes, settings = boxes, parts.conditioner.config.get("refine_boxes")
    if true_boxes and targets is not None:
        token_boxes = targets
    elif boxes is not None and settings is not None:
        token_boxes = _refined(boxes, batch, real, parts.vocab.predicate_names, settings)
    tokens, mask = parts.conditioner.graph_tokens(
        enc.global_vec,
        enc.triple_vecs,
        batch.triple_to_img,
        drop=None if drop is None else drop.to(device),
        obj_vecs=enc.obj_vecs[real],
        obj_to_img=batch.obj_to_img[real],
        triple_objs=inst[batch.triples[:, [0, 2]]],
        obj_depth=None if batch.depth is None else batch.depth[real] - 1,
        obj_boxes=None if token_boxes is None else token_boxes.detach(),
    )
    context, ctx_mask = parts.conditioner.fuse(labels, tokens, mask)
    return GraphContext(context, ctx_mask, enc.global_vec, boxes, targets)


def _refined(boxes, batch: GraphBatch, real, predicate_names, settings: dict) -> torch.Tensor:
    """The box head's boxes (O', 4) of the real objects, refined as a layout stage refines
    its samples (the image nodes take the whole canvas and are left as they are)."""
    full = boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(len(batch.objs), 4).clone()
    full[real] = boxes.detach().to(full.dtype)
    return refine_boxes(full, batch, predicate_names, **settings)[real]


def position_grid(
    batch_size: int, size: tuple[int, int], device=None, dtype=torch.float32
) -> torch.Tensor:
    """(B, 2, h, w): each pixel's x and y centre in [-1, 1], the same for every image (no
    layout: a fixed input that tells the convolutions, and through them the cross-attention
    queries, where a pixel is)."""
    h, w = size
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
    return grid.to(dtype).expand(batch_size, -1, -1, -1)


def build_layout_map(
    parts,
    batch: GraphBatch,
    boxes: torch.Tensor,
    size: tuple[int, int],
    do_cfg: bool = False,
    drop: torch.Tensor | None = None,
) -> torch.Tensor:
    """The layout map (B, C, h, w) of packed graphs with boxes (O, 4), for sampling and
    training alike. ``do_cfg``: (2B, ...) with an all-zero unconditional half first (the map
    is dropped together with the caption, so guidance also pushes toward the layout);
    ``drop`` (B,) bool: those images get a zero map (conditioning dropout in training)."""
    enc = parts.layout_encoder
    batch = batch.to(enc.device)
    m = enc(
        boxes.to(enc.device),
        batch.objs,
        batch.obj_to_img,
        batch.num_graphs,
        size,
        drop,
        depth=batch.depth,
    )
    return torch.cat([torch.zeros_like(m), m]) if do_cfg else m


def unpack_boxes(batch: GraphBatch, boxes: torch.Tensor) -> list[list[list[float]]]:
    """Per graph, its objects' boxes as lists (the image nodes left out)."""
    keep = (batch.objs != 0).cpu()
    rows, owner = boxes.detach().float().cpu()[keep].tolist(), batch.obj_to_img.cpu()[keep]
    out: list[list[list[float]]] = [[] for _ in range(batch.num_graphs)]
    for b, row in zip(owner.tolist(), rows, strict=True):
        out[b].append([round(v, 5) for v in row])
    return out


def pipeline_from_base(
    base,
    vocab: Vocab,
    encoder_kwargs: dict | None = None,
    conditioner_kwargs: dict | None = None,
    max_objects: int | None = None,
    layout_encoder_kwargs: dict | None = None,
    resolution: int | None = None,
    position_grid: bool = False,
) -> SceneGraphPipeline:
    """A new SceneGraphPipeline on a loaded base (:class:`sg2image.models.base.BaseComponents`):
    a fresh graph encoder and conditioner sized to the base's text width. With
    ``layout_encoder_kwargs`` (``{}`` for the defaults) a layout model: a fresh layout
    encoder, the base UNet's ``conv_in`` widened for its map (the base is modified), and no
 ``position_grid`` (layout-free
    models only): ``conv_in`` widened by 2 for the x / y grid (:func:`position_grid`)."""
    encoder = SceneGraphEncoder(
        num_objects=vocab.num_objects, num_predicates=vocab.num_predicates, **(encoder_kwargs or {})
    )
    ecfg = encoder.config
    # Object tokens (if asked for) get one slot per object the pipeline accepts.
    sized = {"obj_dim": ecfg.embed_dim, **({"max_objects": max_objects} if max_objects else {})}
    conditioner = GraphConditioner(
        global_dim=ecfg.global_dim,
        triple_dim=3 * ecfg.embed_dim,
        text_dim=base.text_encoder.config.hidden_size,
        **{**sized, **(conditioner_kwargs or {})},
    )
    layout_encoder = None
    if layout_encoder_kwargs is not None:
        layout_encoder = LayoutEncoder(num_objects=vocab.num_objects, **layout_encoder_kwargs)
        widen_conv_in(base.unet, layout_encoder.out_channels)
    if position_grid:
        if layout_encoder is not None:
            raise ValueError("position_grid is for layout-free models; a layout map has places")
        widen_conv_in(base.unet, 2)
    return SceneGraphPipeline(
        unet=base.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(base.scheduler.config),
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        graph_encoder=encoder,
        conditioner=conditioner,
        vae=base.vae,
        layout_encoder=layout_encoder,
        object_names=vocab.object_names,
        predicate_names=vocab.predicate_names,
        max_objects=max_objects,
        resolution=resolution,
        position_grid=position_grid or None,
    )


def load_pipeline(source: str | Path, device: str | torch.device = "cpu") -> SceneGraphPipeline:
    """Load a saved SceneGraphPipeline folder or hub id, with a one-line error if it fails."""
    from sg2image.models.base import ModelLoadError, explain_load_error, hub_access

    source = str(source)
    try:
        with hub_access(source) as local:
            pipe = SceneGraphPipeline.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise explain_load_error(source, "scene-graph pipeline", e) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

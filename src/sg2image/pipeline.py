"""`SceneGraphPipeline`: scene graphs -> images with a graph-conditioned diffusion model.

    graphs --(1) check--> SceneGraph list --(2) encode--> context (label + graph tokens)
           --(3) latents--> noise --(4) denoise (CFG)--> latents --(5) decode--> images

Any base in the Stable Diffusion 1.x folder layout works (unet, vae, text_encoder,
tokenizer, scheduler); ``vae=None`` is a pixel-space base. The folder written by
``save_pretrained`` adds ``graph_encoder/`` and ``conditioner/``; the vocabulary is in
``model_index.json``.
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
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from sg2image.graph import GraphBatch, SceneGraph, Vocab, pack_graphs, parse_graphs
from sg2image.models.base import vae_downsampling
from sg2image.models.conditioning import GraphConditioner, encode_prompts, label_prompt
from sg2image.models.graph_encoder import SceneGraphEncoder

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
    conditional cross-attention context (B, L, D) that produced them."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    graphs: list[SceneGraph]
    context: torch.Tensor


class SceneGraphPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->graph_encoder->conditioner->unet->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        unet,
        scheduler,
        text_encoder,
        tokenizer,
        graph_encoder: SceneGraphEncoder,
        conditioner: GraphConditioner,
        vae=None,
        object_names: Sequence[str] | None = None,
        predicate_names: Sequence[str] | None = None,
        max_objects: int | None = None,
    ):
        super().__init__()
        if object_names is None or predicate_names is None:
            raise ValueError("SceneGraphPipeline needs the vocabulary (object and predicate names)")
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            graph_encoder=graph_encoder,
            conditioner=conditioner,
            vae=vae,
        )
        self.register_to_config(
            object_names=list(object_names),
            predicate_names=list(predicate_names),
            max_objects=max_objects,
        )
        self.vocab = Vocab(object_names, predicate_names)

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return vae_downsampling(self.vae)

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

    # -- (3) ------------------------------------------------------------------------------
    def prepare_latents(self, batch_size: int, generator, dtype: torch.dtype) -> torch.Tensor:
        cfg = self.unet.config
        shape = (batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    # -- (4) ------------------------------------------------------------------------------
    def denoise(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None,
        guidance_scale: float,
        generator,
    ) -> torch.Tensor:
        do_cfg = guidance_scale > 1.0
        extra = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            extra["generator"] = generator
        for t in self.progress_bar(self.scheduler.timesteps):
            x = torch.cat([latents] * 2) if do_cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            eps = self.unet(x, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample
            if do_cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(eps, t, latents, **extra).prev_sample
        return latents

    # -- (5) ------------------------------------------------------------------------------
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
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> SceneGraphPipelineOutput | tuple:
        """Generate one image per graph.

        ``generator`` may be a list with one generator per graph: then image i depends only
        on its own generator, not on the batch it was sampled in.
        """
        graphs = self.check_inputs(graphs)
        if isinstance(generator, list) and len(generator) != len(graphs):
            raise ValueError(f"{len(generator)} generators for {len(graphs)} graphs")
        do_cfg = guidance_scale > 1.0
        context, mask = self.encode_graphs(graphs, do_cfg)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self.prepare_latents(len(graphs), generator, context.dtype)
        latents = self.denoise(latents, context, mask, guidance_scale, generator)
        images = self.postprocess(self.decode(latents), output_type)
        context = context[len(graphs) :] if do_cfg else context
        if not return_dict:
            return images, graphs
        return SceneGraphPipelineOutput(images=images, graphs=graphs, context=context)


@dataclass
class GraphContext:
    """context (B, L, D) and mask (B, L) bool or None for the UNet's cross-attention;
    global_vec (B, global_dim): the encoder's global vectors (before any drop), which the
    training losses align with CLIP."""

    context: torch.Tensor
    mask: torch.Tensor | None
    global_vec: torch.Tensor


def build_context(
    parts, graphs: Sequence[SceneGraph], drop: torch.Tensor | None = None
) -> GraphContext:
    """The cross-attention context of validated graphs: the one function that both sampling
    and training use, so the model is trained on exactly the context it is sampled with.

    ``parts``: anything with ``graph_encoder``, ``conditioner``, ``tokenizer``,
    ``text_encoder`` and ``vocab`` (a SceneGraphPipeline). ``drop`` (B,) bool: those graphs
    become the unconditional input (empty prompt, null graph), as in classifier-free guidance
    and conditioning dropout.
    """
    device = parts.graph_encoder.device
    batch: GraphBatch = pack_graphs(graphs, parts.vocab).to(device)
    enc = parts.graph_encoder.encode(batch)
    keep = [True] * len(graphs) if drop is None else (~drop).tolist()
    prompts = [label_prompt(g.objects) if k else "" for g, k in zip(graphs, keep, strict=True)]
    labels = encode_prompts(parts.tokenizer, parts.text_encoder, prompts)
    tokens, mask = parts.conditioner.graph_tokens(
        enc.global_vec,
        enc.triple_vecs,
        batch.triple_to_img,
        drop=None if drop is None else drop.to(device),
    )
    context, ctx_mask = parts.conditioner.fuse(labels, tokens, mask)
    return GraphContext(context, ctx_mask, enc.global_vec)


def pipeline_from_base(
    base,
    vocab: Vocab,
    encoder_kwargs: dict | None = None,
    conditioner_kwargs: dict | None = None,
    max_objects: int | None = None,
) -> SceneGraphPipeline:
    """A new SceneGraphPipeline on a loaded base (:class:`sg2image.models.base.BaseComponents`):
    a fresh graph encoder and conditioner sized to the base's text width."""
    encoder = SceneGraphEncoder(
        num_objects=vocab.num_objects, num_predicates=vocab.num_predicates, **(encoder_kwargs or {})
    )
    ecfg = encoder.config
    conditioner = GraphConditioner(
        global_dim=ecfg.global_dim,
        triple_dim=3 * ecfg.embed_dim,
        text_dim=base.text_encoder.config.hidden_size,
        **(conditioner_kwargs or {}),
    )
    return SceneGraphPipeline(
        unet=base.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(base.scheduler.config),
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        graph_encoder=encoder,
        conditioner=conditioner,
        vae=base.vae,
        object_names=vocab.object_names,
        predicate_names=vocab.predicate_names,
        max_objects=max_objects,
    )


def load_pipeline(source: str | Path, device: str | torch.device = "cpu") -> SceneGraphPipeline:
    """Load a saved SceneGraphPipeline folder or hub id, with a one-line error if it fails."""
    from sg2image.models.base import ModelLoadError, explain_load_error

    source = str(source)
    try:
        pipe = SceneGraphPipeline.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as e:
        if isinstance(e, ModelLoadError):
            raise
        raise explain_load_error(source, "scene-graph pipeline", e) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

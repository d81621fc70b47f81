"""The "Shapes base": small models with Stable Diffusion's and CLIP's own classes, for the
Shapes world, so the method code runs unchanged on them.

* tokenizer: a word-level ``PreTrainedTokenizerFast`` over every word a Shapes caption or
  label prompt can hold, with CLIP's bos/eos names, padded to 32 tokens;
* CLIP: a ``CLIPModel`` (text + vision towers) whose folder loads as ``CLIPTextModel`` and
  as ``CLIPVisionModelWithProjection`` (the alignment targets);
* VAE: an ``AutoencoderKL`` with downsampling factor 4 (64 x 64 x 3 -> 16 x 16 x 4);
* UNet: a ``UNet2DConditionModel`` on those latents, cross-attending to the CLIP text
  encoder's last hidden state, with attention only at the lower resolutions (CPU cost).

Builders and a text-to-image sampler; training is in :mod:`sg2image.training.base_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, CLIPTextModel, PreTrainedTokenizerFast

from sg2image.data.shapes import (
    COLOURS,
    DEFAULT_WORLD,
    DEPTH_PHRASES,
    IMAGE_SIZE,
    PREDICATE_PHRASES,
    SHAPES,
    world_predicates,
)
from sg2image.models.conditioning import encode_prompts

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 32  # tokens, bos and eos included (longest caption: 24, label prompt: 16)
# CLIP preprocessing of this world: pixels in [0, 1] -> (x - 0.5) / 0.5, i.e. [-1, 1].
CLIP_IMAGE_MEAN = (0.5, 0.5, 0.5)
CLIP_IMAGE_STD = (0.5, 0.5, 0.5)


def shapes_words(world: str = DEFAULT_WORLD) -> list[str]:
    """Every word a caption or label prompt of a Shapes ``world`` can contain, in a fixed
    order. The depth world's words ("in", "front", "behind") come after the plain world's,
    so that every plain word keeps its id (the shipped model's). The plain list stays
    without them: a larger vocabulary would change the random initialisation of the whole
    CLIP model, so that ``train --preset shapes`` would no longer make the shipped model."""
    world_predicates(world)  # checks the name
    phrases = list(PREDICATE_PHRASES.values())
    if world == "depth":
        phrases += list(DEPTH_PHRASES.values())
    words = ["a", "and", ","] + list(COLOURS) + list(SHAPES)
    for phrase in phrases:
        words += [w for w in phrase.split() if w not in words]
    return words


def build_tokenizer(
    max_length: int = MAX_LENGTH, world: str = DEFAULT_WORLD
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: ``"a red circle, a cyan square"`` -> bos a red circle , a cyan
    square eos; lower-cased, split on whitespace and punctuation, unknown words -> unk (id 1;
    eos is id 3, not 2, which CLIPTextModel would take for a legacy checkpoint). ``world``:
    whose words it knows (:func:`shapes_words`)."""
    vocab = {w: i for i, w in enumerate([PAD, UNK, BOS, EOS, *shapes_words(world)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tok.decoder = decoders.WordPiece()  # joins words with spaces, "circle ," -> "circle,"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_length,
    )


@dataclass
class ClipSize:
    """CLIP widths; both towers share ``projection_dim`` (the joint embedding width)."""

    text_dim: int = 128  # text hidden width = the UNet's cross-attention width
    text_layers: int = 3  # text transformer layers
    vision_dim: int = 128  # vision hidden width
    vision_layers: int = 3  # vision transformer layers
    heads: int = 4  # attention heads of both towers
    patch_size: int = 8  # vision patch side in pixels (64 x 64 -> 8 x 8 patches)
    projection_dim: int = 128  # joint embedding width (the graph encoder aligns to it)


def build_clip(tokenizer, size: ClipSize, image_size: int = IMAGE_SIZE) -> CLIPModel:
    common = dict(num_attention_heads=size.heads, projection_dim=size.projection_dim)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=size.text_dim,
        intermediate_size=4 * size.text_dim,
        num_hidden_layers=size.text_layers,
        max_position_embeddings=tokenizer.model_max_length,
        # pooling reads the first eos of each sequence
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **common,
    )
    vision = dict(
        hidden_size=size.vision_dim,
        intermediate_size=4 * size.vision_dim,
        num_hidden_layers=size.vision_layers,
        image_size=image_size,
        patch_size=size.patch_size,
        **common,
    )
    # projection_dim is set in each tower's config too: CLIPVisionModelWithProjection loaded
    # from a CLIPModel folder reads only vision_config (transformers 5).
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=size.projection_dim)
    return CLIPModel(config)


def clip_text_encoder(clip: CLIPModel) -> CLIPTextModel:
    """The text tower as a standalone CLIPTextModel (what a base's text_encoder/ holds)."""
    text = CLIPTextModel(clip.config.text_config)
    text.load_state_dict(clip.text_model.state_dict())  # transformers 5: text_model is one
    return text


def save_clip_folder(folder: str | Path, clip: CLIPModel, tokenizer) -> Path:
    """A CLIP folder as on the hub: model, tokenizer and preprocessor_config.json."""
    folder = Path(folder)
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    size = clip.config.vision_config.image_size
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True,
        "do_resize": True, "size": {"shortest_edge": size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(CLIP_IMAGE_MEAN), "image_std": list(CLIP_IMAGE_STD),
    }  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    return folder


def clip_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> CLIP input, normalised as preprocessor_config.json says."""
    mean = torch.tensor(CLIP_IMAGE_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_IMAGE_STD, device=pixels.device).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


@dataclass
class VaeSize:
    channels: tuple[int, ...] = (16, 32, 64)  # per level; len - 1 downsamplings (3 -> x4)
    layers_per_block: int = 1  # resnets per encoder level (decoder: one more)
    latent_channels: int = 4  # as Stable Diffusion
    mid_attention: bool = False  # self-attention in the middle block (16 x 16 tokens)


def build_vae(size: VaeSize, image_size: int = IMAGE_SIZE) -> AutoencoderKL:
    n = len(size.channels)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(size.channels),
        layers_per_block=size.layers_per_block,
        latent_channels=size.latent_channels,
        norm_num_groups=min(32, min(size.channels)),
        sample_size=image_size,
        mid_block_add_attention=size.mid_attention,
    )


@dataclass
class UnetSize:
    channels: tuple[int, ...] = (32, 64, 128)  # per level, from 16 x 16 down
    attention: tuple[bool, ...] = (False, True, True)  # cross/self-attention per level
    layers_per_block: int = 1  # resnets per down level (up levels: one more)
    head_dim: int = 32  # attention head width (heads = channels // head_dim)


def build_unet(size: UnetSize, text_dim: int, sample_size: int, latent_channels: int = 4):
    if len(size.attention) != len(size.channels):
        raise ValueError("UnetSize: one attention flag per level")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in size.attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(size.attention)]
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(size.channels),
        layers_per_block=size.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=text_dim,
        # diffusers' historical name: this is the number of heads per level
        attention_head_dim=tuple(max(1, c // size.head_dim) for c in size.channels),
        norm_num_groups=min(32, min(size.channels)),
    )


def build_noise_scheduler(prediction_type="epsilon", beta_schedule="scaled_linear"):
    """The training noise schedule (Stable Diffusion 1.x's by default)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def save_base_folder(folder, unet, vae, text_encoder, tokenizer, scheduler) -> Path:
    """The SD-1.x layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/) with a
    model_index.json that StableDiffusionPipeline.from_pretrained reads."""
    from sg2image.models.base import BaseComponents

    pipe = BaseComponents(unet, scheduler, text_encoder, tokenizer, vae).text_to_image_pipeline()
    pipe.save_pretrained(folder)
    return Path(folder)


@torch.no_grad()
def sample_base(parts, prompts, steps=20, guidance=2.0, seed=0, bf16=False):
    """Text -> uint8 images (B, H, W, 3) with DPM-Solver++ and classifier-free guidance;
    ``parts``: a loaded base (:class:`sg2image.models.base.BaseComponents`)."""
    sched = DPMSolverMultistepScheduler.from_config(parts.scheduler.config)
    sched.set_timesteps(steps)
    both = [""] * len(prompts) + list(prompts)  # unconditional half first
    context = encode_prompts(parts.tokenizer, parts.text_encoder, both)
    c = parts.unet.config
    shape = (len(prompts), c.in_channels, c.sample_size, c.sample_size)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # CPU draws
    latents = latents.to(parts.unet.device) * sched.init_noise_sigma
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):  # bf16: faster on AMX CPUs
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([latents] * 2), t)
            uncond, cond = parts.unet(x, t, encoder_hidden_states=context).sample.float().chunk(2)
            latents = sched.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        return to_uint8(parts.vae.decode(latents / parts.vae.config.scaling_factor).sample.float())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    images = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return images.permute(0, 2, 3, 1).numpy().astype(np.uint8)

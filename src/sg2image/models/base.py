"""Loading a text-to-image base (Stable Diffusion 1.x folder layout) and a CLIP vision model,
and building tiny ones in the same layout for tests.

A base is a folder or hub id with ``unet/``, ``scheduler/``, ``text_encoder/``,
``tokenizer/`` and, for a latent model, ``vae/``. Offline (``HF_HUB_OFFLINE``, or the hub
not reachable within half a second) a hub id is looked up in the local cache only: the
libraries would otherwise retry for seconds (5.6 s to 34 s measured) before failing. A
failure is one sentence that says what to do.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)


class ModelLoadError(ValueError):
    """A model folder or hub id that cannot be loaded, said in one line."""


def explain_load_error(source: str, what: str, err: Exception) -> ModelLoadError:
    if Path(source).exists():
        return ModelLoadError(f"{source}: cannot load the {what} from this folder ({err})")
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_like_path:
        return ModelLoadError(f"{source}: no such folder")
    return ModelLoadError(
        f"{source}: not a local folder, and the hub id could not be reached (offline, or not "
        "cached). Pass a local folder in the diffusers layout, or run once with network access."
    )


PROBE_SECONDS = 0.5  # how long the hub may take to accept a connection before we call it offline
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "on", "yes", "true"}


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub (``HF_ENDPOINT``) accepts a TCP connection within ``timeout``. Run in a
    thread so that a name lookup, which has no timeout of its own, cannot hold us longer."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname or "", url.port or (80 if url.scheme == "http" else 443))
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.1)
    return bool(answer)


def local_files_only(source: str) -> bool:
    """True when ``source`` is a hub id to be looked up in the local cache only: offline
    mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or the hub is not reachable. A
    folder (or a path that is not a hub id) never needs the network."""
    if Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        return False
    if any(os.environ.get(k, "").lower() in _TRUE for k in OFFLINE_VARIABLES):
        return True
    return not hub_reachable()


@contextmanager
def hub_access(source: str) -> Iterator[bool]:
    """``local_files_only(source)``; while it is True, huggingface_hub is held offline too:
    it reads HF_HUB_OFFLINE once, at import, and otherwise still asks the hub for its agent
    registry (up to 3 s) while building the headers of a cache lookup."""
    from huggingface_hub import constants

    local = local_files_only(source)
    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = was or local
    try:
        yield local
    finally:
        constants.HF_HUB_OFFLINE = was


@dataclass
class BaseComponents:
    """The pretrained parts the method starts from (VAE None for a pixel-space base)."""

    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    text_encoder: CLIPTextModel
    tokenizer: object
    vae: AutoencoderKL | None

    def text_to_image_pipeline(self):
        """These parts as a plain diffusers StableDiffusionPipeline (prompt -> image): how a
        base is saved in the SD-1.x layout, and the text-only baseline of the benchmark."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def vae_downsampling(vae) -> int:
    """Pixels per latent pixel of an AutoencoderKL: one halving per level after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_base(source: str | Path) -> BaseComponents:
    """Load a base text-to-image model from a folder or hub id (SD-1.x layout)."""
    source = str(source)
    with hub_access(source) as local:
        try:
            unet = UNet2DConditionModel.from_pretrained(
                source, subfolder="unet", local_files_only=local
            )
            scheduler = DDPMScheduler.from_pretrained(
                source, subfolder="scheduler", local_files_only=local
            )
            text_encoder = CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", local_files_only=local
            )
            tokenizer = AutoTokenizer.from_pretrained(
                source, subfolder="tokenizer", local_files_only=local
            )
        except (OSError, ValueError) as e:
            raise explain_load_error(source, "base model", e) from None
        vae = None
        if Path(source).is_dir() and not (Path(source) / "vae").is_dir():
            vae = None  # a pixel-space base
        else:
            try:
                vae = AutoencoderKL.from_pretrained(
                    source, subfolder="vae", local_files_only=local
                )
            except (OSError, ValueError) as e:
                raise explain_load_error(source, "VAE", e) from None
    return BaseComponents(unet, scheduler, text_encoder, tokenizer, vae)


def load_clip_vision(source: str | Path) -> CLIPVisionModelWithProjection:
    """The frozen image-side CLIP whose embeddings are the alignment targets. A whole
    CLIPModel folder is fine: its text tower is skipped (quietly; transformers would list
    every text weight as "unexpected")."""
    from transformers.utils import logging as hf_logging

    source = str(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with hub_access(source) as local:
            return CLIPVisionModelWithProjection.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as e:
        raise explain_load_error(source, "CLIP vision model", e) from None
    finally:
        hf_logging.set_verbosity(verbosity)


# ------------------------------------------------------------------------ tiny stand-ins


def _char_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A real CLIPTokenizer (byte-level BPE files) with no merges: one token per character."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32
    )


def build_tiny_base(
    path: str | Path, latent: bool = True, text_dim: int = 32, sample_size: int = 32, seed: int = 0
) -> Path:
    """Write a tiny random base in the SD-1.x layout (for tests; a few hundred kB)."""
    path = Path(path)
    torch.manual_seed(seed)
    tok = _char_clip_tokenizer(path / "tokenizer")
    tok.save_pretrained(path / "tokenizer")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=text_dim,
            intermediate_size=2 * text_dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tok.model_max_length,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ).save_pretrained(path / "text_encoder")
    channels = 4 if latent else 3
    factor = 2 if latent else 1
    UNet2DConditionModel(
        sample_size=sample_size // factor,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    ).save_pretrained(path / "unet")
    if latent:
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=sample_size,
        ).save_pretrained(path / "vae")
    DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False
    ).save_pretrained(path / "scheduler")
    return path


def build_tiny_clip_vision(path: str | Path, embed_dim: int = 16, image_size: int = 32) -> Path:
    """Write a tiny random CLIP vision tower with projection (for tests)."""
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=8,
            projection_dim=embed_dim,
        )
    ).save_pretrained(path)
    return Path(path)

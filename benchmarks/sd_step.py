"""The method's fine-tuning step at real scale, timed (issue 12): the SD-1.4 UNet
configuration with random weights at 256 px (32 x 32 latents), SD-1.4's text-encoder
configuration, the paper's graph encoder and conditioner (configs/coco256-sd14.toml), the
projection and both alignment losses, AdamW, bf16 autocast.

What it leaves out, as a run with ``cache_encodings=true`` does after its first epoch: the
frozen VAE encoder and CLIP image encoder (their outputs come from the run's cache, here
random tensors). Graphs are COCO-like: 3-8 objects of 183 classes, one spatial triple per
object (sg2im's synthetic relations), so the graph side's cost is the real one.

    python benchmarks/sd_step.py --seconds 60 --batch 32 --out benchmarks/results/sd_step.json
    python benchmarks/sd_step.py --tiny --seconds 2      # the same code, tiny models (CPU)

Reports the median step time, samples/s, FLOPs per step (torch's flop counter) and their
rate against ``--peak-tflops`` (default: 790, one H200's measured bf16 matmul rate), and
the share of the step spent on the graph side (graph encoder, conditioner, projection and
alignment losses, forward and backward; the frozen text encoder's label encoding apart).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from sg2image.graph import SceneGraph, Vocab
from sg2image.models.alignment import GCADiscriminator, GraphToClipProjection
from sg2image.models.base import BaseComponents
from sg2image.models.shapes_base import build_noise_scheduler, build_tokenizer
from sg2image.pipeline import build_context, pipeline_from_base
from sg2image.training.config import load_config
from sg2image.training.loop import Parts, make_accelerator
from sg2image.training.stages import EncodingCache, FinetuneStage, alignment_terms

PREDICATES = ["left of", "right of", "above", "below", "inside", "surrounding"]


def build_parts(tiny: bool, clip_dim: int = 512):
    """Random-weight SD-1.4-shaped base (tiny: a few channels) and the method's new parts."""
    if tiny:
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
            attention_head_dim=4, norm_num_groups=16,
        )  # fmt: skip
        text = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77)  # fmt: skip
        vae = AutoencoderKL(block_out_channels=(16,), norm_num_groups=16)
        encoder = {"embed_dim": 32, "hidden_dim": 32, "triple_hidden_dim": 32, "num_layers": 2,
                   "global_dim": 32}  # fmt: skip
    else:  # SD-1.4's configurations (diffusers' defaults, cross-attention width 768)
        unet = UNet2DConditionModel(sample_size=32, cross_attention_dim=768)
        text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, max_position_embeddings=77,
                              projection_dim=768)  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )  # fmt: skip
        encoder = None  # the paper's, from the config below
    tokenizer = build_tokenizer(77)  # SD's sequence length (word-level Shapes vocabulary)
    text = CLIPTextModel(text).requires_grad_(False).eval()
    vae.requires_grad_(False).eval()
    base = BaseComponents(unet, build_noise_scheduler("epsilon"), text, tokenizer, vae)
    vocab = Vocab.build([f"class{i}" for i in range(1, 184)], PREDICATES)
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "src/sg2image/configs/coco256-sd14.toml",
        ["mixed_precision=bf16", "cache_encodings=true", "finetune.max_steps=1000000",
         "finetune.lr=1e-5"] + ([f"encoder={json.dumps(encoder)}"] if encoder else []),
    )  # fmt: skip
    pipe = pipeline_from_base(base, vocab, cfg.encoder, cfg.conditioner, cfg.max_objects)
    pipe.set_progress_bar_config(disable=True)
    global_dim = pipe.graph_encoder.config.global_dim
    parts = Parts(pipe, base.scheduler, None, ((0.5,) * 3, (0.5,) * 3),
                  GraphToClipProjection(global_dim, clip_dim),
                  GCADiscriminator(graph_dim=clip_dim, clip_dim=clip_dim), vocab,
                  EncodingCache(True))  # fmt: skip
    return cfg, parts


def coco_like_graphs(n: int, rng: np.random.Generator, num_classes: int = 183):
    graphs = []
    for _ in range(n):
        k = int(rng.integers(3, 9))
        objects = [f"class{c}" for c in rng.integers(1, num_classes + 1, size=k)]
        rels = []
        for s in range(k):  # one spatial triple per object, partner and predicate at random
            o = int(rng.choice([j for j in range(k) if j != s]))
            rels.append([s, PREDICATES[int(rng.integers(len(PREDICATES)))], o])
        graphs.append(SceneGraph(objects=objects, relationships=rels))
    return graphs


def fill_cache(parts, n: int, latent: int, clip_dim: int, device) -> None:
    """What a cached run reads instead of running the frozen VAE and CLIP encoders."""
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        mean = torch.randn(4, latent, latent, generator=g).to(device)
        parts.cache.store[("latent", i)] = (mean, torch.full_like(mean, 0.1))
        parts.cache.store[("clip", i)] = (torch.randn(clip_dim, generator=g).to(device),)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def graph_side(stage, batch) -> None:
    """The graph encoder, conditioner, projection and alignment losses, forward and
    backward, as inside the step (the label prompts' frozen text encoding included)."""
    cfg, parts, acc = stage.cfg, stage.parts, stage.accelerator
    with acc.autocast():
        ctx = build_context(parts.pipe, batch["graphs"])
        graph_clip = parts.projection(ctx.global_vec)
        image_clip = torch.stack([parts.cache.store[("clip", i)][0] for i in batch["index"]])
        loss = sum(alignment_terms(cfg, acc, graph_clip, image_clip).values())
        loss = loss + ctx.context.float().pow(2).mean()  # the UNet's gradient, stood in for
    loss.backward()
    stage.opt.zero_grad()


def text_side(stage, batch) -> None:
    from sg2image.graph import label_prompt
    from sg2image.models.conditioning import encode_prompts

    pipe = stage.parts.pipe
    with stage.accelerator.autocast(), torch.no_grad():
        prompts = [label_prompt(g.objects) for g in batch["graphs"]]
        encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0, help="time spent on timed steps")
    ap.add_argument("--tiny", action="store_true", help="tiny models (a CPU check of the code)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg, parts = build_parts(args.tiny)
    acc = make_accelerator(cfg, cfg.finetune)
    device = acc.device
    parts.pipe.to(device), parts.projection.to(device)
    stage = FinetuneStage(cfg, parts, acc, total_steps=10**6)
    latent = parts.pipe.unet.config.sample_size
    pool = 8 * args.batch
    fill_cache(parts, pool, latent, 512, device)
    rng = np.random.default_rng(0)
    graphs = coco_like_graphs(pool, rng)
    pixels = torch.zeros(args.batch, 3, 8 * latent, 8 * latent, device=device)

    def batch_at(step):
        idx = [(step * args.batch + j) % pool for j in range(args.batch)]
        return {"pixel_values": pixels, "graphs": [graphs[i] for i in idx], "index": idx}

    def gens(step):
        return [torch.Generator().manual_seed(step * 1000 + j) for j in range(args.batch)]

    for step in range(3):  # warm-up: allocator, cuDNN autotuning
        stage.train_step(batch_at(step), gens(step))
    with FlopCounterMode(display=False) as counter:
        stage.train_step(batch_at(3), gens(3))
    flops = counter.get_total_flops()
    times, step, t_end = [], 4, time.perf_counter() + args.seconds
    while time.perf_counter() < t_end or len(times) < 3:
        times.append(timed(lambda s=step: stage.train_step(batch_at(s), gens(s)), device))
        step += 1
    graph_t = [timed(lambda s=s: graph_side(stage, batch_at(s)), device) for s in range(5)]
    text_t = [timed(lambda s=s: text_side(stage, batch_at(s)), device) for s in range(5)]
    step_s, graph_s = statistics.median(times), statistics.median(graph_t)
    text_s = statistics.median(text_t)
    peak = args.peak_tflops or (790.0 if device.type == "cuda" else 0.766)  # CPU: bf16 AMX
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    result = {
        "device": name or device.type, "torch": torch.__version__, "tiny": args.tiny,
        "batch": args.batch, "latent": latent, "steps_timed": len(times),
        "step_s": step_s, "samples_per_s": args.batch / step_s,
        "tflop_per_step": flops / 1e12, "tflop_per_s": flops / step_s / 1e12,
        "peak_tflops": peak, "utilisation": flops / step_s / 1e12 / peak,
        "graph_side_s": graph_s - text_s, "label_text_encoder_s": text_s,
        "graph_side_share": (graph_s - text_s) / step_s,
        "unet_params_m": sum(p.numel() for p in parts.pipe.unet.parameters()) / 1e6,
        "graph_params_m": sum(p.numel() for p in parts.pipe.graph_encoder.parameters()) / 1e6,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

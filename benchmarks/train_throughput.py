"""CPU throughput of the Shapes base UNet's training step, and what raises it (issue 12).

One step as ``training/base_model.py`` runs it (frozen text encoder on token ids, its
``unet_loss``: UNet forward and backward under min-SNR v-prediction; grad clip, AdamW,
EMA), timed for each variant below; FLOPs per step from torch's flop counter, utilisation
against the machine's measured matmul peak (fp32 and bf16, measured here by the script on a
2048^3 product).

    python benchmarks/train_throughput.py                      # all variants, ~5 min
    python benchmarks/train_throughput.py --quick              # fewer steps (a test)

Writes benchmarks/results/train_throughput.json and .md (a table: variant, threads, batch,
ms/step, samples/s, GFLOP/s, share of peak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from sg2image.models import shapes_base as sb
from sg2image.training.base_model import unet_loss

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Variant:
    name: str
    batch: int = 16
    threads: int = 2
    fused: bool = False  # torch.optim.AdamW(fused=True)
    channels_last: bool = False  # UNet weights and latents in NHWC
    bf16: bool = False  # forward under CPU bfloat16 autocast


VARIANTS = [
    Variant("baseline (today's base: fp32, foreach AdamW)"),
    Variant("1 thread", threads=1),
    Variant("fused AdamW", fused=True),
    Variant("channels_last", channels_last=True),
    Variant("bf16 autocast", bf16=True),
    Variant("bf16 + fused", bf16=True, fused=True),
    Variant("batch 32", batch=32),
    Variant("batch 64", batch=64),
    Variant("batch 64, bf16 + fused", batch=64, bf16=True, fused=True),
]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n^3 matrix product at the current thread count (best of reps)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build(v: Variant):
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=128, intermediate_size=512,
                                        num_hidden_layers=3, num_attention_heads=4,
                                        max_position_embeddings=sb.MAX_LENGTH))  # fmt: skip
    text.requires_grad_(False).eval()
    unet = sb.build_unet(sb.UnetSize(), 128, 16, 4)
    if v.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2, fused=v.fused)
    ema = EMAModel(unet.parameters(), 0.999, use_ema_warmup=True)
    sched = sb.build_noise_scheduler("v_prediction")
    return text, unet, opt, ema, sched


def make_step(v: Variant, text, unet, opt, ema, sched):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format

    def step():
        ids = torch.randint(4, 60, (v.batch, sb.MAX_LENGTH), generator=g)
        z = torch.randn(v.batch, 4, 16, 16, generator=g).contiguous(memory_format=fmt)
        noise = torch.randn(z.shape, generator=g).contiguous(memory_format=fmt)
        t = torch.randint(0, 1000, (v.batch,), generator=g)
        with torch.autocast("cpu", torch.bfloat16, enabled=v.bf16):
            with torch.no_grad():
                context = text(ids)[0]
            loss = unet_loss(unet, sched, z, noise, t, context, snr_gamma=5.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(), opt.zero_grad()
        ema.step(unet.parameters())

    return step


def measure(v: Variant, steps: int) -> dict:
    torch.set_num_threads(v.threads)
    parts = build(v)
    step = make_step(v, *parts)
    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    times = [_time(step) for _ in range(steps)]
    ms = statistics.median(times) * 1000
    gflops = counter.get_total_flops() / 1e9
    return {"variant": v.name, "threads": v.threads, "batch": v.batch, "ms_per_step": ms,
            "samples_per_s": v.batch / ms * 1000, "gflop_per_step": gflops,
            "gflop_per_s": gflops / ms * 1000}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    ap.add_argument("--quick", action="store_true", help="3 steps, two variants (a test)")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_throughput")
    args = ap.parse_args()
    variants, steps = (VARIANTS[:2], 3) if args.quick else (VARIANTS, args.steps)
    peaks = {}
    for threads in sorted({v.threads for v in variants}):
        torch.set_num_threads(threads)
        peaks[threads] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for v in variants:
        row = measure(v, steps)
        row["share_of_peak"] = row["gflop_per_s"] / peaks[v.threads]["bf16" if v.bf16 else "fp32"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    machine = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "load_average": os.getloadavg(),
               "matmul_peak_gflops": peaks}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Shapes base UNet: training-step throughput on the CPU",
        "",
        f"`python benchmarks/train_throughput.py` on {machine['cpus']} CPUs, torch "
        f"{machine['torch']}, load average {machine['load_average'][0]:.2f} at the end; "
        f"measured matmul peaks (GFLOP/s): "
        + ", ".join(f"{t} thread(s) fp32 {p['fp32']:.0f} / bf16 {p['bf16']:.0f}"
                    for t, p in peaks.items()),  # fmt: skip
        "",
        "| variant | threads | batch | ms/step | samples/s | GFLOP/s | share of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['threads']} | {r['batch']} | {r['ms_per_step']:.0f} "
                     f"| {r['samples_per_s']:.0f} | {r['gflop_per_s']:.0f} "
                     f"| {r['share_of_peak']:.0%} |")  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""The default sampler and the fast one (the distilled student) against the full one, timed
as a user runs them.

    python benchmarks/fast_sampler.py [--model DIR] [--n 128] [--threads 2]

For each sampler: the whole `sg2image generate` command on the first ``n`` Shapes test
graphs (batch 16, start-up included), then the same images in process with the time of
each part (layout stage, UNet evaluations, VAE decoding; the rest: graph encoding, scheduler
steps, PNG conversion), the UNet evaluations an image, the oracle's recall and relation
accuracy of the command's images, and the command's overhead (its seconds less the
in-process sampling: imports, model loading, files). The machine's load average is
recorded with each measurement: on a shared machine the timings move with it.
Writes benchmarks/results/fast_sampler.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FULL = "full (--steps 20 --guidance 2)"
SAMPLERS = {  # name: (generate's arguments, the pipeline call's)
    "default (no sampler arguments)": ([], {}),
    "fast 2 (--sampler fast --steps 2)": (
        ["--sampler", "fast", "--steps", "2"], {"sampler": "fast", "num_inference_steps": 2}
    ),
    "fast 4 (--sampler fast --steps 4)": (
        ["--sampler", "fast", "--steps", "4"], {"sampler": "fast", "num_inference_steps": 4}
    ),
    FULL: (
        ["--steps", "20", "--guidance", "2"], {"num_inference_steps": 20, "guidance_scale": 2.0}
    ),
}


class PartTimer:
    """Seconds spent in a module's forwards (pre/post hooks) or in wrapped methods."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.handles: list = []

    def hook_module(self, name: str, module) -> None:
        start: list[float] = []
        self.handles += [
            module.register_forward_pre_hook(lambda *a: start.append(time.perf_counter())),
            module.register_forward_hook(
                lambda *a: self._add(name, time.perf_counter() - start.pop())
            ),
        ]

    def wrap(self, name: str, obj, method: str) -> None:
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - t0)

        setattr(obj, method, timed)

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def run_command(graphs: Path, args: list[str], threads: int, model: str | None) -> dict:
    """The whole generate command: wall seconds, and the oracle's scores of its images."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sg2image", "generate", str(graphs), "-o", tmp, *args]
        cmd += ["--model", model] if model else []
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        report = Path(tmp) / "oracle.json"
        subprocess.run(
            [sys.executable, "-m", "sg2image", "shapes", "check", str(graphs), tmp,
             "--report", str(report)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        scores = json.loads(report.read_text())
    return {
        "command": "sg2image generate GRAPHS -o OUT " + " ".join(args),
        "sampler_line": next(
            (ln for ln in done.stderr.splitlines() if ln.startswith("sampler:")), ""
        ),
        "seconds": round(seconds, 3),
        "load_average_before": round(load, 2),
        "object_recall": scores.get("object_recall"),
        "relation_accuracy": scores.get("relation_accuracy"),
    }


def in_process(pipe, graphs, kwargs: dict, batch: int = 16) -> dict:
    """Per-image seconds of the parts, UNet evaluations an image."""
    timer, rows = PartTimer(), [0]

    def count(module, args, kwargs):
        rows[0] += (args[0] if args else kwargs["sample"]).shape[0]

    for name in ("unet", "student_unet"):
        module = getattr(pipe, name, None)
        if module is not None:
            timer.hook_module("unet", module)
            timer.handles.append(module.register_forward_pre_hook(count, with_kwargs=True))
    timer.wrap("layout", pipe, "prepare_layout")
    timer.wrap("vae_decode", pipe, "decode")
    pipe(graphs[:batch], generator=torch.Generator().manual_seed(0), **kwargs)  # warm-up
    timer.seconds.clear()
    rows[0] = 0
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    for start in range(0, len(graphs), batch):
        chunk = graphs[start : start + batch]
        gens = [torch.Generator().manual_seed(start + k) for k in range(len(chunk))]
        pipe(chunk, generator=gens, **kwargs)
    total = time.perf_counter() - t0
    n = len(graphs)
    parts = {k: round(v / n * 1000, 2) for k, v in timer.seconds.items()}
    parts["other"] = round(total / n * 1000 - sum(parts.values()), 2)
    for method in ("prepare_layout", "decode"):
        delattr(pipe, method)  # the class's own again
    for handle in timer.handles:
        handle.remove()
    return {
        "ms_per_image": round(total / n * 1000, 2),
        "parts_ms_per_image": parts,
        "denoising_share": round(timer.seconds.get("unet", 0.0) / total, 3),
        "unet_evals_per_image": rows[0] / n,
        "load_average_before": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_sampler.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sg2image import SHAPES_MODEL
    from sg2image.data.shapes import make_split
    from sg2image.graph import save_graphs
    from sg2image.pipeline import load_pipeline

    graphs = make_split("test", n=args.n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graphs.json"
        save_graphs(graphs, path)
        commands = {
            k: run_command(path, cli, args.threads, args.model) for k, (cli, _) in SAMPLERS.items()
        }
    pipe = load_pipeline(args.model or SHAPES_MODEL)
    parts = {k: in_process(pipe, graphs, kw) for k, (_, kw) in SAMPLERS.items()}
    result = {
        "graphs": f"the first {args.n} Shapes test graphs",
        "threads": args.threads,
        "batch_size": 16,
        "machine_cpus": os.cpu_count(),
        "commands": commands,
        "in_process": parts,
        "command_speedup_over_full": {
            k: round(commands[FULL]["seconds"] / c["seconds"], 2) for k, c in commands.items()
        },
        "in_process_speedup_over_full": {
            k: round(parts[FULL]["ms_per_image"] / p["ms_per_image"], 2) for k, p in parts.items()
        },
        # what the command spends besides sampling (imports, loading, PNG files, start-up):
        # its seconds less the in-process sampling time of the same images
        "command_overhead_s": {
            k: round(c["seconds"] - parts[k]["ms_per_image"] * args.n / 1000, 2)
            for k, c in commands.items()
        },
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""What a reflow of the layout flow gives (Liu et al. 2022): the layout generator fine-tuned on
its own pairs, noise -> the boxes its sampler makes from it, so that its paths straighten and
1-2 Euler steps do what 4 midpoint steps (8 velocities) do.

    python benchmarks/layout_reflow.py                      # 20,000 pairs, 400 steps of 256
    python benchmarks/layout_reflow.py --out /tmp/reflowed  # also save the reflowed generator

Pairs come from Shapes training graphs (never the test graphs) with the generator's own
settings; the fine-tune is the flow's loss on the straight line between each pair, half of
the times drawn at t = 0 (the one-step jump). Then the layout table (benchmarks/layout_bench.py's
columns) of the reflowed generator at 1 and 2 Euler steps on --n test graphs, next to the
generator's own sampler. Writes benchmarks/results/layout_reflow.json. An experiment: the
training stage does not run it (yet).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sg2image.data.shapes import make_split, shapes_vocab
from sg2image.eval.layout import layout_report
from sg2image.graph import pack_graphs
from sg2image.models.layout import LayoutGenerator, to_params

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "src" / "sg2image" / "assets" / "shapes-pipeline" / "layout_generator"


@torch.no_grad()
def make_pairs(gen, graphs, vocab, chunk: int = 500) -> list[tuple]:
    """(graph, noise, endpoint) per graph: the generator's own sample (raw, unrefined) from
    noise seeded by the graph's index, as flow parameters in [-1, 1]."""
    pairs = []
    for i in range(0, len(graphs), chunk):
        part = graphs[i : i + chunk]
        counts = [len(g.objects) + 1 for g in part]
        noise = torch.cat(
            [
                torch.randn(n, gen.config.box_dims, generator=torch.Generator().manual_seed(i + j))
                for j, n in enumerate(counts)
            ]
        )
        ends = to_params(gen.sample(pack_graphs(part, vocab), noise), gen.config.box_dims) * 2 - 1
        pairs += zip(part, noise.split(counts), ends.split(counts), strict=True)
    return pairs


def reflow(gen, pairs, vocab, steps: int, batch: int, lr: float, seed: int = 0) -> list[float]:
    """Fine-tune ``gen`` in place on the pairs; returns the loss every 50 steps."""
    gen.train()
    opt = torch.optim.AdamW(gen.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        picked = [pairs[k] for k in torch.randint(len(pairs), (batch,), generator=rng).tolist()]
        packed = pack_graphs([p[0] for p in picked], vocab)
        noise, end = torch.cat([p[1] for p in picked]), torch.cat([p[2] for p in picked])
        t = torch.rand(len(noise), generator=rng)
        t = torch.where(torch.rand(len(noise), generator=rng) < 0.5, 0.0, t)
        real = packed.objs != 0
        t = torch.where(real, t, 1.0)  # the image node sits at its box, as in training
        obj_vecs, pred_vecs = gen.object_vectors(packed)
        x_t = (1 - t[:, None]) * noise + t[:, None] * end
        v = gen.velocity(obj_vecs, pred_vecs, packed.triples[:, [0, 2]], x_t, t)
        loss = F.mse_loss(v[real], (end - noise)[real])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append(round(loss.item(), 5))
    gen.eval()
    return losses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODEL), help="a layout_generator folder")
    ap.add_argument("--pairs", type=int, default=20000, help="training graphs to pair")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--n", type=int, default=300, help="test graphs of the table")
    ap.add_argument("--out", type=Path, help="save the reflowed generator here")
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "layout_reflow.json"
    )
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    vocab = shapes_vocab()
    teacher = LayoutGenerator.from_pretrained(args.model).eval()
    t0 = time.perf_counter()
    pairs = make_pairs(teacher, make_split("train", args.pairs), vocab)
    pair_s = time.perf_counter() - t0
    student = copy.deepcopy(teacher)
    t0 = time.perf_counter()
    losses = reflow(student, pairs, vocab, args.steps, args.batch, args.lr)
    train_s = time.perf_counter() - t0
    test = make_split("test", args.n)
    rows = []
    for name, gen, settings in (
        ("own sampler", teacher, {}),
        ("reflowed, 1 Euler step", student, dict(sample_steps=1, sampler="euler")),
        ("reflowed, 2 Euler steps", student, dict(sample_steps=2, sampler="euler")),
    ):
        gen.register_to_config(**settings)
        report = layout_report(gen, test, vocab, seed=0, batch=16)
        rows.append({"generator": name, **{k: gen.config[k] for k in ("sample_steps", "sampler")},
                     **report})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        student.save_pretrained(args.out)
    result = {
        "model": os.path.relpath(args.model, ROOT),
        "pairs": args.pairs, "steps": args.steps, "batch": args.batch, "lr": args.lr,
        "pair_seconds": round(pair_s, 1), "train_seconds": round(train_s, 1),
        "losses_every_50_steps": losses, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": "python benchmarks/layout_reflow.py " + shlex.join(sys.argv[1:]),
        "rows": rows,
    }  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

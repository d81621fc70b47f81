"""Which conditioning can carry depth order? A warm-started probe on the depth world.

The shipped Shapes model (trained on the plain world) is fine-tuned for a few hundred steps
on depth-world scenes, drawn from their true boxes, in one of these variants:

* ``none``: the order-free layout map (overlapping boxes add up) and the label tokens only;
  nothing in its input says who is in front: the control, at chance (about 0.5);
* ``triples``: the same map with the paper's graph tokens (global + one per triple);
* ``objects``: the same map with the graph tokens plus one token per object (its vector
  after message passing: the object with its graph context);
* ``ordered``: the paper's graph tokens and a layout map painted back to front (the
  depth-ordered half of ``LayoutEncoder(depth_order=True)``, its conv_in channels new).

Then it draws the first ``--eval-n`` depth test graphs that have a depth pair, from their
true boxes (so the boxes cannot carry any order), and the oracle scores them: occlusion
accuracy is the share of depth triples drawn with the right object in front. A warm start
and a few hundred steps are a probe of what each path can learn quickly, not the issue's
table (which trains each row from the base with the same budgets).

``--init PIPELINE`` starts from a depth-world pipeline as it is instead (e.g. a row of
scripts/device_depth_rows.sh), and ``--overlap-weight W`` weighs the loss where a depth
pair's boxes overlap 1 + W (``finetune.overlap_weight``): an A/B of that loss on one start.

    python benchmarks/depth_probe.py --variant objects --steps 600
    # -> benchmarks/results/depth_probe/objects.json
    python benchmarks/depth_probe.py --init runs/gpu-rows/no-order --overlap-weight 4 \
        --name no-order-w4 --steps 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sg2image import SHAPES_MODEL
from sg2image.data.shapes import generate_scene, shapes_vocab
from sg2image.data.shapes_dataset import ShapesDataset
from sg2image.eval.oracle import score_images
from sg2image.graph import DEPTH_PREDICATES
from sg2image.models.conditioning import GraphConditioner
from sg2image.models.layout import LayoutEncoder, widen_conv_in
from sg2image.pipeline import SceneGraphPipeline
from sg2image.sampling import sample_arrays
from sg2image.training.stages import Denoiser, depth_overlap_weights, weighted_mse

VARIANTS = ("none", "triples", "objects", "ordered")
OUT = Path(__file__).parent / "results" / "depth_probe"


def depth_pipeline(variant: str) -> SceneGraphPipeline:
    """The shipped pipeline made ready for the depth world and the variant's conditioning."""
    pipe = SceneGraphPipeline.from_pretrained(SHAPES_MODEL, torch_dtype=torch.float32)
    vocab = shapes_vocab("depth")
    old = pipe.vocab.predicate_names
    assert list(vocab.predicate_names[: len(old)]) == list(old), "depth vocab must extend"
    emb = pipe.graph_encoder.pred_embed
    new = torch.nn.Embedding(vocab.num_predicates, emb.embedding_dim)
    with torch.no_grad():
        new.weight[: len(old)] = emb.weight
        new.weight[len(old) :] = emb.weight[1 : len(old)].mean(0)  # start near a relation
    pipe.graph_encoder.pred_embed = new
    pipe.graph_encoder.register_to_config(num_predicates=vocab.num_predicates)
    pipe.register_to_config(predicate_names=list(vocab.predicate_names))
    pipe.vocab = vocab

    ccfg = dict(pipe.conditioner.config)
    ccfg = {k: v for k, v in ccfg.items() if not k.startswith("_")}
    if variant == "none":
        ccfg["use_graph"] = False
    if variant == "objects":
        ccfg.update(object_tokens=True, obj_dim=pipe.graph_encoder.config.embed_dim,
                    max_objects=5)  # fmt: skip
    cond = GraphConditioner(**ccfg)
    missing, _ = cond.load_state_dict(pipe.conditioner.state_dict(), strict=False)
    assert all(k.startswith("object_proj") for k in missing), missing
    pipe.conditioner = cond
    if variant == "ordered":
        enc = pipe.layout_encoder
        ordered = LayoutEncoder(enc.config.num_objects, enc.config.channels, depth_order=True)
        ordered.label_embed.load_state_dict(enc.label_embed.state_dict())
        widen_conv_in(pipe.unet, enc.config.channels)
        pipe.layout_encoder = ordered
    return pipe


def collate(items: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "graphs": [it["graph"] for it in items],
    }


def train(pipe, steps: int, batch_size: int, seed: int, overlap_weight: float = 0.0) -> float:
    """v-prediction fine-tuning of UNet, graph encoder, conditioner and layout encoder."""
    torch.manual_seed(seed)
    data = ShapesDataset("train", size=20000, image_size=64, world="depth")
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    model = Denoiser(pipe, projection=None, with_projection=False)
    graph_params = [*pipe.graph_encoder.parameters(), *pipe.conditioner.parameters(),
                    *pipe.layout_encoder.parameters()]  # fmt: skip
    opt = torch.optim.AdamW(
        [{"params": pipe.unet.parameters(), "lr": 2e-4}, {"params": graph_params, "lr": 1e-3}],
        weight_decay=1e-2,
    )
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    vae = pipe.vae
    model.train()
    start, step = time.perf_counter(), 0
    bar = tqdm(total=steps, desc="probe fine-tuning")
    while step < steps:
        for batch in loader:
            with torch.no_grad():
                lat = vae.encode(batch["pixel_values"]).latent_dist.sample()
                lat = lat * vae.config.scaling_factor
            noise = torch.randn_like(lat)
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (lat.shape[0],))
            drop = torch.rand(lat.shape[0]) < 0.1
            noisy = noise_sched.add_noise(lat, noise, t)
            target = noise_sched.get_velocity(lat, noise, t)
            pred, _, _ = model(noisy, t, batch["graphs"], drop)
            weights = None
            if overlap_weight:
                weights = depth_overlap_weights(batch["graphs"], pred.shape[-2:], overlap_weight)
            loss = weighted_mse(pred, target, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step >= steps:
                break
    bar.close()
    return time.perf_counter() - start


def depth_test_graphs(n: int) -> list:
    """The first ``n`` depth test graphs that have a depth triple (with their true boxes)."""
    out, i = [], 0
    while len(out) < n:
        g = generate_scene("test", i, "depth")
        if any(p in DEPTH_PREDICATES for _, p, _ in g.relationships):
            out.append(g)
        i += 1
    return out


@torch.no_grad()
def evaluate(pipe, n: int, batch_size: int = 16) -> dict:
    pipe.set_progress_bar_config(disable=True)
    graphs = depth_test_graphs(n)
    images = sample_arrays(pipe, graphs, batch_size, layout="given", num_inference_steps=20,
                           guidance_scale=2.0)  # fmt: skip
    return score_images(images, graphs).to_json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=VARIANTS)
    ap.add_argument("--init", help="a depth-world pipeline to start from (no --variant)")
    ap.add_argument("--overlap-weight", type=float, default=0.0)
    ap.add_argument("--name", help="the result's name (default: the variant's)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-n", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if (args.variant is None) == (args.init is None):
        ap.error("give one of --variant and --init")
    torch.set_num_threads(args.threads)
    if args.init:
        pipe = SceneGraphPipeline.from_pretrained(args.init, dtype=torch.float32)
    else:
        pipe = depth_pipeline(args.variant)
    name = args.name or args.variant or Path(args.init).name
    before = evaluate(pipe, args.eval_n) if args.steps == 0 else None
    seconds = (train(pipe, args.steps, args.batch_size, args.seed, args.overlap_weight)
               if args.steps else 0.0)  # fmt: skip
    pipe.unet.eval()
    report = before or evaluate(pipe, args.eval_n)
    result = {"name": name, "variant": args.variant, "init": args.init,
              "overlap_weight": args.overlap_weight, "steps": args.steps,
              "batch_size": args.batch_size,
              "train_seconds": round(seconds, 1), "threads": args.threads,
              "eval_graphs": args.eval_n, "sampler": "DPM-Solver++ 20 steps, guidance 2",
              "layout": "given (true boxes)", "oracle": report}  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{name}: occlusion {report['occlusion_accuracy']:.3f} "
          f"({report['occlusion_judged']} triples), recall {report['object_recall']:.3f}, "
          f"relations {report['relation_accuracy']:.3f} -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()

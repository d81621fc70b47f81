"""Training the Shapes base: CLIP, VAE and text-to-image UNet, written as a Stable Diffusion
1.x folder (``load_base``) plus a CLIP folder (``load_clip_vision``).

    base_dir, clip_dir = train_shapes_base("runs/shapes_base", ShapesBaseConfig())

Parts run in order tokenizer+CLIP, VAE, UNet; a part whose folder exists is skipped (each
folder is published whole, never half-written), and the UNet part checkpoints every
``unet.checkpoint_every`` steps and resumes from there. Every random draw (batch, caption,
noise, timestep, dropout) is a function of (seed, part, step), so a resumed run equals a
straight one. Quality measures go to ``report.json``, training curves to ``logs/*.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTextModel

from sg2image.data.shapes import WORLDS, caption, scene_caption
from sg2image.eval.oracle import score_images
from sg2image.models import shapes_base as sb
from sg2image.models.base import BaseComponents, load_base, vae_downsampling
from sg2image.models.shapes_base import ClipSize, UnetSize, VaeSize
from sg2image.training.checkpoint import publish_dir, write_atomic
from sg2image.training.config import ConfigError, saved_settings_differ, shown_keys
from sg2image.training.loop import MetricsLog, setup_device
from sg2image.training.shapes_pool import Pool
from sg2image.training.timing import StepTimer, training_rate
from sg2image.training.vae_refine import HINGE_WEIGHT, THRESHOLD, refine_vae_decoder

PARTS = ("clip", "vae", "unet")


@dataclass
class ClipPart:
    steps: int = 1000  # optimizer steps (bs 64: 1200 steps -> val retrieval 0.85)
    batch_size: int = 64  # image/caption pairs per step (the InfoNCE negatives)
    lr: float = 1e-3  # AdamW peak lr, cosine decay after warm-up
    weight_decay: float = 0.1  # AdamW weight decay (CLIP's value)
    warmup: int = 100  # linear warm-up steps
    size: ClipSize = field(default_factory=ClipSize)  # widths and depths


@dataclass
class VaePart:
    steps: int = 2000  # optimizer steps (1300 left the oracle at 0.97-0.986 on reconstructions)
    batch_size: int = 8  # images per step (8 beat 32 at equal compute)
    lr: float = 2e-3  # AdamW peak lr, cosine decay after warm-up (2e-3 beat 1e-3)
    warmup: int = 50  # linear warm-up steps
    kl_weight: float = 1e-6  # KL weight against the per-image L1 sum (Stable Diffusion: 1e-6)
    mse_weight: float = 0.0  # weight of an added MSE term (tried 1.0: no better)
    # Decode a Gaussian-blurred latent (sigma ~ U(0, latent_blur) latent px) with this
    # probability, against the sharp image, so that smooth latents still decode to sharp
    # shapes. Measured (docs/benchmarks.md): the decoder learns it, the UNet does not gain.
    latent_blur: float = 0.0  # max blur sigma in latent pixels (0: off)
    latent_blur_prob: float = 0.5  # share of steps whose latents are blurred
    # Then fine-tune the decoder alone against off-colour specks (GroupNorm droplets; see
    # training/vae_refine.py): L1 plus a hinge on channel errors above a threshold.
    refine_steps: int = 2000  # decoder-only steps after the VAE's own (0: off; 600 left more)
    refine_lr: float = 3e-4  # AdamW peak lr of that phase, cosine decay after 20 warm-up steps
    refine_hinge: float = HINGE_WEIGHT  # extra weight of the error above refine_threshold
    refine_threshold: float = THRESHOLD  # channel error in [-1, 1] units (~19 RGB levels)
    size: VaeSize = field(default_factory=VaeSize)  # widths and depths


@dataclass
class UnetPart:
    steps: int = 3000  # optimizer steps
    batch_size: int = 16  # latents per step (16 at 2e-3 >= 32 at 1e-3 for equal compute)
    lr: float = 2e-3  # AdamW peak lr, cosine decay after warm-up
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 1e-2  # AdamW weight decay
    prediction_type: str = "v_prediction"  # or "epsilon" (SD 1.x; lower recall here)
    beta_schedule: str = "scaled_linear"  # DDPM betas: "scaled_linear" (SD) or "squaredcos_cap_v2"
    snr_gamma: float | None = 5.0  # min-SNR loss weighting (Hang et al. 2023); None: plain MSE
    caption_dropout: float = 0.1  # captions replaced by "" (for classifier-free guidance)
    ema_decay: float = 0.999  # EMA of the weights (with warm-up), saved as the UNet (0: none)
    checkpoint_every: int = 250  # steps between resumable checkpoints
    size: UnetSize = field(default_factory=UnetSize)  # widths, depths, attention levels


@dataclass
class ShapesBaseConfig:
    """The whole base; step counts, not wall time, bound each part, so runs reproduce."""

    seed: int = 0  # model init, batches, captions, noise: everything derives from it
    # The Shapes world of its scenes, captions and tokenizer: "plain" or "depth".
    world: str = "plain"
    train_size: int = 10000  # Shapes train scenes 0..n-1, rendered once for all parts
    eval_size: int = 200  # val scenes for the quality measures (0: no evaluation)
    eval_guidance: float = 2.0  # CFG scale of the UNet evaluation (SceneGraphPipeline default)
    eval_steps: int = 20  # DPM-Solver++ steps of the UNet evaluation
    # Speed (results do not depend on these, up to float rounding):
    mixed_precision: str = "no"  # "bf16": forward passes under bfloat16 autocast
    render_workers: int = 0  # processes that render the pool (0: this one)
    # Captions drawn per scene when the pool is made, tokenised once (GPU runs); 0: a fresh
    # caption for every sample at every step, tokenised then (the CPU default).
    captions_per_scene: int = 0
    log_every: int = 1  # steps between log lines (each one waits for the device)
    clip: ClipPart = field(default_factory=ClipPart)
    vae: VaePart = field(default_factory=VaePart)
    unet: UnetPart = field(default_factory=UnetPart)

    @classmethod
    def tiny(cls) -> ShapesBaseConfig:
        """Seconds-long settings for tests."""
        return cls(
            train_size=64, eval_size=4, eval_steps=2,
            clip=ClipPart(steps=2, batch_size=8, warmup=1, size=ClipSize(32, 1, 32, 1, 2, 16, 16)),
            vae=VaePart(steps=2, batch_size=4, warmup=1, refine_steps=2, size=VaeSize((8, 16, 16))),
            unet=UnetPart(steps=4, batch_size=4, warmup=1, checkpoint_every=2,
                          size=UnetSize((16, 32), (False, True), 1, 8)),
        )  # fmt: skip


def _batch(pool_size: int, batch_size: int, seed: int, part: str, step: int):
    """Batch `step` of a part: indices (distinct within the batch), its rng and torch generator."""
    rng = np.random.default_rng([seed, PARTS.index(part), step])
    idx = rng.choice(pool_size, batch_size, replace=False)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return idx, rng, gen


def _optimizer(params, lr, wd, warmup, steps, betas=(0.9, 0.999)):
    # Fused: one kernel for all parameters, the same update up to rounding; +6-12% samples/s
    # for the base UNet on this CPU (benchmarks/train_throughput.py), fewer launches on a GPU.
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, fused=True)
    return opt, get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=steps)


def autocast(cfg: ShapesBaseConfig, device) -> torch.autocast:
    """bfloat16 autocast of forward passes when ``cfg.mixed_precision == "bf16"``."""
    on = cfg.mixed_precision == "bf16"
    return torch.autocast(torch.device(device).type, torch.bfloat16, enabled=on)


def _log_step(log: MetricsLog, cfg: ShapesBaseConfig, step: int, total: int, **values) -> None:
    """One log line every ``cfg.log_every`` steps and at the last: ``.item()`` waits for the
    device, so a GPU run must not call it every step."""
    if (step + 1) % cfg.log_every == 0 or step + 1 == total:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        log.write({"global_step": step + 1, **row})


def _report(out: Path, part: str, values: dict) -> None:
    path = out / "report.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[part] = values
    write_atomic(path, json.dumps(data, indent=1))


# ----------------------------------------------------------------------------- CLIP


def clip_loss(clip: CLIPModel, ids: torch.Tensor, pixels: torch.Tensor):
    """Symmetric InfoNCE with CLIP's learned temperature; returns (loss, logits_per_image)."""
    vision = clip.vision_model(pixel_values=sb.clip_pixels(pixels))
    img = clip.visual_projection(vision.pooler_output)
    txt = clip.text_projection(clip.text_model(input_ids=ids).pooler_output)
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = clip.logit_scale.exp() * img @ txt.t()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2, logits


def _ids(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids  # fmt: skip


def train_clip(cfg: ShapesBaseConfig, pool: Pool, tokenizer, log: MetricsLog, device,
               timer: StepTimer | None = None) -> CLIPModel:  # fmt: skip
    c = cfg.clip
    timer = timer or StepTimer(c.steps, device)
    torch.manual_seed(cfg.seed)
    clip = sb.build_clip(tokenizer, c.size).to(device)
    opt, sched = _optimizer(clip.parameters(), c.lr, c.weight_decay, c.warmup, c.steps, (0.9, 0.98))
    for step in tqdm(range(c.steps), desc="clip"):
        idx, rng, _ = _batch(len(pool), c.batch_size, cfg.seed, "clip", step)
        ids = caption_ids(pool, idx, rng, tokenizer).to(device)  # a new draw every step
        with autocast(cfg, device):
            loss, logits = clip_loss(clip, ids, pool.pixels(idx).to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        clip.logit_scale.data.clamp_(0, np.log(100))  # CLIP's cap on the temperature
        acc = (logits.argmax(1) == torch.arange(len(idx), device=logits.device)).float().mean()
        _log_step(log, cfg, step, c.steps, loss=loss, acc=acc)
        timer.step()
    return clip.eval()


def caption_ids(pool: Pool, idx, rng: np.random.Generator, tokenizer) -> torch.Tensor:
    """Token ids (B, L) of one caption per scene ``idx``: freshly drawn from ``rng`` and
    tokenised, or, for a pool made with ``captions_per_scene``, one of its pre-drawn ones."""
    if pool.caption_ids is not None:
        return pool.captions(idx, rng).long()
    return _ids(tokenizer, [caption(pool.graphs[i], rng) for i in idx])


@torch.no_grad()
def clip_retrieval(clip: CLIPModel, tokenizer, n: int = 960, batch: int = 64,
                   world: str = "plain") -> float:  # fmt: skip
    """Image -> caption top-1 accuracy within batches of `batch` val scenes (fixed captions)."""
    val, hits = Pool("val", n - n % batch, world=world), 0
    for s in range(0, len(val.graphs), batch):
        caps = [scene_caption("val", i, val.graphs[i], world) for i in range(s, s + batch)]
        ids, pixels = _ids(tokenizer, caps), val.pixels(range(s, s + batch))
        _, logits = clip_loss(clip, ids.to(clip.device), pixels.to(clip.device))
        hits += (logits.argmax(1).cpu() == torch.arange(batch)).sum().item()
    return hits / max(len(val.graphs), 1)


# ----------------------------------------------------------------------------- VAE


def train_vae(cfg: ShapesBaseConfig, pool: Pool, log: MetricsLog, device,
              timers: tuple[StepTimer, StepTimer] | None = None):  # fmt: skip
    """The VAE, then its decoder's refinement; ``timers`` time the steps of each."""
    v = cfg.vae
    timer, refine_timer = timers or (StepTimer(v.steps, device), StepTimer(v.refine_steps, device))
    torch.manual_seed(cfg.seed)
    vae = sb.build_vae(v.size).to(device)
    opt, sched = _optimizer(vae.parameters(), v.lr, 0.0, v.warmup, v.steps)
    for step in tqdm(range(v.steps), desc="vae"):
        idx, _, gen = _batch(len(pool), v.batch_size, cfg.seed, "vae", step)
        x = pool.pixels(idx).to(device)
        with autocast(cfg, device):
            dist = vae.encode(x).latent_dist
            z = dist.sample(generator=gen)  # drawn on the CPU generator, then moved
            if v.latent_blur and torch.rand((), generator=gen) < v.latent_blur_prob:
                z = gaussian_blur(z, float(torch.rand((), generator=gen)) * v.latent_blur)
            rec = vae.decode(z).sample.float()
        # Stable Diffusion's weighting (both terms summed per image), divided by the pixel count.
        l1 = (rec - x).abs().mean()
        kl = dist.kl().float().mean() / x[0].numel()
        loss = l1 + v.mse_weight * (rec - x).pow(2).mean() + v.kl_weight * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        _log_step(log, cfg, step, v.steps, loss=loss, l1=l1, kl=kl)
        timer.step()
    if v.refine_steps:  # the encoder stays as trained: the latents below do not change
        refine_vae_decoder(vae, pool, v.refine_steps, v.batch_size, v.refine_lr,
                           hinge_weight=v.refine_hinge, threshold=v.refine_threshold,
                           seed=cfg.seed, log=log, log_offset=v.steps,
                           autocast=autocast(cfg, device), log_every=cfg.log_every,
                           timer=refine_timer)  # fmt: skip
    vae.eval()
    with torch.no_grad():  # latents * scaling_factor have unit std, as in Stable Diffusion
        z = encode_latents(vae, pool, 64, min(512, len(pool.images)))[0]
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with edge replication; sigma in pixels."""
    if sigma < 1e-3:
        return x
    r = max(1, int(np.ceil(3 * sigma)))
    k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k, c = k / k.sum(), x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@torch.no_grad()
def vae_quality(vae, n: int, world: str = "plain") -> dict:
    """PSNR and the oracle's scores of reconstructions of val renders 0..n-1 (with occlusion
    accuracy where they have depth triples)."""
    val = Pool("val", n, world=world)
    x = [val.pixels(range(s, min(s + 32, n))) for s in range(0, n, 32)]
    x = [b.to(vae.device) for b in x]
    rec = sb.to_uint8(torch.cat([vae.decode(vae.encode(b).latent_dist.mode()).sample for b in x]))
    mse = ((rec.astype(np.float64) - val.images.permute(0, 2, 3, 1).numpy()) ** 2).mean()
    report = score_images(list(rec), val.graphs)
    out = {"psnr": float(10 * np.log10(255**2 / mse)), "object_recall": report.object_recall,
           "relation_accuracy": report.relation_accuracy}  # fmt: skip
    if report.occlusion_judged:  # the depth world: the ceiling of any model on this VAE
        out["occlusion_accuracy"] = report.occlusion_accuracy
    return out


# ----------------------------------------------------------------------------- UNet


@torch.no_grad()
def encode_latents(vae, pool: Pool, batch: int = 64, n: int | None = None):
    """Mean and std of the latent distributions (unscaled) of pool images 0..n-1 (all), on
    the VAE's device."""
    n = len(pool.images) if n is None else n
    dists = [vae.encode(pool.pixels(range(s, min(s + batch, n))).to(vae.device)).latent_dist
             for s in tqdm(range(0, n, batch), desc="latents")]  # fmt: skip
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def train_unet(cfg: ShapesBaseConfig, pool: Pool, parts: BaseComponents, ckpt_file: Path, log,
               timer: StepTimer | None = None):  # fmt: skip
    """The text-to-image UNet on the frozen VAE and text encoder of ``parts``; resumes from
    ``ckpt_file`` (written every ``checkpoint_every`` steps); returns the (EMA) UNet and the
    step it started from. It trains on the VAE's device; random draws are made on the CPU,
    so they do not depend on it. ``timer`` times its steps (checkpoints left out)."""
    u, vae, noise_sched = cfg.unet, parts.vae, parts.scheduler
    device = vae.device
    torch.manual_seed(cfg.seed)
    sf, latent_size = vae.config.scaling_factor, pool.images.shape[-1] // vae_downsampling(vae)
    text_dim = parts.text_encoder.config.hidden_size
    unet = sb.build_unet(u.size, text_dim, latent_size, vae.config.latent_channels).to(device)
    opt, sched = _optimizer(unet.parameters(), u.lr, u.weight_decay, u.warmup, u.steps)
    ema = EMAModel(unet.parameters(), u.ema_decay, use_ema_warmup=True,
                   foreach=device.type == "cuda")  # decay 0: a copy  # fmt: skip
    start = 0
    if ckpt_file.is_file():
        state = torch.load(ckpt_file, weights_only=True, map_location=device)
        unet.load_state_dict(state["unet"]), opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"]), ema.load_state_dict(state["ema"])
        start = state["step"]
    log = MetricsLog(log, True, start if start else None)
    timer = timer or StepTimer(u.steps - start, device)
    means, stds = encode_latents(parts.vae, pool)
    empty = _ids(parts.tokenizer, [""]).to(device)  # the dropped caption, for CFG
    for step in tqdm(range(start, u.steps), desc="unet", initial=start, total=u.steps):
        idx, rng, gen = _batch(len(pool), u.batch_size, cfg.seed, "unet", step)
        idx_t = torch.as_tensor(idx, device=device)
        eps = torch.randn(means[idx_t].shape, generator=gen).to(device)
        z = (means[idx_t] + stds[idx_t] * eps) * sf
        drop = torch.as_tensor(rng.random(len(idx)) < u.caption_dropout, device=device)
        ids = caption_ids(pool, idx, rng, parts.tokenizer).to(device)
        ids = torch.where(drop[:, None], empty, ids)
        noise = torch.randn(z.shape, generator=gen).to(device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        with autocast(cfg, device):
            with torch.no_grad():
                context = parts.text_encoder(ids)[0]
            loss = unet_loss(unet, noise_sched, z, noise, t, context, u.snr_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        ema.step(unet.parameters())
        _log_step(log, cfg, step, u.steps, loss=loss, lr=sched.get_last_lr()[0])
        timer.step()
        if (step + 1) % u.checkpoint_every == 0 and step + 1 < u.steps:
            state = {"unet": unet.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                     "sched": sched.state_dict(), "ema": ema.state_dict()}  # fmt: skip
            with timer.paused():
                torch.save(state, ckpt_file.with_suffix(".tmp"))
                ckpt_file.with_suffix(".tmp").replace(ckpt_file)
    ema.copy_to(unet.parameters())
    return unet.eval(), start


def unet_loss(unet, noise_sched, z, noise, t, context, snr_gamma: float | None):
    """The base UNet's loss on latents ``z`` (B, C, h, w): MSE to the scheduler's target
    (velocity or noise) at CPU timesteps ``t`` (B,), min-SNR weighted when ``snr_gamma``."""
    t_dev = t.to(z.device)
    noisy = noise_sched.add_noise(z, noise, t_dev)
    v_pred = noise_sched.config.prediction_type == "v_prediction"
    target = noise_sched.get_velocity(z, noise, t_dev) if v_pred else noise
    pred = unet(noisy, t_dev, encoder_hidden_states=context).sample
    err = (pred.float() - target).pow(2).mean((1, 2, 3))
    if snr_gamma:
        alphas = noise_sched.alphas_cumprod  # on the CPU, as t
        snr = (alphas[t] / (1 - alphas[t])).to(z.device)
        err = err * snr.clamp(max=snr_gamma) / (snr + 1 if v_pred else snr)
    return err.mean()


def unet_quality(parts: BaseComponents, n: int, steps=20, guidance=2.0, bf16=False, batch=16,
                 world: str = "plain"):  # fmt: skip
    """Oracle scores of images sampled from the fixed captions of val scenes 0..n-1 (every
    object is named in its caption), and the sampling time per image at this batch size."""
    graphs = Pool("val", n, world=world).graphs
    images, t0 = [], time.perf_counter()
    for s in range(0, n, batch):
        caps = [scene_caption("val", i, graphs[i], world) for i in range(s, min(s + batch, n))]
        images.extend(sb.sample_base(parts, caps, steps, guidance, seed=s, bf16=bf16))
    seconds = (time.perf_counter() - t0) / max(n, 1)
    report = score_images(images, graphs)
    return {"object_recall": report.object_recall, "relation_accuracy": report.relation_accuracy,
            "s_per_image": seconds, "batch": batch, "steps": steps, "guidance": guidance,
            "bf16": bf16}  # fmt: skip


# ----------------------------------------------------------------------------- all parts


# Fields that change how fast a base trains or how it is checked, not what it learns.
_NOT_RESULTS = {"render_workers", "log_every", "eval_size", "eval_steps", "eval_guidance"}


def train_shapes_base(out_dir: str | Path, budget: ShapesBaseConfig | None = None, device=None):
    """Train (or finish) the Shapes base under out_dir; returns (base_dir, clip_dir) for
    load_base and load_clip_vision. ``device``: where the models train and are checked
    (default: CUDA when there is one, as accelerate does for the method).
    """
    cfg, out = budget or ShapesBaseConfig(), Path(out_dir)
    if cfg.world not in WORLDS:
        raise ConfigError(f"base.world: {cfg.world!r} is not one of {list(WORLDS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base_dir, clip_dir, parts_dir, logs = out / "base", out / "clip", out / "parts", out / "logs"
    differ = saved_settings_differ(out / "config.json", cfg, _NOT_RESULTS)
    if differ:  # never finish (or return) one run's parts with another run's settings
        raise ConfigError(
            f"{out}: holds a Shapes base trained with other settings "
            f"({shown_keys(differ, 'base.')}); "
            "choose another output folder, or remove that one to retrain it"
        )
    if (base_dir / "model_index.json").is_file() and clip_dir.is_dir():
        return base_dir, clip_dir
    setup_device(device)
    logs.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.perf_counter()
    pool = Pool("train", cfg.train_size, workers=cfg.render_workers,
                captions_per_scene=cfg.captions_per_scene, seed=cfg.seed,
                world=cfg.world).to(device)  # fmt: skip
    _report(out, "pool", {"scenes": len(pool), "seconds": time.perf_counter() - t0,
                          "workers": cfg.render_workers, "device": str(device)})  # fmt: skip
    tokenizer = sb.build_tokenizer(world=cfg.world)
    if not clip_dir.is_dir():
        t0, timer = time.perf_counter(), StepTimer(cfg.clip.steps, device)
        clip_log = MetricsLog(logs / "clip.jsonl", True, None)
        clip = train_clip(cfg, pool, tokenizer, clip_log, device, timer)
        publish_dir(lambda d: sb.save_clip_folder(d, clip, tokenizer), clip_dir)
        done = training_rate(cfg.clip.steps, cfg.clip.batch_size, time.perf_counter() - t0, timer)
        if cfg.eval_size:
            done["retrieval_top1_of_64"] = clip_retrieval(clip, tokenizer, world=cfg.world)
        _report(out, "clip", done)
    if not (parts_dir / "text_encoder").is_dir():
        text_encoder = sb.clip_text_encoder(CLIPModel.from_pretrained(clip_dir))
        publish_dir(text_encoder.save_pretrained, parts_dir / "text_encoder")
    if not (parts_dir / "vae").is_dir():
        v, t0 = cfg.vae, time.perf_counter()
        timers = StepTimer(v.steps, device), StepTimer(v.refine_steps, device)
        vae = train_vae(cfg, pool, MetricsLog(logs / "vae.jsonl", True, None), device, timers)
        publish_dir(vae.save_pretrained, parts_dir / "vae")
        # the decoder refinement's steps counted in, at the same batch size; its steady
        # steps apart (refine_steady_*), as they may run at another speed
        done = training_rate(v.steps + v.refine_steps, v.batch_size, time.perf_counter() - t0,
                             timers[0])  # fmt: skip
        done.update({f"refine_{k}": n for k, n in timers[1].steady().items()})
        done["scaling"] = vae.config.scaling_factor
        quality = vae_quality(vae, cfg.eval_size, cfg.world) if cfg.eval_size else {}
        _report(out, "vae", {**done, **quality})
    text_encoder = CLIPTextModel.from_pretrained(parts_dir / "text_encoder").eval().to(device)
    vae = AutoencoderKL.from_pretrained(parts_dir / "vae").eval().to(device)
    scheduler = sb.build_noise_scheduler(cfg.unet.prediction_type, cfg.unet.beta_schedule)
    text_encoder.requires_grad_(False), vae.requires_grad_(False)
    parts = BaseComponents(None, scheduler, text_encoder, tokenizer, vae)
    ckpt_file = out / "unet_checkpoint.pt"
    t0, timer = time.perf_counter(), StepTimer(cfg.unet.steps, device)
    unet, start = train_unet(cfg, pool, parts, ckpt_file, logs / "unet.jsonl", timer)
    done = training_rate(cfg.unet.steps - start, cfg.unet.batch_size, time.perf_counter() - t0,
                         timer)  # fmt: skip
    args = (unet, vae, text_encoder, tokenizer, scheduler)
    publish_dir(lambda d: sb.save_base_folder(d, *args), base_dir)
    ckpt_file.unlink(missing_ok=True)
    if cfg.eval_size:
        base = load_base(base_dir)
        for module in (base.unet, base.vae, base.text_encoder):
            module.to(device)
        done.update(unet_quality(base, cfg.eval_size, cfg.eval_steps, cfg.eval_guidance,
                                 world=cfg.world))  # fmt: skip
    _report(out, "unet", done)
    return base_dir, clip_dir

"""The rendered Shapes scenes the base trains on, made once per run.

Scenes are cheap to make (~0.3 ms each) but a GPU run wants 200,000 or more of them, so
that its millions of samples do not memorise a few thousand images: worker processes
render them in chunks. A GPU run also cannot afford to tokenise fresh captions on the CPU
at every step (~20 ms per 512), so the pool can draw ``captions_per_scene`` captions per
scene up front, tokenised by the same workers, and every tensor can move to the GPU.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from sg2image.data.shapes import DEFAULT_WORLD, caption, generate_scene, render

CHUNK = 2000  # scenes per worker task
_CAPTION_STREAM = 7  # rng key of the pre-drawn captions, apart from the base's parts (0..3)


def caption_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CAPTION_STREAM, index])


def _make_chunk(split: str, start: int, stop: int, captions: int, seed: int, world: str):
    """Graphs, images (n, H, W, 3) uint8 and, if ``captions``, token ids (n, captions, L)."""
    graphs = [generate_scene(split, i, world) for i in range(start, stop)]
    images = np.stack([render(g) for g in graphs])
    ids = None
    if captions:
        from sg2image.models.shapes_base import build_tokenizer

        tok = build_tokenizer(world=world)
        texts = []
        for i, g in zip(range(start, stop), graphs, strict=True):
            rng = caption_rng(seed, i)
            texts += [caption(g, rng) for _ in range(captions)]
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="np").input_ids  # fmt: skip
        ids = ids.reshape(stop - start, captions, -1).astype(np.int32)
    return graphs, images, ids


class Pool:
    """Shapes scenes ``start .. start + n - 1`` of ``split`` of ``world``: ``graphs``,
    ``images`` uint8 (N, 3, 64, 64) and, when ``captions_per_scene`` > 0, ``caption_ids``
    (N, k, L) int32.

    ``workers`` > 1 renders in that many processes (spawned: safe after CUDA starts); the
    result does not depend on it.
    """

    def __init__(self, split: str, n: int, start: int = 0, workers: int = 0,
                 captions_per_scene: int = 0, seed: int = 0, chunk: int = CHUNK,
                 world: str = DEFAULT_WORLD):  # fmt: skip
        bounds = [(s, min(s + chunk, start + n)) for s in range(start, start + n, chunk)]
        args = [(split, a, b, captions_per_scene, seed, world) for a, b in bounds]
        show = n > 20000  # small pools are made in well under a second
        if workers > 1 and len(bounds) > 1:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(bounds)), mp_context=ctx) as ex:
                made = ex.map(_make_chunk, *zip(*args, strict=True))
                chunks = list(tqdm(made, total=len(args), desc="render pool", disable=not show))
        else:
            chunks = [_make_chunk(*a) for a in tqdm(args, desc="render pool", disable=not show)]
        self.graphs = [g for c in chunks for g in c[0]]
        images = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, 64, 64, 3))
        self.images = torch.from_numpy(images.astype(np.uint8)).permute(0, 3, 1, 2)
        self.caption_ids = None
        if captions_per_scene:
            self.caption_ids = torch.from_numpy(np.concatenate([c[2] for c in chunks]))

    def __len__(self) -> int:
        return len(self.graphs)

    def to(self, device) -> Pool:
        """Move the images (and caption ids) to ``device``; batches are then indexed there."""
        self.images = self.images.to(device)
        if self.caption_ids is not None:
            self.caption_ids = self.caption_ids.to(device)
        return self

    def pixels(self, idx) -> torch.Tensor:
        """Images ``idx`` as float in [-1, 1], on the pool's device."""
        idx = torch.as_tensor(idx, device=self.images.device)
        return self.images[idx].float() / 127.5 - 1.0

    def captions(self, idx, rng: np.random.Generator) -> torch.Tensor:
        """Token ids (B, L) of one pre-drawn caption per scene ``idx``, chosen by ``rng``."""
        which = torch.as_tensor(rng.integers(self.caption_ids.shape[1], size=len(idx)))
        idx = torch.as_tensor(idx)
        return self.caption_ids[idx.to(self.caption_ids.device), which.to(self.caption_ids.device)]

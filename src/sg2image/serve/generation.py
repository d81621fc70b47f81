"""The pipeline as the batcher's runner: (steps, guidance, sampler), graphs, seeds -> PNGs."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch

from sg2image.graph import SceneGraph
from sg2image.pipeline import SCHEDULERS, SceneGraphPipeline
from sg2image.serve.batching import BatchKey

SEED_SPACE = 2**32  # seeds are in [0, 2**32): exact in JSON and in JavaScript numbers


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def seeds_for(seed: int, n: int) -> list[int]:
    """Image j of a request uses seed + j (wrapping), so any image can be made again alone."""
    return [(seed + j) % SEED_SPACE for j in range(n)]


class PipelineRunner:
    """Runs on the batcher's one worker thread, so swapping the scheduler is race-free.

    Each image has its own generator seeded with its seed: an image depends on its graph, seed,
    steps, guidance and sampler, not on the requests it was batched with.
    """

    def __init__(self, pipe: SceneGraphPipeline):
        self.pipe = pipe
        self.default = pipe.scheduler
        self._schedulers: dict[str, object] = {}
        names = [n for n, cls in SCHEDULERS.items() if type(self.default) is cls]
        self.default_sampler = names[0] if names else type(self.default).__name__

    def scheduler(self, name: str | None):
        if name is None or name == self.default_sampler:
            return self.default
        if name not in self._schedulers:  # from the model's own config: its noise schedule
            self._schedulers[name] = SCHEDULERS[name].from_config(self.default.config)
        return self._schedulers[name]

    @property
    def image_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def __call__(
        self, key: BatchKey, graphs: Sequence[SceneGraph], seeds: Sequence[int]
    ) -> list[bytes]:
        self.pipe.scheduler = self.scheduler(key.sampler)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        out = self.pipe(
            list(graphs),
            num_inference_steps=key.steps,
            guidance_scale=key.guidance,
            generator=generators,
        )
        return [png_bytes(im) for im in out.images]

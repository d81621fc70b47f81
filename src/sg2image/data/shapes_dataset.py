"""The Shapes world as a torch Dataset (images rendered on the fly), for training and
sampling. Apart from :mod:`sg2image.data.shapes` so that the world itself needs no torch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from sg2image.data.shapes import (
    DEFAULT_WORLD,
    IMAGE_SIZE,
    _check_split,
    _check_world,
    _default_size,
    _split_code,
    caption,
    generate_scene,
    render,
    scene_caption,
)
from sg2image.graph import SceneGraph


class ShapesDataset(Dataset):
    """Scenes start .. start+size-1 of a split, rendered on the fly.

    Items: {"pixel_values": float (3, H, W) in [-1, 1], "graph", "caption", "index"}, where
    "index" is the scene's index in the split; ``world``: "plain" (default) or "depth".
    Captions are the fixed `scene_caption` unless `caption_seed` is given: then each (seed,
    epoch, scene) draws its own caption, which stays reproducible and is safe with
    DataLoader workers (no shared rng state); call `set_epoch` to get new ones.
    """

    def __init__(
        self,
        split: str,
        size: int | None = None,
        start: int = 0,
        image_size: int = IMAGE_SIZE,
        caption_seed: int | None = None,
        world: str = DEFAULT_WORLD,
    ) -> None:
        _check_world(world)
        if size is None:
            size = _default_size(split, start)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        _check_split(split, start + max(size - 1, 0))
        self.split, self.size, self.start, self.world = split, size, start, world
        self.image_size = image_size
        self.caption_seed = caption_seed
        self.epoch = 0
        self._graphs: dict[int, SceneGraph] = {}

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def graph(self, i: int) -> SceneGraph:
        index = self.start + i
        if index not in self._graphs:
            self._graphs[index] = generate_scene(self.split, index, self.world)
        return self._graphs[index]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(i)
        index = self.start + i
        graph = self.graph(i)
        if self.caption_seed is None:
            text = scene_caption(self.split, index, graph, self.world)
        else:
            key = [self.caption_seed, self.epoch, _split_code(self.split, self.world), index]
            seq = np.random.SeedSequence(key)
            text = caption(graph, np.random.default_rng(seq))
        image = torch.from_numpy(render(graph, self.image_size)).permute(2, 0, 1)
        return {
            "pixel_values": image.float() / 127.5 - 1.0,
            "graph": graph,
            "caption": text,
            "index": index,
        }

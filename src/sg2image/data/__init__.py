"""Datasets: each yields ``{"pixel_values" (3, H, W) in [-1, 1], "graph": SceneGraph,
"caption": str, "index": int}`` so training and evaluation never care where data came from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # imported where used: `sg2image.data.shapes` serves the CLI without torch
    import torch


def load_image(path: str | Path, size: int, resample=Image.Resampling.BICUBIC) -> torch.Tensor:
    """An image file resized (no crop, as the sg2im protocols do) to (3, size, size) in [-1, 1]."""
    import torch

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), resample)
        pixels = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    return pixels.float() / 127.5 - 1.0

"""Off-colour specks: pixels of a Shapes image that show a colour the scene does not have.

A speck is what a GroupNorm "droplet" of the VAE decoder leaves (a few magenta, green or
yellow pixels at an object's corner; see training/vae_refine.py). Two counts:

- off-colour pixels: the oracle's colour assignment (nearest palette colour within
  ``oracle.COLOUR_THRESHOLD``) gives a palette colour that none of the graph's objects
  has. Needs only the graph, so it also judges generated images.
- far pixels: farther than ``FAR_RGB`` from the ground-truth render, more than 1 px from
  any edge of it (edges may blur a little). Needs the render: reconstructions only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from sg2image.data.shapes import BACKGROUND, COLOURS
from sg2image.eval.oracle import COLOUR_THRESHOLD, colour_of
from sg2image.graph import SceneGraph

# RGB distance from the render that no faithful reconstruction reaches off the edges
# (the shipped VAE's typical error there is a few levels).
FAR_RGB = 60.0

_NAMES = list(COLOURS)
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)


def palette_index(image: np.ndarray) -> np.ndarray:
    """(H, W) palette index of each pixel as the oracle assigns it: 0 background (or no
    colour within the threshold), k >= 1 the k-th colour of COLOURS."""
    pixels = np.asarray(image).reshape(-1, 3).astype(np.float32)
    dist2 = ((pixels[:, None, :] - _PALETTE[None]) ** 2).sum(-1)
    nearest = dist2.argmin(1)
    nearest[dist2[np.arange(len(nearest)), nearest] >= COLOUR_THRESHOLD**2] = 0
    return nearest.reshape(image.shape[:2])


def off_colour_mask(image: np.ndarray, graph: SceneGraph) -> np.ndarray:
    """Pixels whose palette colour belongs to no object of the graph."""
    allowed = [0] + [_NAMES.index(colour_of(label)) + 1 for label in graph.objects]
    return ~np.isin(palette_index(image), allowed)


def far_mask(image: np.ndarray, render: np.ndarray, far: float = FAR_RGB) -> np.ndarray:
    """Pixels more than `far` RGB away from the render and over 1 px from its edges."""
    code = render.astype(np.int64) @ np.array([1, 256, 65536])  # one int per colour
    near_edge = ndimage.maximum_filter(code, 3, mode="nearest") != ndimage.minimum_filter(
        code, 3, mode="nearest"
    )
    dist = np.linalg.norm(image.astype(np.float32) - render.astype(np.float32), axis=-1)
    return (dist > far) & ~near_edge


def speck_counts(
    images: Sequence[np.ndarray],
    graphs: Sequence[SceneGraph],
    renders: Sequence[np.ndarray] | None = None,
) -> dict:
    """Totals over the images: off-colour pixels, their connected specks and the images
    with any; with renders, also the far pixels and the images with any."""
    off = [off_colour_mask(im, g) for im, g in zip(images, graphs, strict=True)]
    counts = {
        "images": len(off),
        "off_colour_pixels": int(sum(m.sum() for m in off)),
        "off_colour_specks": int(sum(ndimage.label(m)[1] for m in off)),
        "images_with_off_colour": int(sum(m.any() for m in off)),
    }
    if renders is not None:
        far = [far_mask(im, r) for im, r in zip(images, renders, strict=True)]
        counts["far_pixels"] = int(sum(m.sum() for m in far))
        counts["images_with_far"] = int(sum(m.any() for m in far))
    return counts

"""COCO masks without pycocotools: compressed-RLE strings, RLE masks, polygon masks, and
the mask-weighted centre that sg2im's synthetic relations are computed from."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# ----------------------------------------------------------------------------- RLE masks


def decode_rle_string(s: str) -> list[int]:
    """The run lengths of a COCO compressed-RLE string (pycocotools' LEB128-like format:
    5 bits a character, offset by 48, 0x20 = more follows, 0x10 = sign of the last one;
    from the third count on, each is stored as the difference to the count two before)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle_string(counts: Sequence[int]) -> str:
    """The inverse of :func:`decode_rle_string` (pycocotools' rleToString)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_to_mask(rle: dict) -> np.ndarray:
    """(h, w) bool mask of a COCO RLE dict (``counts`` a list or a compressed string;
    runs alternate background / foreground, starting with background, column-major)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = decode_rle_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h} * {w} = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T


def _polygon_centre(polygons: list, box: Sequence[float], width: int, height: int):
    """Mean pixel position of the polygons, rasterised in the box's region (None if empty)."""
    bx, by, bw, bh = box
    x0 = max(int(math.floor(bx)) - 1, 0)
    y0 = max(int(math.floor(by)) - 1, 0)
    x1 = min(int(math.ceil(bx + bw)) + 2, width)
    y1 = min(int(math.ceil(by + bh)) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) < 6:
            continue
        pts = [(poly[k] - x0, poly[k + 1] - y0) for k in range(0, len(poly) - 1, 2)]
        draw.polygon(pts, fill=1)
    ys, xs = np.nonzero(np.asarray(canvas))
    if len(xs) == 0:
        return None
    return float(xs.mean() + x0), float(ys.mean() + y0)


def mask_centre(ann: dict, width: int, height: int) -> tuple[float, float]:
    """The annotation's mask-weighted centre (cx, cy) normalised by the image size; the
    box centre when it has no (or an empty) mask."""
    seg = ann.get("segmentation")
    centre = None
    if isinstance(seg, list) and seg:
        centre = _polygon_centre(seg, ann["bbox"], width, height)
    elif isinstance(seg, dict) and "counts" in seg:
        mask = rle_to_mask(seg)
        ys, xs = np.nonzero(mask)
        if len(xs):
            centre = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    if centre is None:
        x, y, w, h = ann["bbox"]
        centre = (x + w / 2, y + h / 2)
    return centre[0] / width, centre[1] / height

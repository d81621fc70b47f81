"""Attention localisation: each object token's cross-attention pulled into its object's box.

A layout-free model has no map that says where an object goes; its object tokens can carry
their box (``conditioner.object_boxes``), but the denoising loss alone does not teach the
UNet to read it (a mirrored box moves no object). This loss supervises the reading
directly, as TokenCompose (Wang et al., CVPR 2024) does with segmentation masks: with the
graphs' true boxes, for every cross-attention layer,

* a token term, (1 - share of token k's attention mass that falls inside box k)^2: where
  the token is read;
* a pixel term, binary cross-entropy between the attention that each pixel pays to token k
  and box k's mask: inside its box, a pixel reads the object's token rather than the
  label prompt, which carries no place.

Boxes are given as (x0, y0, x1, y1) in [0, 1]; a box covers every latent pixel it touches,
so a small box still owns a pixel at the coarsest level.

In the depth world an object is seen only where nothing in front of it covers it, so its
token's target is its *visible* region: its box less the boxes of the objects that overlap
it with a higher depth rank (``graph.depth_ranks``: drawn later, over it). Where two boxes
overlap, the pixels then read the front object's token and not the back one's: the order
the graph states is taught to the cross-attention itself, not left to the denoising loss,
in which a depth pair's overlap is a few pixels of the mean.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor

from sg2image.graph import depth_ranks


class RecordingAttnProcessor(AttnProcessor):
    """diffusers' plain cross-attention, which also keeps the attention probabilities of the
    context tokens ``columns`` (a slice), averaged over heads: (B, h * w, K) per call."""

    def __init__(self, store: list, columns: slice):
        super().__init__()
        self.store, self.columns = store, columns

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs):  # fmt: skip
        scores = attn.get_attention_scores

        def record(query, key, mask=None):
            probs = scores(query, key, mask)  # (B * heads, queries, keys), batch-major
            self.store.append(probs.unflatten(0, (-1, attn.heads)).mean(1)[..., self.columns])
            return probs

        # The instance attribute shadows the method for this call only: the rest of the
        # computation stays diffusers' own.
        attn.get_attention_scores = record
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask,
                                    temb, *args, **kwargs)  # fmt: skip
        finally:
            del attn.get_attention_scores


@contextlib.contextmanager
def recording_cross_attention(unet: torch.nn.Module, columns: slice):
    """Within the block, the UNet's cross-attention layers record the attention paid to the
    context tokens ``columns``; yields the list they append to (one (B, h * w, K) tensor per
    layer and call). The layers' own processors come back afterwards."""
    store: list[torch.Tensor] = []
    layers = [m for m in unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    saved = [m.processor for m in layers]
    try:
        for m in layers:
            m.set_processor(RecordingAttnProcessor(store, columns))
        yield store
    finally:
        for m, p in zip(layers, saved, strict=True):
            m.set_processor(p)


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, 4) boxes in [0, 1] -> (B, K, h, w) float masks: 1 on every pixel a box
    touches."""
    h, w = size
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))
    # pixel j spans [j, j + 1) / size; it is touched when that span meets the box
    in_x = (xs + 1 > x0 * w) & (xs < x1 * w)
    in_y = (ys + 1 > y0 * h) & (ys < y1 * h)
    return (in_y[..., :, None] & in_x[..., None, :]).to(boxes.dtype)


def visible_masks(boxes: torch.Tensor, ranks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, 4) boxes and (B, K) depth ranks -> (B, K, h, w) masks of each object's visible
    part: its box's pixels less those of every box that overlaps it (in [0, 1] coordinates,
    not merely in touched pixels) with a higher rank. Where that leaves nothing at a coarse
    level, the whole box's mask stands, so that every object keeps a target."""

    def meets(lo, hi):  # (B, K, J): the spans of k and j share positive length
        k, j = (slice(None), slice(None), None), (slice(None), None)
        return torch.minimum(hi[k], hi[j]) > torch.maximum(lo[k], lo[j])

    masks = box_masks(boxes, size)
    x0, y0, x1, y1 = boxes.unbind(-1)
    # (B, K, J): box j overlaps box k with positive area and is drawn over it
    over = meets(x0, x1) & meets(y0, y1) & (ranks[:, None, :] > ranks[:, :, None])
    cover = (over[..., None, None].to(masks.dtype) * masks[:, None]).amax(2)  # (B, K, h, w)
    visible = masks * (1 - cover)
    empty = visible.sum((-1, -2), keepdim=True) == 0
    return torch.where(empty, masks, visible)


def dense_boxes(graphs, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, slots, 4) boxes and (B, slots) depth ranks of each graph's objects in object
    order, as its object tokens are (objects past ``slots`` dropped, missing slots zero)."""
    boxes = torch.zeros(len(graphs), slots, 4)
    ranks = torch.zeros(len(graphs), slots, dtype=torch.long)
    for i, g in enumerate(graphs):
        if g.boxes is None:
            raise ValueError(f"graphs[{i}]: the localisation loss needs boxes; this graph has none")
        rows = [list(b) for b in g.boxes[:slots]]
        if rows:
            boxes[i, : len(rows)] = torch.tensor(rows, dtype=torch.float32)
            ranks[i, : len(rows)] = torch.tensor(depth_ranks(g)[:slots])
    return boxes, ranks


def localisation_loss(
    maps: list[torch.Tensor],
    boxes: torch.Tensor,
    valid: torch.Tensor,
    ranks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The token and pixel terms, averaged over the layers and the valid tokens.

    maps: per layer (B, h * w, K) attention probabilities (square latents); boxes (B, K, 4)
    in [0, 1]; valid (B, K) bool: the tokens that stand for an object (not padding, not a
    dropped graph); ranks (B, K): depth ranks, whose objects' targets are then their visible
    parts (None: whole boxes). Returns 0 (with a graph) when no token is valid.
    """
    if not maps:
        raise ValueError("no cross-attention was recorded: does the UNet cross-attend?")
    weight = valid.float()
    count = weight.sum()
    total = maps[0].new_zeros(())
    by_side: dict[int, torch.Tensor] = {}  # the targets of each latent size, made once
    for probs in maps:
        side = math.isqrt(probs.shape[1])
        if side * side != probs.shape[1]:
            raise ValueError(f"attention over {probs.shape[1]} pixels: expected a square latent")
        probs = probs.float().transpose(1, 2)  # (B, K, h * w)
        if side not in by_side:
            if ranks is None:
                made = box_masks(boxes.float(), (side, side))
            else:
                made = visible_masks(boxes.float(), ranks, (side, side))
            by_side[side] = made.flatten(2)  # (B, K, h * w)
        masks = by_side[side]
        inside = (probs * masks).sum(-1) / probs.sum(-1).clamp(min=1e-8)
        token = (1 - inside) ** 2
        pixel = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), masks, reduction="none")
        per_token = token + pixel.mean(-1)
        total = total + (per_token * weight).sum() / count.clamp(min=1)
    return total / len(maps)

"""The conditioning signal: label tokens from the frozen CLIP text encoder fused with graph tokens.

The UNet's cross-attention reads one context sequence per image. It is built from

* label tokens: the graph's object labels as a prompt ("red circle, blue square"),
  through the frozen text encoder (B, L, D_text): what the base model already understands;
* graph tokens: learned projections of the graph encoder's global vector (B, 1, D_text)
  and, with ``tokens="global+local"``, of its per-triple vectors (B, max_triples, D_text):
  what text cannot say (who is left of whom); with ``object_tokens``, also one token per
  object from its vector after message passing (B, max_objects, D_text): the object with
  its graph context ("the red circle that is in front of the blue square"), which a pixel
  can find by the object's label alone, where a triple token must be found by two.

Fusion ``"concat"`` appends graph tokens after the label tokens (padded triple slots
masked out); ``"interleave"`` is the authors' layout: label and graph tokens alternate and
the length stays that of the prompt. Which works better is measured, not assumed.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch_geometric.utils import to_dense_batch

FUSIONS = ("concat", "interleave")
TOKEN_SETS = ("global", "global+local")


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Frozen text-encoder hidden states (B, L, D_text), padded to the tokenizer's max length
    exactly as Stable Diffusion does, so a base model sees the context it was trained on."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0]


class GraphConditioner(ModelMixin, ConfigMixin):
    """Projects graph vectors to the text width and fuses them with label tokens.

    A learned null token stands for "no graph" (classifier-free guidance and conditioning
    dropout) instead of the authors' practice of keeping the graph in the unconditional
    branch, which would make guidance unable to push towards the graph.
    """

    @register_to_config
    def __init__(
        self,
        global_dim: int = 512,  # width of the graph encoder's global vector
        triple_dim: int = 1536,  # width of its per-triple vector [s; p; o]
        text_dim: int = 768,  # text encoder hidden width = UNet cross-attention width
        fusion: str = "concat",  # "concat" or "interleave"
        tokens: str = "global+local",  # "global" or "global+local"
        max_triples: int = 16,  # local tokens per image (the paper uses up to 15)
        use_labels: bool = True,  # False: graph tokens only (an ablation)
        use_graph: bool = True,  # False: label tokens only (an ablation)
        object_tokens: bool = False,  # one token per object from the encoder's object vectors
        obj_dim: int | None = None,  # width of those vectors (None: global_dim)
        max_objects: int = 8,  # object tokens per image (objects past it are dropped)
        object_slots: bool = False,  # object token k also gets a learned slot vector k: the
        # index the layout map paints (LayoutEncoder(instance_slots=...)), binding each token to
        # its box
        triple_slots: bool = False,  # each triple token also gets its subject's and its
        # object's slot vectors: where two boxes overlap the map holds both slots, and the
        # token of the triple relating those two objects matches them both
        object_depth: bool = False,  # object token k also gets a learned vector of its depth
        # rank (graph.depth_ranks, from the graph's depth triples): with the slots, a pixel
        # where two boxes overlap finds both objects' tokens, and the ranks say which is nearer
        object_boxes: bool = False,  # object token k also gets a Fourier embedding of its box:
        # the true box in training, the box head's prediction from the graph when sampling
        box_frequencies: int = 6,  # Fourier frequencies per box coordinate (pi * 2^0..2^(n-1))
        refine_boxes: dict | None = None,  # settings of models.layout.refine_boxes applied to
        # the box head's boxes when sampling (None: embedded as predicted): the layout stage's
        # projection, so that the tokens' boxes satisfy the graph's geometric predicates
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: {fusion!r} is not one of {FUSIONS}")
        if tokens not in TOKEN_SETS:
            raise ValueError(f"tokens: {tokens!r} is not one of {TOKEN_SETS}")
        if not (use_labels or use_graph):
            raise ValueError("use_labels and use_graph cannot both be False")
        self.global_proj = nn.Sequential(nn.LayerNorm(global_dim), nn.Linear(global_dim, text_dim))
        self.local_proj = (
            nn.Sequential(nn.LayerNorm(triple_dim), nn.Linear(triple_dim, text_dim))
            if tokens == "global+local"
            else None
        )
        d_obj = obj_dim or global_dim
        self.object_proj = None
        if object_tokens:
            self.object_proj = nn.Sequential(nn.LayerNorm(d_obj), nn.Linear(d_obj, text_dim))
        if object_slots and not object_tokens:
            raise ValueError("object_slots needs object_tokens")
        if object_depth and not object_tokens:
            raise ValueError("object_depth needs object_tokens")
        if object_boxes and not object_tokens:
            raise ValueError("object_boxes needs object_tokens")
        if triple_slots and tokens != "global+local":
            raise ValueError("triple_slots needs tokens='global+local'")
        self.object_slot = (
            nn.Parameter(torch.randn(max_objects, text_dim) * 0.02)
            if object_slots or triple_slots
            else None
        )
        # Ranks run from 0 to (objects - 1); a zero start keeps a warm-started model's tokens.
        self.depth_embed = (
            nn.Parameter(torch.zeros(max_objects, text_dim)) if object_depth else None
        )
        self.box_head = self.box_embed = None
        if object_boxes:
            self.box_head = nn.Sequential(
                nn.LayerNorm(d_obj), nn.Linear(d_obj, d_obj), nn.ReLU(), nn.Linear(d_obj, 4)
            )
            # Zero start: the tokens begin as those of a model without boxes.
            self.box_embed = nn.Linear(8 * box_frequencies, text_dim)
            nn.init.zeros_(self.box_embed.weight)
            nn.init.zeros_(self.box_embed.bias)
        # Distinguishes graph tokens from text tokens for the cross-attention keys.
        self.graph_type = nn.Parameter(torch.zeros(text_dim))
        self.null_graph = nn.Parameter(torch.randn(text_dim) * 0.02)

    @property
    def num_graph_tokens(self) -> int:
        return (
            1
            + (self.config.max_triples if self.local_proj is not None else 0)
            + (self.config.max_objects if self.object_proj is not None else 0)
        )

    def object_columns(self, context_len: int) -> slice:
        """Where the object tokens sit in a fused context of length ``context_len``: last,
        one per slot (concat fusion, or graph tokens only); interleave scatters them."""
        cfg = self.config
        if self.object_proj is None:
            raise ValueError("object_columns: this conditioner has no object tokens")
        if not cfg.use_graph or (cfg.use_labels and cfg.fusion != "concat"):
            raise ValueError("object_columns: object tokens have fixed places only with concat")
        return slice(context_len - cfg.max_objects, context_len)

    def _slots(self, vecs, proj, to_img, batch_size, slots, extra=None):
        """(N, d) vectors of a packed batch (plus ``extra`` (N, D_text) after the projection)
        -> (B, slots, D_text) tokens and (B, slots) mask."""
        tokens = proj(vecs) + self.graph_type
        if extra is not None:
            tokens = tokens + extra
        dense, mask = to_dense_batch(tokens, to_img, batch_size=batch_size, max_num_nodes=slots)
        pad = slots - dense.shape[1]
        return nn.functional.pad(dense, (0, 0, 0, pad)), nn.functional.pad(mask, (0, pad))

    def graph_tokens(
        self,
        global_vec: torch.Tensor,
        triple_vecs: torch.Tensor | None = None,
        triple_to_img: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        obj_vecs: torch.Tensor | None = None,
        obj_to_img: torch.Tensor | None = None,
        triple_objs: torch.Tensor | None = None,
        obj_depth: torch.Tensor | None = None,
        obj_boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph tokens (B, G, D_text) and their validity mask (B, G) bool.

        global_vec (B, global_dim); triple_vecs (T, triple_dim) with triple_to_img (T,);
        obj_vecs (O', obj_dim) with obj_to_img (O',), the real objects only (no image nodes;
        needed with ``object_tokens``); triple_objs (T, 2) long, each triple's subject and
        object as indices among its image's objects, -1 for the image node (needed with
        ``triple_slots``); obj_depth (O',) long, each of those objects' depth rank from 0
        (``graph.depth_ranks``; needed with ``object_depth``); obj_boxes (O', 4) their boxes
        (x0, y0, x1, y1) in [0, 1] (needed with ``object_boxes``); drop (B,) bool replaces a graph
        by the null token (its other slots masked out).
        """
        b = global_vec.shape[0]
        tokens = (self.global_proj(global_vec) + self.graph_type).unsqueeze(1)
        mask = torch.ones(b, 1, dtype=torch.bool, device=global_vec.device)
        slot_sets = (  # (projection, vectors, their images, slots, what asks for them)
            (self.local_proj, triple_vecs, triple_to_img, self.config.max_triples,
             "tokens='global+local' needs triple_vecs and triple_to_img"),
            (self.object_proj, obj_vecs, obj_to_img, self.config.max_objects,
             "object_tokens=True needs obj_vecs and obj_to_img"),
        )  # fmt: skip
        parts, masks = [tokens], [mask]
        for proj, vecs, to_img, slots, needs in slot_sets:
            if proj is None:
                continue
            if vecs is None or to_img is None:
                raise ValueError(needs)
            extra = None
            if proj is self.local_proj and self.config.triple_slots:
                extra = self._triple_slot_sum(triple_objs, len(vecs))
            if proj is self.object_proj:
                extra = self._object_extras(obj_depth, obj_boxes, len(vecs))
            dense, dense_mask = self._slots(vecs, proj, to_img, b, slots, extra)
            if proj is self.object_proj and self.object_slot is not None:
                dense = dense + self.object_slot * dense_mask[..., None]  # token k: slot k
            parts.append(dense)
            masks.append(dense_mask)
        tokens, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        if drop is not None and drop.any():
            null = self.null_graph.to(tokens.dtype).expand_as(tokens)
            tokens = torch.where(drop[:, None, None], null, tokens)
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True
            mask = torch.where(drop[:, None], null_mask, mask)
        return tokens, mask

    def _triple_slot_sum(self, triple_objs: torch.Tensor | None, n: int) -> torch.Tensor:
        """(T, D_text): the slot vectors of each triple's subject and object (none for the
        image node)."""
        if triple_objs is None or triple_objs.shape != (n, 2):
            raise ValueError("triple_slots=True needs triple_objs (T, 2)")
        if len(triple_objs) and int(triple_objs.max()) >= len(self.object_slot):
            raise ValueError(
                f"a triple names object {int(triple_objs.max())} of its image; this conditioner "
                f"has {len(self.object_slot)} slots (max_objects)"
            )
        found = triple_objs >= 0
        vecs = self.object_slot[triple_objs.clamp(min=0)] * found[..., None]
        return vecs.sum(1)

    def _object_extras(self, obj_depth, obj_boxes, n: int) -> torch.Tensor | None:
        """(O', D_text) or None: what object tokens get besides their projection (depth-rank
        vectors, box embeddings)."""
        extras = []
        if self.depth_embed is not None:
            extras.append(self._depth_vectors(obj_depth, n))
        if self.box_embed is not None:
            if obj_boxes is None or obj_boxes.shape != (n, 4):
                raise ValueError("object_boxes=True needs obj_boxes (O', 4)")
            extras.append(self.box_embed(self.fourier(obj_boxes)))
        return sum(extras) if extras else None

    def fourier(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) boxes -> (N, 8 * box_frequencies) sines and cosines."""
        n = self.config.box_frequencies
        freqs = math.pi * 2.0 ** torch.arange(n, device=boxes.device, dtype=boxes.dtype)
        angles = (boxes[..., None] * freqs).flatten(-2)
        return torch.cat([angles.sin(), angles.cos()], -1)

    def predict_boxes(self, obj_vecs: torch.Tensor) -> torch.Tensor:
        """(O', obj_dim) object vectors -> (O', 4) boxes (x0, y0, x1, y1) in [0, 1]: centre
        and size through sigmoids, so every box is valid and inside the canvas."""
        if self.box_head is None:
            raise ValueError("predict_boxes needs object_boxes=True")
        c, s = self.box_head(obj_vecs).float().split(2, -1)
        c, half = c.sigmoid(), s.sigmoid() / 2
        lo, hi = (c - half).clamp(0, 1), (c + half).clamp(0, 1)
        return torch.cat([lo, hi], -1).to(obj_vecs.dtype)

    def _depth_vectors(self, obj_depth: torch.Tensor | None, n: int) -> torch.Tensor:
        """(O', D_text): the depth-rank vector of each object (ranks past the last one share
        it: a chain that long cannot occur within max_objects objects of one image)."""
        if obj_depth is None or obj_depth.shape != (n,):
            raise ValueError("object_depth=True needs obj_depth (O',)")
        if len(obj_depth) and int(obj_depth.min()) < 0:
            raise ValueError("obj_depth: depth ranks start at 0")
        return self.depth_embed[obj_depth.clamp(max=len(self.depth_embed) - 1)]

    def null_tokens(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional graph tokens: the null token, every triple slot masked."""
        g = self.num_graph_tokens
        tokens = self.null_graph.expand(batch_size, g, -1)
        mask = torch.zeros(batch_size, g, dtype=torch.bool, device=tokens.device)
        mask[:, 0] = True
        return tokens, mask

    def fuse(
        self, label_tokens: torch.Tensor, graph_tokens: torch.Tensor, graph_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One cross-attention context (B, L', D_text) and its mask (B, L') or None.

        label_tokens (B, L, D_text); graph_tokens (B, G, D_text); graph_mask (B, G).
        """
        cfg = self.config
        if not cfg.use_graph:
            return label_tokens, None
        graph_tokens = graph_tokens.to(label_tokens.dtype)
        if not cfg.use_labels:
            return graph_tokens, graph_mask
        if cfg.fusion == "concat":
            text_mask = torch.ones(
                label_tokens.shape[:2], dtype=torch.bool, device=graph_mask.device
            )
            return torch.cat([label_tokens, graph_tokens], 1), torch.cat([text_mask, graph_mask], 1)
        # interleave: text[k], graph[k mod n_valid], ... keeping the prompt length; the text
        # tokens past L/2 are padding for label prompts, which is what the authors drop too.
        b, length, _ = label_tokens.shape
        half = (length + 1) // 2
        n_valid = graph_mask.sum(1, keepdim=True).clamp(min=1)  # valid tokens come first
        pick = torch.arange(length // 2, device=graph_mask.device)[None] % n_valid
        picked = torch.gather(
            graph_tokens, 1, pick[..., None].expand(-1, -1, graph_tokens.shape[-1])
        )
        out = torch.empty_like(label_tokens)
        out[:, 0::2] = label_tokens[:, :half]
        out[:, 1::2] = picked
        return out, None

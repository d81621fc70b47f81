"""Scene-graph encoder: sg2im-style triple graph convolution (as in SGDiff's encoder).

Shapes: O objects and T triples over a batch of B graphs, packed as in
:class:`sg2image.graph.GraphBatch`; D = ``embed_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn
from torch_geometric.utils import scatter, to_dense_batch

from sg2image.graph import GraphBatch


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear + ReLU after every layer (sg2im ``build_mlp`` with a final non-linearity),
    Kaiming-normal init as in sg2im: it keeps the activation scale through the 6 stacked
    layers, where PyTorch's default init shrinks it by ~6x per linear + ReLU."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        lin = nn.Linear(d_in, d_out)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers)


class TripleGraphConv(nn.Module):
    """One sg2im triple convolution.

    For each triple, ``net1`` maps ``[s; p; o]`` (obj_dim + pred_dim + obj_dim) to a
    subject candidate (hidden_dim), a new predicate vector (out_dim) and an object
    candidate (hidden_dim). Each object pools (mean or sum) the candidates it receives as
    subject or object; ``net2`` (hidden_dim -> hidden_dim -> out_dim) updates it.
    """

    def __init__(
        self,
        obj_dim: int,
        pred_dim: int,
        out_dim: int,
        hidden_dim: int,
        triple_hidden_dim: int,
        pooling: str = "avg",
    ):
        super().__init__()
        if pooling not in ("avg", "sum"):
            raise ValueError(f"pooling must be 'avg' or 'sum', got {pooling!r}")
        self.hidden_dim, self.out_dim = hidden_dim, out_dim
        self.reduce = "mean" if pooling == "avg" else "sum"
        self.net1 = _mlp([2 * obj_dim + pred_dim, triple_hidden_dim, 2 * hidden_dim + out_dim])
        self.net2 = _mlp([hidden_dim, hidden_dim, out_dim])

    def forward(
        self, obj_vecs: torch.Tensor, pred_vecs: torch.Tensor, edges: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """obj_vecs (O, obj_dim), pred_vecs (T, pred_dim), edges (T, 2) long (s, o)
        -> new obj_vecs (O, out_dim), new pred_vecs (T, out_dim)."""
        s_idx, o_idx = edges[:, 0], edges[:, 1]
        h = self.net1(torch.cat([obj_vecs[s_idx], pred_vecs, obj_vecs[o_idx]], dim=1))
        H = self.hidden_dim
        new_s, new_p, new_o = h[:, :H], h[:, H : H + self.out_dim], h[:, H + self.out_dim :]
        # Objects with no triple at all (cannot happen with __in_image__ triples) pool to 0.
        pooled = scatter(
            torch.cat([new_s, new_o], dim=0),
            torch.cat([s_idx, o_idx], dim=0),
            dim=0,
            dim_size=obj_vecs.size(0),
            reduce=self.reduce,
        )
        return self.net2(pooled), new_p


@dataclass
class GraphEncoderOutput(BaseOutput):
    """obj_vecs (O, D), pred_vecs (T, D), triple_vecs (T, 3D) = [s; p; o] after the net,
    global_vec (B, global_dim)."""

    obj_vecs: torch.Tensor
    pred_vecs: torch.Tensor
    triple_vecs: torch.Tensor
    global_vec: torch.Tensor


class SceneGraphEncoder(ModelMixin, ConfigMixin):
    """Scene graph -> per-object, per-triple and per-graph vectors.

    Paper scale (the defaults): embeddings of width 512, one triple-conv layer then a
    ``num_layers``-layer triple-conv net (so ``num_layers + 1`` convolutions), triple MLP
    1536 -> 512 -> 1536, object update MLP 512 -> 512 -> 512, average pooling, global
    vector Linear(1024 -> 512). With ``use_boxes`` the (O, 4) box coordinates are
    concatenated to the object embeddings before the first convolution.

    No residual connection or LayerNorm: sg2im/SGDiff have none, and with the Kaiming
    init the activation scale stays O(1) through the 6 layers at init (checked in
    tests/test_graph_encoder.py), so neither is needed for stability. No BatchNorm either:
    a graph's vectors must not depend on the other graphs of its batch.
    """

    @register_to_config
    def __init__(
        self,
        num_objects: int,
        num_predicates: int,
        embed_dim: int = 512,
        hidden_dim: int = 512,
        triple_hidden_dim: int = 512,
        num_layers: int = 5,
        pooling: str = "avg",
        global_dim: int = 512,
        use_boxes: bool = False,
    ):
        super().__init__()
        D = embed_dim
        self.obj_embed = nn.Embedding(num_objects, D)
        self.pred_embed = nn.Embedding(num_predicates, D)
        obj_in = D + 4 if use_boxes else D
        conv = dict(hidden_dim=hidden_dim, triple_hidden_dim=triple_hidden_dim, pooling=pooling)
        self.convs = nn.ModuleList(
            [TripleGraphConv(obj_in, D, D, **conv)]
            + [TripleGraphConv(D, D, D, **conv) for _ in range(num_layers)]
        )
        self.global_proj = nn.Linear(2 * D, global_dim)

    def forward(
        self,
        objs: torch.Tensor,
        triples: torch.Tensor,
        obj_to_img: torch.Tensor,
        triple_to_img: torch.Tensor,
        num_graphs: int,
        boxes: torch.Tensor | None = None,
    ) -> GraphEncoderOutput:
        """objs (O,) long, triples (T, 3) long (s, p, o), obj_to_img (O,), triple_to_img (T,),
        boxes (O, 4) float (required iff ``use_boxes``) -> :class:`GraphEncoderOutput`.

        A graph with no triples gets a zero predicate mean in its global vector.
        """
        if self.config.use_boxes and boxes is None:
            raise ValueError("this encoder was built with use_boxes=True: pass boxes (O, 4)")
        obj_vecs = self.obj_embed(objs)
        if self.config.use_boxes:
            obj_vecs = torch.cat([obj_vecs, boxes.to(obj_vecs.dtype)], dim=1)
        pred_vecs = self.pred_embed(triples[:, 1])
        edges = triples[:, [0, 2]]
        for conv in self.convs:
            obj_vecs, pred_vecs = conv(obj_vecs, pred_vecs, edges)

        triple_vecs = torch.cat([obj_vecs[edges[:, 0]], pred_vecs, obj_vecs[edges[:, 1]]], dim=1)
        obj_mean = scatter(obj_vecs, obj_to_img, dim=0, dim_size=num_graphs, reduce="mean")
        pred_mean = scatter(pred_vecs, triple_to_img, dim=0, dim_size=num_graphs, reduce="mean")
        global_vec = self.global_proj(torch.cat([obj_mean, pred_mean], dim=1))
        return GraphEncoderOutput(
            obj_vecs=obj_vecs, pred_vecs=pred_vecs, triple_vecs=triple_vecs, global_vec=global_vec
        )

    def encode(self, batch: GraphBatch) -> GraphEncoderOutput:
        """Encode a packed :class:`~sg2image.graph.GraphBatch` (moved to this model's device)."""
        batch = batch.to(self.device)
        return self(
            batch.objs,
            batch.triples,
            batch.obj_to_img,
            batch.triple_to_img,
            batch.num_graphs,
            boxes=batch.boxes if self.config.use_boxes else None,
        )


def local_tokens(
    triple_vecs: torch.Tensor, triple_to_img: torch.Tensor, num_graphs: int, max_triples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-graph padded triple tokens.

    triple_vecs (T, 3D), triple_to_img (T,) sorted (as packed) -> tokens
    (B, max_triples, 3D), zero-padded, and mask (B, max_triples) bool, True on real rows.
    A graph with more than ``max_triples`` triples keeps its first ones: the packing puts
    real relations before the ``__in_image__`` triples, so those are dropped first.
    """
    if triple_to_img.numel() > 1 and bool((triple_to_img[1:] < triple_to_img[:-1]).any()):
        raise ValueError("triple_to_img must be sorted (graph by graph, as pack_graphs makes it)")
    return to_dense_batch(
        triple_vecs,
        triple_to_img,
        fill_value=0.0,
        max_num_nodes=max_triples,
        batch_size=num_graphs,
    )

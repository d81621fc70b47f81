"""Layout: graph -> boxes -> a layout map that the UNet reads through a widened ``conv_in``.

    GraphBatch --LayoutGenerator--> boxes (O, 4) --refine_boxes--> boxes that satisfy the
    graph's geometric predicates --LayoutEncoder--> map (B, C, h, w) at latent resolution
    --torch.cat with the noisy latents--> UNet (conv_in widened by C, zero-initialised)

Why a layout at all: the paper's layout-free conditioning (label + graph tokens in
cross-attention) did not learn where to put objects on the Shapes benchmark (placement at
the level of a graph-blind generator). Told the layout through input channels, the same UNet
learns placement, and then outlines, within minutes (docs/benchmarks.md).

Why a generative box model: sg2im's box regression (L1 to the true boxes) predicts one
layout per graph, with sides shrunk toward the mean; here the boxes are sampled by a
rectified flow (Liu et al. 2022) over each object's box, conditioned on the graph, so two
seeds give two layouts. ``kind="regression"`` keeps sg2im's head, for comparison.

Box parametrisation: ``box_dims=3`` is (cx, cy, side) for square boxes (Shapes),
``box_dims=4`` is (cx, cy, w, h); all in [0, 1] image units, mapped to [-1, 1] for the flow.
Boxes outside this module are sg2im's (x0, y0, x1, y1) in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from sg2image.graph import GraphBatch
from sg2image.models.graph_encoder import SceneGraphEncoder, TripleGraphConv

KINDS = ("flow", "regression")


def to_params(boxes: torch.Tensor, box_dims: int) -> torch.Tensor:
    """(N, 4) x0, y0, x1, y1 -> (N, box_dims) cx, cy, side (geometric mean of w, h) or w, h."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    w, h = x1 - x0, y1 - y0
    size = [(w * h).clamp(min=0).sqrt()] if box_dims == 3 else [w, h]
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, *size], -1)


def fit_canvas(boxes: torch.Tensor, min_side: float = 1 / 64) -> torch.Tensor:
    """(N, 4) boxes moved (not clipped) inside [0, 1], sides at least ``min_side``: a box a
    sampler left partly outside stays a box of its size, never a sliver that a user could
    not send back as given boxes."""
    lo, hi = boxes[:, :2], boxes[:, 2:]
    size = (hi - lo).clamp(min=min_side, max=1.0)
    centre = ((lo + hi) / 2).clamp(size / 2, 1 - size / 2)
    return torch.cat([centre - size / 2, centre + size / 2], 1)


def to_boxes(params: torch.Tensor) -> torch.Tensor:
    """(N, 3 or 4) box parameters -> (N, 4) x0, y0, x1, y1."""
    cx, cy = params[:, 0], params[:, 1]
    w = params[:, 2]
    h = params[:, 3] if params.shape[1] == 4 else w
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _fourier(t: torch.Tensor, dims: int) -> torch.Tensor:
    """(N,) times in [0, 1] -> (N, dims) sinusoidal features."""
    freqs = torch.exp(torch.linspace(0, math.log(100.0), dims // 2, device=t.device))
    angles = t[:, None] * freqs[None] * math.pi
    return torch.cat([angles.sin(), angles.cos()], 1)


class LayoutGenerator(ModelMixin, ConfigMixin):
    """Scene graph -> one box per object, sampled (flow) or regressed.

    A triple graph-convolution encoder (sg2im's, :class:`SceneGraphEncoder`) turns the graph
    into object vectors once; the box head reads them. For ``kind="flow"`` the head is itself
    a small triple-convolution net whose object inputs are [object vector; noisy box; time],
    run ``sample_steps`` times (Euler) from Gaussian noise: message passing at every step is
    what lets the boxes of related objects move together. Its own encoder (not the
    pipeline's): the layout is learnt from graphs and boxes alone, from as many graphs as the
    dataset has, without images.
    """

    @register_to_config
    def __init__(
        self,
        num_objects: int,
        num_predicates: int,
        kind: str = "flow",  # "flow" (sampled layouts) or "regression" (sg2im's L1 head)
        box_dims: int = 4,  # 3: square boxes (cx, cy, side); 4: (cx, cy, w, h)
        embed_dim: int = 128,  # width of the object / predicate vectors
        encoder_layers: int = 2,  # triple convolutions before the head (plus one)
        head_layers: int = 3,  # triple convolutions of the flow head
        time_dim: int = 32,  # Fourier features of the flow time
        sample_steps: int = 20,  # Euler steps of the flow at sampling time
        refine: dict | None = None,  # refine_boxes keyword arguments at sampling; None: off
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {KINDS}")
        if box_dims not in (3, 4):
            raise ValueError(f"box_dims: {box_dims} must be 3 (square boxes) or 4")
        D = embed_dim
        self.encoder = SceneGraphEncoder(
            num_objects,
            num_predicates,
            embed_dim=D,
            hidden_dim=D,
            triple_hidden_dim=2 * D,
            num_layers=encoder_layers,
            global_dim=D,
        )
        if kind == "regression":  # sg2im's box_net: MLP on the object vectors
            self.head = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, box_dims))
            return
        self.box_in = nn.Linear(box_dims + time_dim, D)
        conv = dict(hidden_dim=D, triple_hidden_dim=2 * D)
        self.head_convs = nn.ModuleList(
            [TripleGraphConv(2 * D, D, D, **conv)]  # reads [object vector; box, time]
            + [TripleGraphConv(D, D, D, **conv) for _ in range(head_layers - 1)]
        )
        self.box_out = nn.Linear(D, box_dims)
        nn.init.zeros_(self.box_out.weight), nn.init.zeros_(self.box_out.bias)

    # ---------------------------------------------------------------------------- pieces
    def object_vectors(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Object vectors (O, D) and predicate vectors (T, D) after message passing."""
        batch = batch.to(self.device)
        out = self.encoder(
            batch.objs, batch.triples, batch.obj_to_img, batch.triple_to_img, batch.num_graphs
        )
        return out.obj_vecs, out.pred_vecs

    def velocity(self, obj_vecs, pred_vecs, edges, x, t) -> torch.Tensor:
        """Flow velocity (O, box_dims) of boxes x (O, box_dims) in [-1, 1] at times t (O,)."""
        h = torch.cat(
            [obj_vecs, self.box_in(torch.cat([x, _fourier(t, self.config.time_dim)], 1))], 1
        )
        p = pred_vecs
        for conv in self.head_convs:
            h, p = conv(h, p, edges)
        return self.box_out(h)

    # ------------------------------------------------------------------------- training
    def loss(self, batch: GraphBatch, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Training loss over the real objects of a batch with boxes.

        noise (O, box_dims) standard normal and t (O,) uniform in [0, 1]: per object, drawn
        by the caller from per-example generators (reproducible under any sharding).
        """
        if batch.boxes is None:
            raise ValueError("the layout generator trains on graphs with boxes")
        batch = batch.to(self.device)
        real = batch.objs != 0  # the __image__ node's box is the whole canvas, not learnt
        target = to_params(batch.boxes, self.config.box_dims) * 2 - 1
        obj_vecs, pred_vecs = self.object_vectors(batch)
        if self.config.kind == "regression":
            return F.l1_loss(self.head(obj_vecs)[real], target[real])
        t = torch.where(real, t, torch.ones_like(t))  # the image node sits at its box
        x_t = (1 - t[:, None]) * noise + t[:, None] * target
        v = self.velocity(obj_vecs, pred_vecs, batch.triples[:, [0, 2]], x_t, t)
        return F.mse_loss(v[real], (target - noise)[real])

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, batch: GraphBatch, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes (O, 4) x0, y0, x1, y1 for every node of the batch (the image node gets the
        whole canvas). noise (O, box_dims): the flow's starting point (zeros: the mean path)."""
        batch = batch.to(self.device)
        obj_vecs, pred_vecs = self.object_vectors(batch)
        dims, n = self.config.box_dims, batch.objs.shape[0]
        real = (batch.objs != 0)[:, None]
        canvas = to_params(torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=self.device), dims) * 2 - 1
        if self.config.kind == "regression":
            x = self.head(obj_vecs)
        else:
            x = noise.to(self.device) if noise is not None else obj_vecs.new_zeros(n, dims)
            steps = self.config.sample_steps
            edges = batch.triples[:, [0, 2]]
            for k in range(steps):
                t = torch.full((n,), k / steps, device=self.device)
                x = torch.where(real, x, canvas.expand(n, -1))
                x = x + self.velocity(obj_vecs, pred_vecs, edges, x, t) / steps
        x = torch.where(real, x, canvas.expand(n, -1))
        return fit_canvas(to_boxes((x.float() + 1) / 2))

    def layout(
        self, batch: GraphBatch, noise: torch.Tensor, predicate_names, refine: bool = True
    ) -> torch.Tensor:
        """Boxes (O, 4) as the pipeline draws them: sampled from ``noise``, then refined with
        this generator's own ``refine`` settings (if any and ``refine``)."""
        boxes = self.sample(batch, noise)
        if refine and self.config.refine is not None:
            with torch.enable_grad():
                boxes = refine_boxes(boxes, batch, predicate_names, **self.config.refine)
        return boxes


# ----------------------------------------------------------------------------- refinement

# Hinge of each predicate with a geometric meaning, on the subject/object box parameters.
# dx, dy: subject centre minus object centre (y down); sg2im's angle rule with a margin m:
# "left of" means dx <= -m and |dy| <= -dx - m, and so on.


def _relation_penalty(pred: str, s: torch.Tensor, o: torch.Tensor, m: float, ratio: float):
    dx, dy = s[:, 0] - o[:, 0], s[:, 1] - o[:, 1]
    ss, so = s[:, 2:].mean(1), o[:, 2:].mean(1)
    if pred == "left of":
        return F.relu(m + dx) + F.relu(m + dy.abs() + dx)
    if pred == "right of":
        return F.relu(m - dx) + F.relu(m + dy.abs() - dx)
    if pred == "above":
        return F.relu(m + dy) + F.relu(m + dx.abs() + dy)
    if pred == "below":
        return F.relu(m - dy) + F.relu(m + dx.abs() - dy)
    if pred == "bigger than":
        return F.relu(ratio * so - ss)
    if pred == "smaller than":
        return F.relu(ratio * ss - so)
    if pred in ("inside", "surrounding"):  # COCO's synthetic relations: containment
        inner, outer = (
            (to_boxes(s), to_boxes(o)) if pred == "inside" else (to_boxes(o), to_boxes(s))
        )
        return (F.relu(outer[:, :2] - inner[:, :2]) + F.relu(inner[:, 2:] - outer[:, 2:])).sum(1)
    return None


RULED_PREDICATES = (
    "left of", "right of", "above", "below", "bigger than", "smaller than", "inside", "surrounding",
)  # fmt: skip


def refine_boxes(
    boxes: torch.Tensor,
    batch: GraphBatch,
    predicate_names: Sequence[str],
    steps: int = 200,
    lr: float = 0.005,
    margin: float = 2 / 64,
    size_ratio: float = 1.3,
    min_gap: float | None = 2.5 / 64,
    canvas_margin: float = 2 / 64,
    side_range: tuple[float, float] | None = (10 / 64, 22 / 64),
    pull: float = 1.0,
    square: bool = True,
) -> torch.Tensor:
    """Move boxes (O, 4) so they satisfy the graph's geometric and size predicates, stay
    ``min_gap`` apart (None: overlaps allowed, as in COCO) and inside the canvas, with sides
    in ``side_range``; a quadratic pull keeps them near where they started. Adam on the box
    parameters, all graphs of the batch at once. The image nodes are left as they are.

    Why: a sampled layout is right most of the time but a wrong or overlapping box becomes a
    wrong image; a few gradient steps on hinge penalties fix most of those (measured in
    docs/benchmarks.md). Predicates without a rule here are left to the model.
    """
    if steps <= 0:
        return boxes
    dims = 3 if square else 4
    start = to_params(boxes.detach().float(), dims)
    x = start.clone().requires_grad_(True)
    real = batch.objs != 0
    trip = batch.triples
    by_pred = {}
    for p, name in enumerate(predicate_names):
        if name in RULED_PREDICATES:
            rows = (trip[:, 1] == p).nonzero().squeeze(1)
            if rows.numel():
                by_pred[name] = rows
    # Pairs of real objects of the same graph, for the gap penalty.
    idx = real.nonzero().squeeze(1)
    same = batch.obj_to_img[idx][:, None] == batch.obj_to_img[idx][None, :]
    pairs = torch.triu(same, diagonal=1).nonzero()
    pa, pb = idx[pairs[:, 0]], idx[pairs[:, 1]]
    g_obj, g_trip = batch.obj_to_img, batch.triple_to_img
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        # (value, graph) of every penalty term, so each graph can be checked on its own.
        terms, owners = [], []
        for name, rows in by_pred.items():
            s, o = x[trip[rows, 0]], x[trip[rows, 2]]
            terms.append(_relation_penalty(name, s, o, margin, size_ratio))
            owners.append(g_trip[rows])
        b = to_boxes(x)
        if min_gap is not None and pa.numel():
            sep_x = torch.maximum(b[pa, 0] - b[pb, 2], b[pb, 0] - b[pa, 2])
            sep_y = torch.maximum(b[pa, 1] - b[pb, 3], b[pb, 1] - b[pa, 3])
            terms.append(F.relu(min_gap - torch.maximum(sep_x, sep_y)))
            owners.append(g_obj[pa])
        br = b[real]
        outside = F.relu(canvas_margin - br[:, :2]) + F.relu(br[:, 2:] - 1 + canvas_margin)
        terms.append(outside.sum(1))
        owners.append(g_obj[real])
        if side_range is not None:
            sides = x[real, 2:]
            terms.append((F.relu(side_range[0] - sides) + F.relu(sides - side_range[1])).sum(1))
            owners.append(g_obj[real])
        per_graph = x.new_zeros(batch.num_graphs).index_add(0, torch.cat(owners), torch.cat(terms))
        # A graph whose rules all hold is done: frozen where it is, so its boxes do not depend
        # on how long the other graphs of the batch take (Adam is element-wise).
        done = (per_graph == 0)[g_obj][:, None]
        if bool(done.all()):
            break
        kept = x.detach().clone()
        loss = pull * ((x - start)[real] ** 2).sum() + 10 * per_graph.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.where(done, kept, x))
    out = fit_canvas(to_boxes(x.detach()))
    return torch.where(real[:, None], out, boxes.float())


# ----------------------------------------------------------------------------- layout map


class LayoutEncoder(ModelMixin, ConfigMixin):
    """Boxes and labels -> a (B, C, h, w) map: each object's box filled with a learned
    C-vector of its label, weighted by the share of each cell that the box covers (so a box
    edge between cells is seen to sub-cell precision). Objects of one image add up.

    With ``depth_order`` the map has 2C channels: the sum above, then the same boxes painted
    back to front (each object's cover multiplied by what the objects in front of it leave
    uncovered), so where two boxes overlap the second half holds the front object's label
    alone. The sum keeps every box whole (the part of a back object hidden by a circle's
    empty corner is still drawn); the painted half says who is in front, which a sum of
    two labels cannot. Without it the map holds no order: only the graph tokens can tell.
    """

    @register_to_config
    def __init__(self, num_objects: int, channels: int = 12, depth_order: bool = False):
        super().__init__()
        # Not zero: the widened conv_in starts at zero, and a zero map would leave both
        # without a gradient.
        self.label_embed = nn.Embedding(num_objects, channels)
        self.front_embed = nn.Embedding(num_objects, channels) if depth_order else None

    @property
    def out_channels(self) -> int:
        return self.config.channels * (2 if self.config.depth_order else 1)

    def forward(
        self,
        boxes: torch.Tensor,
        objs: torch.Tensor,
        obj_to_img: torch.Tensor,
        num_graphs: int,
        size: tuple[int, int],
        drop: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """boxes (O, 4) x0, y0, x1, y1 in [0, 1]; objs, obj_to_img (O,); size (h, w); drop
        (B,) bool: those images get an all-zero map (the unconditional input of CFG); depth
        (O,) long, each object's depth rank (higher is nearer; required with
        ``depth_order``). Image nodes (objs == 0) are skipped -> (B, out_channels, h, w)."""
        h, w = size
        keep = objs != 0
        boxes, objs, obj_to_img = boxes[keep].to(self.dtype), objs[keep], obj_to_img[keep]

        def cover(lo, hi, n):  # (O, n): share of each of n cells covered by [lo, hi]
            edges = torch.arange(n + 1, device=boxes.device, dtype=boxes.dtype) / n
            left, right = edges[:-1][None], edges[1:][None]
            return (torch.minimum(hi[:, None], right) - torch.maximum(lo[:, None], left)).clamp(
                min=0
            ) * n

        cov = (
            cover(boxes[:, 1], boxes[:, 3], h)[:, :, None]
            * cover(boxes[:, 0], boxes[:, 2], w)[:, None]
        )
        maps = [self._paint(cov, self.label_embed(objs), obj_to_img, num_graphs)]
        if self.front_embed is not None:
            if depth is None:
                raise ValueError("this layout encoder paints in depth order: pass depth (O,)")
            seen = cov * _uncovered(cov, depth.to(cov.device)[keep], obj_to_img)
            maps.append(self._paint(seen, self.front_embed(objs), obj_to_img, num_graphs))
        out = torch.cat(maps, 1)
        if drop is not None:
            out = out * (~drop.to(out.device)).to(out.dtype)[:, None, None, None]
        return out

    def _paint(self, cov, vecs, obj_to_img, num_graphs) -> torch.Tensor:
        """cov (O, h, w), vecs (O, C) -> (B, C, h, w), objects of one image added up."""
        contrib = cov[:, None] * vecs[:, :, None, None]
        out = contrib.new_zeros(num_graphs, vecs.shape[1], *cov.shape[1:])
        return out.index_add(0, obj_to_img, contrib)


def _uncovered(cov: torch.Tensor, depth: torch.Tensor, obj_to_img: torch.Tensor) -> torch.Tensor:
    """(O, h, w): per object, the share of each cell left uncovered by the objects of its
    image that are nearer (higher depth rank). cov (O, h, w), depth and obj_to_img (O,)."""
    nearer = (obj_to_img[:, None] == obj_to_img[None, :]) & (depth[None, :] > depth[:, None])
    # prod_j (1 - nearer_ij * cov_j), as a log-sum so that it is one matrix product.
    log_free = torch.log1p(-cov.clamp(max=1 - 1e-6)).flatten(1)  # (O, h*w)
    return torch.exp(nearer.to(cov.dtype) @ log_free).view_as(cov)


def widen_conv_in(unet, extra: int) -> None:
    """Give ``unet`` ``extra`` more input channels, their weights zero: the widened UNet
    computes exactly what it did before (as SD's inpainting and InstructPix2Pix models are
    made from SD), and learns to read the new channels. The config records the new width, so
    ``save_pretrained`` / ``from_pretrained`` rebuild it."""
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra)

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
SAMPLERS = ("euler", "midpoint")


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
    run ``sample_steps`` times (Euler, or midpoint: twice a step) from Gaussian noise:
    message passing at every step is what lets the boxes of related objects move together.
    Its own encoder (not the pipeline's): the layout is learnt from graphs and boxes alone,
    from as many graphs as the dataset has, without images.
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
        sample_steps: int = 20,  # ODE steps of the flow at sampling time
        sampler: str = "euler",  # "euler" (1 velocity a step) or "midpoint" (2 a step)
        refine: dict | None = None,  # refine_boxes keyword arguments at sampling; None: off
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {KINDS}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: {sampler!r} is not one of {SAMPLERS}")
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

            def velocity(x, t: float):
                x = torch.where(real, x, canvas.expand(n, -1))
                t = torch.full((n,), t, device=self.device)
                return self.velocity(obj_vecs, pred_vecs, edges, x, t)

            for k in range(steps):
                x = torch.where(real, x, canvas.expand(n, -1))
                v = velocity(x, k / steps)
                if self.config.sampler == "midpoint":  # second order: 4 steps do what 50 did
                    v = velocity(x + v / (2 * steps), (k + 0.5) / steps)
                x = x + v / steps
        x = torch.where(real, x, canvas.expand(n, -1))
        return fit_canvas(to_boxes((x.float() + 1) / 2))

    def layout(
        self, batch: GraphBatch, noise: torch.Tensor, predicate_names, refine: bool = True
    ) -> torch.Tensor:
        """Boxes (O, 4) as the pipeline draws them: sampled from ``noise``, then refined with
        this generator's own ``refine`` settings (if any and ``refine``)."""
        boxes = self.sample(batch, noise)
        if refine and self.config.refine is not None:
            boxes = refine_boxes(boxes, batch, predicate_names, **self.config.refine)
        return boxes


# ----------------------------------------------------------------------------- refinement

# The rule of each predicate with a geometric meaning, as (kind, argument), on the box
# parameters of subject s and object o; d = s's centre minus o's (y down), m the margin:
#   "direction" (axis, sign): sign * d[axis] >= m + |d[other axis]| (sg2im's angle rule with a
#       margin: "left of" is dx <= -m and |dy| <= -dx - m);
#   "size" swapped: the subject's side (the object's if swapped) >= ratio * the other's;
#   "contain" swapped: the subject's box inside the object's (around it if swapped);
#   "overlap": the two boxes overlap by at least ``overlap`` each way, and each pokes out of
#       the other by as much each way (so the one behind stays visible); such a pair is
#       exempt from the gap. Boxes carry no order: which is in front is the layout map's.
# A new rule is one entry here and one term in _Rules.violations.
RULES = {
    "left of": ("direction", (0, -1.0)),
    "right of": ("direction", (0, 1.0)),
    "above": ("direction", (1, -1.0)),
    "below": ("direction", (1, 1.0)),
    "bigger than": ("size", False),
    "smaller than": ("size", True),
    "inside": ("contain", False),  # COCO's synthetic relations
    "surrounding": ("contain", True),
    "in front of": ("overlap", None),  # the Shapes depth world
    "behind": ("overlap", None),
}
RULED_PREDICATES = tuple(RULES)


class _Rules:
    """Every constraint of a batch as index tensors, built once, so that each refinement
    step computes all violations of all graphs in a few tensor operations."""

    def __init__(self, batch: GraphBatch, predicate_names: Sequence[str], min_gap):
        s, p, o = batch.triples.unbind(1)
        kind = [RULES.get(name, (None, None)) for name in predicate_names]

        def rows(k: str):
            ids = [i for i, (kd, _) in enumerate(kind) if kd == k]
            return torch.isin(p, torch.tensor(ids, dtype=p.dtype, device=p.device))

        def arg(k: str, rows_, pick):
            table = [pick(a) if kd == k else 0 for kd, a in kind]
            return torch.tensor(table, device=p.device)[p[rows_]]

        d = rows("direction")
        self.dir_s, self.dir_o = s[d], o[d]
        self.axis = arg("direction", d, lambda a: a[0]).long()
        self.sign = arg("direction", d, lambda a: a[1]).float()
        z = rows("size")
        swap = arg("size", z, bool).bool()
        self.big, self.small = torch.where(swap, o[z], s[z]), torch.where(swap, s[z], o[z])
        c = rows("contain")
        swap = arg("contain", c, bool).bool()
        self.inner, self.outer = torch.where(swap, o[c], s[c]), torch.where(swap, s[c], o[c])
        v = rows("overlap")
        self.ov_a, self.ov_b = s[v], o[v]
        self.real = batch.objs != 0
        real = self.real.nonzero().squeeze(1)
        g = batch.obj_to_img
        # Pairs of real objects of the same graph, for the gap.
        pairs = torch.triu(g[real][:, None] == g[real][None, :], diagonal=1).nonzero()
        self.pa, self.pb = real[pairs[:, 0]], real[pairs[:, 1]]
        if min_gap is None:
            self.pa, self.pb = self.pa[:0], self.pb[:0]
        elif self.ov_a.numel():  # pairs that must overlap keep no gap
            n = len(g)
            key = torch.minimum(self.pa, self.pb) * n + torch.maximum(self.pa, self.pb)
            ov = torch.minimum(self.ov_a, self.ov_b) * n + torch.maximum(self.ov_a, self.ov_b)
            keep = ~torch.isin(key, ov)
            self.pa, self.pb = self.pa[keep], self.pb[keep]
        t = batch.triple_to_img
        # The graph of each term, in the order violations() returns them.
        self.owner = torch.cat([t[d], t[z], t[c], t[v], g[self.pa]])

    def violations(self, x, margin, ratio, min_gap, overlap=4.5 / 64) -> torch.Tensor:
        """The hinge terms (zero where a rule holds) of box parameters x (O, dims)."""
        d = x[self.dir_s, :2] - x[self.dir_o, :2]
        along = self.sign * d.gather(1, self.axis[:, None]).squeeze(1)
        across = d.gather(1, 1 - self.axis[:, None]).squeeze(1).abs()
        direction = F.relu(margin - along) + F.relu(margin + across - along)
        side = x[:, 2:].mean(1)
        size = F.relu(ratio * side[self.small] - side[self.big])
        b = to_boxes(x)
        inner, outer = b[self.inner], b[self.outer]
        contain = (F.relu(outer[:, :2] - inner[:, :2]) + F.relu(inner[:, 2:] - outer[:, 2:])).sum(1)
        a, c = b[self.ov_a], b[self.ov_b]
        shared = torch.minimum(a[:, 2:], c[:, 2:]) - torch.maximum(a[:, :2], c[:, :2])  # (x, y)
        # each box's side beyond the shared extent, per axis: the smaller is what pokes out
        out_a, out_c = (a[:, 2:] - a[:, :2]) - shared, (c[:, 2:] - c[:, :2]) - shared
        poke = torch.minimum(out_a, out_c)
        ov = (F.relu(overlap - shared) + F.relu(overlap - poke)).sum(1)
        a, c = b[self.pa], b[self.pb]
        sep = torch.maximum(a[:, :2] - c[:, 2:], c[:, :2] - a[:, 2:]).amax(1)
        gap = F.relu((min_gap or 0.0) - sep)  # no pairs when min_gap is None
        return torch.cat([direction, size, contain, ov, gap])


def _bounds(x: torch.Tensor, canvas_margin: float, side_range) -> tuple:
    """Lower and upper bounds (O, dims) of box parameters x: sides in ``side_range``, centres
    far enough from the edges for boxes of x's sides to stay ``canvas_margin`` inside."""
    half = x[:, 2:].expand(-1, 2) / 2  # (w, h) / 2; a square's one side serves both
    lo_side, hi_side = side_range if side_range is not None else (-math.inf, math.inf)
    lo = torch.cat([canvas_margin + half, torch.full_like(x[:, 2:], lo_side)], 1)
    hi = torch.cat([1 - canvas_margin - half, torch.full_like(x[:, 2:], hi_side)], 1)
    return lo, hi


def _project(x: torch.Tensor, canvas_margin: float, side_range) -> torch.Tensor:
    """The nearest box parameters within :func:`_bounds`: sides clamped, then centres."""
    if side_range is not None:
        x = torch.cat([x[:, :2], x[:, 2:].clamp(*side_range)], 1)
    lo, hi = _bounds(x, canvas_margin, side_range)
    return torch.maximum(torch.minimum(x, hi), lo)


def refine_boxes(
    boxes: torch.Tensor,
    batch: GraphBatch,
    predicate_names: Sequence[str],
    steps: int = 100,
    margin: float = 2 / 64,
    size_ratio: float = 1.3,
    min_gap: float | None = 2.5 / 64,
    canvas_margin: float = 2 / 64,
    side_range: tuple[float, float] | None = (10 / 64, 22 / 64),
    square: bool = True,
    relax: float = 2.0,
    overlap: float = 4.5 / 64,
) -> torch.Tensor:
    """Move boxes (O, 4) so they satisfy the graph's geometric and size predicates, stay
    ``min_gap`` apart (None: overlaps allowed, as in COCO; pairs with a depth predicate
    overlap by ``overlap`` instead) and ``canvas_margin`` inside the canvas, with sides in
    ``side_range``, in at most ``steps`` steps. The image nodes are left as they are.

    Why: a sampled layout is right most of the time but a wrong or overlapping box becomes a
    wrong image (measured in docs/benchmarks.md). Predicates without a rule here (RULES) are
    left to the model.

    How: sides and the canvas are held by projection (clamping, :func:`_project`), the rest
    by Polyak steps on each graph's violation f (the sum of its hinge terms, zero when every
    rule holds): x -= relax * f / |g|^2 * g, g the gradient of f, is the step that zeroes
    f's linearisation (relax 2: as far again, past the boundary, which settles most graphs
    in 3-6 steps, the hardest of 160 test graphs in 12), then projected; boxes move only as
    far as their rules ask. A graph whose rules all hold stops moving, so its boxes do not
    depend on the other graphs of its batch. All rules of all graphs go in one step.
    """
    if steps <= 0:
        return boxes
    rules = _Rules(batch, predicate_names, min_gap)
    dims = 3 if square else 4
    x = _project(to_params(boxes.detach().float(), dims), canvas_margin, side_range)
    g, n = batch.obj_to_img, batch.num_graphs
    for _ in range(steps):
        with torch.enable_grad():
            x.requires_grad_(True)
            terms = rules.violations(x, margin, size_ratio, min_gap, overlap)
            f = x.new_zeros(n).index_add(0, rules.owner, terms)
            todo = f > 0
            if not bool(todo.any()):
                break
            (grad,) = torch.autograd.grad(f.sum(), x)
        # A parameter at a bound, pushed past it, would be clamped back: it does not move, and
        # the step is what zeroes f with the others (else size chains at a side bound crawl).
        lo, hi = _bounds(x.detach(), canvas_margin, side_range)
        blocked = ((x <= lo) & (grad > 0)) | ((x >= hi) & (grad < 0))
        grad = grad.masked_fill(blocked, 0.0)
        norm = x.new_zeros(n).index_add(0, g, grad.pow(2).sum(1))
        # Aimed a thousandth of the canvas past f = 0: the hinges then end strictly inside.
        step = torch.where(todo, relax * (f.detach() + 1e-3) / norm.clamp(min=1e-12), 0.0)
        x = _project(x.detach() - step[g][:, None] * grad, canvas_margin, side_range)
    out = fit_canvas(to_boxes(x.detach()))
    return torch.where(rules.real[:, None], out, boxes.float())


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

    With ``instance_slots`` = S > 0, object k of an image (its k-th real object, in packed
    order) also paints a learned slot vector k into the sum. The conditioner's object tokens
    carry the same index (``GraphConditioner(object_slots=True)``), so a pixel can find the
    token of the object whose box covers it, whatever its label: the binding that lets the
    graph tokens say which of two overlapping boxes is in front. Slots add up where boxes
    overlap, so they carry no order themselves.
    """

    @register_to_config
    def __init__(
        self,
        num_objects: int,
        channels: int = 12,
        depth_order: bool = False,
        instance_slots: int = 0,
    ):
        super().__init__()
        # Not zero: the widened conv_in starts at zero, and a zero map would leave both
        # without a gradient.
        self.label_embed = nn.Embedding(num_objects, channels)
        self.front_embed = nn.Embedding(num_objects, channels) if depth_order else None
        self.slot_embed = nn.Embedding(instance_slots, channels) if instance_slots else None

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
        vecs = self.label_embed(objs)
        if self.slot_embed is not None:
            slot = instance_index(obj_to_img, num_graphs)
            if len(slot) and int(slot.max()) >= self.slot_embed.num_embeddings:
                raise ValueError(
                    f"an image has {int(slot.max()) + 1} objects; this layout encoder has "
                    f"{self.slot_embed.num_embeddings} instance slots"
                )
            vecs = vecs + self.slot_embed(slot)
        maps = [self._paint(cov, vecs, obj_to_img, num_graphs)]
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


def instance_index(obj_to_img: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """(O,) each object's index among its image's objects, in packed order (obj_to_img
    sorted, as pack_graphs makes it): obj_to_img [0, 0, 1, 1, 1, 2] -> [0, 1, 0, 1, 2, 0]."""
    counts = torch.bincount(obj_to_img, minlength=num_graphs)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(len(obj_to_img), device=obj_to_img.device) - starts[obj_to_img]


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

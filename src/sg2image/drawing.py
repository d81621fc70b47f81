"""Pictures of scene graphs, and image-beside-graph sheets for looking at samples. Uses only
PIL's ImageDraw and default font (no font files, no display); same input, same bytes out."""

import math
import textwrap
from collections import defaultdict
from functools import lru_cache

import networkx as nx
import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, SceneGraph

SS = 2  # draw at 2x, then box-reduce: PIL lines are not antialiased; reduce keeps fills exact
BACKGROUND, INK, TEXT, PRED = (255, 255, 255), (70, 72, 84), (20, 20, 28), (50, 50, 140)
NEUTRAL = ((232, 233, 238), (150, 152, 165))  # (fill, outline) when a label names no colour
# Layout boxes of objects whose label names no colour: distinct hues, readable on most images.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
)  # fmt: skip


def node_color(label: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(fill, outline) of a node: if its label starts with a colour word (a CSS name), a tint
    of that colour light enough for dark text to stay readable; else neutral grey."""
    if (word := (label.lower().split() or [""])[0]) not in ImageColor.colormap:
        return NEUTRAL
    rgb = ImageColor.getrgb(word)
    return tuple(round(c + (255 - c) * 0.6) for c in rgb), tuple(round(c * 0.65) for c in rgb)


def box_color(label: str, index: int) -> tuple[int, ...]:
    """A layout box's outline: the colour its label starts with, else the palette's."""
    word = (label.lower().split() or [""])[0]
    if word in ImageColor.colormap:
        return ImageColor.getrgb(word)[:3]
    return PALETTE[index % len(PALETTE)]


_font = lru_cache(maxsize=64)(lambda px: ImageFont.load_default(size=px))  # Pillow >= 10.1


def _text_size(text: str, font, _draw=ImageDraw.Draw(Image.new("RGB", (1, 1)))) -> np.ndarray:
    box = _draw.multiline_textbbox((0, 0), text, font=font, anchor="mm", spacing=0)
    return np.array([box[2] - box[0], box[3] - box[1]], dtype=float)


def _fit(text: str, font, max_w: float) -> str:
    """Cut text with an ellipsis to at most max_w wide (long predicates, captions, grid cells)."""
    while len(text) > 1 and _text_size(text, font)[0] > max_w:
        text = text.removesuffix("…")[:-1].rstrip() + "…"
    return text


def _unit_layout(n: int, edges: list) -> np.ndarray:
    """Node centres in [-1, 1]^2 (y down): related objects by stress majorization at the top,
    objects without relationships in rows along the bottom (stress flings them to the rim)."""
    busy = sorted({v for s, _, o in edges for v in (s, o)})
    alone = sorted(set(range(n)) - set(busy))
    per_row = max(3, math.ceil(math.sqrt(len(alone))))
    rows = [alone[i : i + per_row] for i in range(0, len(alone), per_row)]
    band = 2 if not busy else min(1.0, 0.45 * len(rows))  # the bottom band's share of height 2
    xy = np.zeros((n, 2))
    for r, row in enumerate(rows):
        xy[row] = np.stack(
            [
                (2 * np.arange(len(row)) + 1) / len(row) - 1,
                np.full(len(row), 1 - band * (r + 0.5) / len(rows)),
            ],
            1,
        )
    if not busy:
        return xy
    # Stress majorization (Gansner et al. 2004): drawing distances follow graph distances, so
    # chains look like chains and hubs like stars; from a circle, no randomness: deterministic.
    m, span = len(busy), 2 - band - 0.1 * bool(rows)
    local = {v: k for k, v in enumerate(busy)}
    d = nx.floyd_warshall_numpy(nx.Graph([(local[s], local[o]) for s, _, o in edges]), range(m))
    d[np.isinf(d)] = d[np.isfinite(d)].max() + 1  # separate parts: just past the longest path
    wgt = np.where(d > 0, 1 / np.maximum(d, 1e-9) ** 2, 0)
    lap_inv = np.linalg.pinv(np.diag(wgt.sum(1)) - wgt)
    sub = np.stack([np.cos(ang := 2 * math.pi * np.arange(m) / m), np.sin(ang)], 1)
    for _ in range(100):
        dist = np.hypot(*(sub[:, None] - sub[None]).transpose(2, 0, 1))
        bmat = -wgt * d / np.where(dist > 1e-9, dist, np.inf)
        bmat[np.diag_indices(m)] = -bmat.sum(1)
        sub = lap_inv @ bmat @ sub
    sub = (sub - sub.mean(0)) / np.maximum(np.abs(sub - sub.mean(0)).max(0), 1e-9)
    xy[busy] = sub * [1, span / 2] + [0, span / 2 - 1]  # each axis stretched over its space
    return xy


def _place(unit: np.ndarray, sizes: np.ndarray, w: int, h: int, margin: float, gap):
    """Map the unit layout onto the canvas and push boxes apart till each pair is gap[i, j] =
    (x, y) apart: (centres, None); if jammed, (centres of a grid, its cell size) instead."""
    lo, hi = margin + sizes / 2, np.array([w, h]) - margin - sizes / 2
    pos, half, n = (lo + hi) / 2 + unit * (hi - lo) / 2, sizes / 2, len(unit)
    tie = np.where(np.arange(n)[:, None] > np.arange(n)[None, :], 1.0, -1.0)
    best = (n * n, 0)  # (fewest overlaps seen, at step): no progress for a while means jammed
    for step in range(200):
        d = pos[:, None, :] - pos[None, :, :]
        over = half[:, None, :] + half[None, :, :] + gap - np.abs(d)
        hit = (over > 0).all(-1) & ~np.eye(n, dtype=bool)
        best = min(best, (int(hit.sum()), step))
        if best[0] == 0 or step - best[1] > 60:
            break
        # separate each pair along the axis needing the smaller move, half to each node; when
        # that has stopped helping (boxes pinned at the canvas edge), try the other axis
        axis = over.argmin(-1) ^ (step - best[1] > 20)
        dsel, amount = (np.take_along_axis(a, axis[..., None], -1)[..., 0] for a in (d, over))
        push = np.where(hit, amount / 2 + 0.5, 0) * np.where(dsel != 0, np.sign(dsel), tie)
        pos = np.clip(pos + np.stack([(push * (axis == a)).sum(1) for a in (0, 1)], 1), lo, hi)
    if best[0] == 0:
        return pos, None
    cols = math.ceil(math.sqrt(n * w / h))
    cell = np.array([w - 2 * margin, h - 2 * margin]) / [cols, math.ceil(n / cols)]
    rank = np.argsort(np.lexsort((unit[:, 0], unit[:, 1])))  # roughly keep the reading order
    return margin + (np.stack([rank % cols, rank // cols], 1) + 0.5) * cell, cell


def _arrow(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: int, head: float) -> None:
    tip, shaft = pts[-1], pts[np.hypot(*(pts[-1] - pts).T) >= head]
    # the shaft stops at the head's base, so the thick line does not blunt the tip
    base = shaft[-1] if len(shaft) else pts[0]
    nrm = np.array([base[1] - tip[1], tip[0] - base[0]]) * 0.45
    draw.line([tuple(p) for p in pts[: len(shaft) or 1]], INK, width, joint="curve")
    draw.polygon([tuple(tip), tuple(base + nrm), tuple(base - nrm)], fill=INK)


def _edge_curves(edges: list, pos: np.ndarray, font) -> list:
    """A quadratic Bezier per edge, finely sampled (enough to clip at box borders directly)."""
    groups, curves, t = defaultdict(list), [], np.linspace(0, 1, 240)[:, None]
    for s, p, o in edges:  # all edges between one pair of nodes, either direction
        groups[(min(s, o), max(s, o))].append((s, p, o))
    for (a, b), group in groups.items():
        pa, pb = pos[a], pos[b]
        nrm = np.array([pb[1] - pa[1], pa[0] - pb[0]]) / max(np.hypot(*(pb - pa)), 1e-9)
        # parallel curves sit one predicate label apart, measured across the edge
        step = max(abs(nrm) @ (_text_size(p, font) + 4 * SS) for _, p, _ in group) + 2 * SS
        for rank, (s, p, o) in enumerate(group):
            # offsets are taken in the a->b frame, so a->b and b->a bend to different sides
            mid = (pa + pb) / 2 + nrm * (rank - (len(group) - 1) / 2) * step
            ctl = 2 * mid - (pa + pb) / 2  # makes the curve pass through `mid` at t = 0.5
            p0, p2 = (pa, pb) if s == a else (pb, pa)
            curves.append(((1 - t) ** 2 * p0 + 2 * t * (1 - t) * ctl + t**2 * p2, s, p, o))
    return curves


def draw_graph(
    graph: SceneGraph,
    size: int | tuple[int, int] = 256,
    font_size: int | None = None,
    min_font_size: int = 8,
) -> Image.Image:
    """Objects as labelled boxes, relationships as arrows subject -> object with the predicate
    (no `__image__` / `__in_image__`). Text shrinks (to min_font_size) until boxes fit with room
    between related ones; failing that, nodes go on a grid. size: int or (width, height)."""
    w, h = (size, size) if isinstance(size, int) else size
    keep = {
        old: k
        for k, old in enumerate(i for i, label in enumerate(graph.objects) if label != IMAGE_OBJECT)
    }
    labels, n, W, H = [graph.objects[i] for i in keep], len(keep), w * SS, h * SS
    edges = [
        (keep[s], p, keep[o])
        for s, p, o in graph.relationships
        if p != IN_IMAGE and s in keep and o in keep and s != o
    ]
    img = Image.new("RGB", (W, H), BACKGROUND)
    draw, unit, linked = ImageDraw.Draw(img), _unit_layout(n, edges), np.zeros((n, n, 1), bool)
    linked[[s for s, _, o in edges], [o for s, _, o in edges]] = True
    linked |= linked.transpose(1, 0, 2)
    top = font_size or max(min_font_size, min(16, round(min(w, h) / 20)))
    low = min(top, min_font_size)  # the largest text that fits; one word a line only at the end
    for px, wrap in [(p, 14) for p in range(top, low, -1)] + [(low, 14), (low, 1)]:
        font, pad = _font(px * SS), np.array([0.6, 0.35]) * px * SS
        texts = [
            "\n".join(
                _fit(s, font, W - 4 * pad[0])
                for s in textwrap.wrap(t, wrap, break_long_words=False) or [t]
            )
            for t in labels
        ]  # no wider than canvas
        sizes = np.array([_text_size(t, font) for t in texts]).reshape(-1, 2) + 2 * pad
        if sizes.prod(1).sum() > 0.2 * W * H and px > min_font_size:
            continue  # boxes would fill the canvas, leaving no room for arrows and predicates
        pos, cell = _place(unit, sizes, W, H, 2 * SS, np.where(linked, [4, 2.6], 1.0) * px * SS)
        if cell is None:
            break
    if cell is not None:  # on the grid: shrink boxes to their cells, cutting words to fit
        texts = [
            "\n".join(_fit(s, font, cell[0] - 2 * pad[0] - 2 * SS) for s in t.split("\n"))
            for t in texts
        ]
        sizes = np.minimum(sizes, cell - 2 * SS)
    rects = np.hstack([pos - sizes / 2 - 2 * SS, pos + sizes / 2 + 2 * SS])  # with a margin
    efont, line_w = _font(max(min_font_size, px - 1) * SS), max(1, round(1.4 * SS))
    curves = _edge_curves(edges, pos, efont)
    paths = [
        c[~((c[:, None] >= rects[[s, o], :2]) & (c[:, None] <= rects[[s, o], 2:])).all(-1).any(1)]
        for c, s, _, o in curves
    ]  # outside both boxes: arrows end at borders
    for path in (p for p in paths if len(p) > 1):
        _arrow(draw, path, line_w, (4 + px * 0.35) * SS)
    for i, (c, sz) in enumerate(zip(pos, sizes, strict=True)):
        draw.rounded_rectangle(
            (*(c - sz / 2), *(c + sz / 2)),
            min(sz[1] / 2, 7 * SS),
            *node_color(labels[i]),
            width=line_w,
        )
        draw.multiline_text(tuple(c), texts[i], TEXT, font, "mm", spacing=0, align="center")

    placed = list(rects)  # predicates go on top, at the free spot nearest the edge's middle
    for path, (curve, _, p, _) in zip(paths, curves, strict=True):
        path, text = path if len(path) else curve, _fit(p, efont, W * 0.4)
        half = (_text_size(text, efont) + np.array([4, 2]) * SS) / 2
        at = np.round(np.array([0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8]) * (len(path) - 1))
        ctr = np.clip(path[at.astype(int)], half, np.array([W, H]) - half)  # middle first
        spots = np.hstack([ctr - half, ctr + half])
        # overlap area with node boxes weighs 10x that with other labels: hide nodes last
        cost = sum(
            np.prod(
                np.clip(np.minimum(spots[:, 2:], q[2:]) - np.maximum(spots[:, :2], q[:2]), 0, None),
                1,
            )
            * (10 if k < n else 1)
            for k, q in enumerate(placed)
        )
        placed.append(box := spots[np.argmin(cost)])
        draw.rounded_rectangle(tuple(box), 3 * SS, BACKGROUND, (200, 202, 212), width=SS)
        draw.text(tuple((box[:2] + box[2:]) / 2), text, PRED, efont, "mm")
    return img.reduce(SS)


def to_pil(image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """RGB PIL image from a PIL image, a uint8 (H,W,3) array, or a (3,H,W) tensor or array.
    Floats are read as [-1, 1] if any is negative, else [0, 1], unless value_range says."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if hasattr(image, "detach"):  # a torch tensor, duck-typed; maybe on a GPU, maybe bfloat16
        image = image.detach().cpu()
        image = (image.float() if image.is_floating_point() else image).numpy()
    arr = np.asarray(image)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr  # a batch of one
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)  # channels first, as torch keeps images
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an (H,W,3) or (3,H,W) image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = value_range or ((-1.0, 1.0) if arr.min() < 0 else (0.0, 1.0))
        arr = np.rint(np.clip((arr - lo) / (hi - lo), 0, 1) * 255)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _with_caption(img: Image.Image, caption, font_size: int = 13) -> Image.Image:
    if caption is None:
        return img
    font, out = _font(font_size), ImageOps.expand(img, (0, 0, 0, font_size + 8), BACKGROUND)
    ImageDraw.Draw(out).text(
        (img.width / 2, img.height + 4 + font_size / 2),
        _fit(str(caption), font, img.width - 4),
        INK,
        font,
        "mm",
    )
    return out


def draw_boxes(image: Image.Image, boxes, labels, font_size: int = 10) -> Image.Image:
    """A copy of the image with a layout over it: each box ([x0, y0, x1, y1] in [0, 1], one per
    label) outlined 1 px in its object's colour, tagged with its index and label."""
    out = image.convert("RGB")
    draw, font, (w, h) = ImageDraw.Draw(out), _font(font_size), out.size
    for i, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        x0, y0 = round(box[0] * w), round(box[1] * h)
        x1, y1 = max(x0, round(box[2] * w) - 1), max(y0, round(box[3] * h) - 1)  # last pixel in
        colour = box_color(label, i)
        draw.rectangle((x0, y0, x1, y1), outline=colour)
        text = _fit(f"{i} {label}", font, max(x1 - x0 - 4, 1))
        tw, th = _text_size(text, font)
        # the tag inside the top-left corner: it stays on the image for boxes at its edge
        draw.rectangle((x0, y0, x0 + tw + 3, y0 + th + 3), fill=colour)
        light = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2] > 140
        ink = TEXT if light else BACKGROUND
        draw.text((x0 + 2 + tw / 2, y0 + 2 + th / 2), text, ink, font, "mm")
    return out


def side_by_side(
    image,
    graph: SceneGraph,
    caption=None,
    size: int | tuple[int, int] = 256,
    gap: int = 4,
    value_range: tuple[float, float] | None = None,
    boxes=None,
) -> Image.Image:
    """The image scaled to the graph drawing's height, the drawing to its right, caption below.
    ``boxes`` (one [x0, y0, x1, y1] in [0, 1] per object): the layout drawn over the image."""
    drawing, img = draw_graph(graph, size), to_pil(image, value_range)
    hgt, wid = drawing.height, max(1, round(img.width * drawing.height / img.height))
    # NEAREST keeps a small sample's pixels honest when enlarging; shrinking needs a filter
    img = img.resize((wid, hgt), Image.NEAREST if hgt >= img.height else Image.LANCZOS)
    if boxes is not None:  # drawn at the panel's size, so the outlines stay thin
        img = draw_boxes(img, boxes, graph.objects, max(8, round(hgt / 24)))
    sheet = ImageOps.expand(img, (0, 0, gap + drawing.width, 0), BACKGROUND)
    sheet.paste(drawing, (wid + gap, 0))
    ImageDraw.Draw(sheet).rectangle((wid + gap, 0, sheet.width - 1, hgt - 1), outline=(225,) * 3)
    return _with_caption(sheet, caption)


def image_grid(
    images,
    graphs=None,
    captions=None,
    cols: int = 4,
    size: int | tuple[int, int] = 256,
    gap: int = 8,
) -> Image.Image:
    """Images row by row, `cols` per row, each beside its graph drawing when graphs are given."""
    images, caps = list(images), list(captions) if captions is not None else None
    if (
        not images
        or cols < 1
        or any(x is not None and len(x) != len(images) for x in (graphs, caps))
    ):
        raise ValueError("image_grid needs images, cols >= 1, and as many graphs/captions")
    caps = caps or [None] * len(images)
    cells = [
        side_by_side(im, graphs[i], caps[i], size)
        if graphs is not None
        else _with_caption(to_pil(im), caps[i])
        for i, im in enumerate(images)
    ]
    cw, ch = max(c.width for c in cells), max(c.height for c in cells)
    ncols, nrows = min(cols, len(cells)), math.ceil(len(cells) / min(cols, len(cells)))
    grid = Image.new("RGB", (ncols * (cw + gap) - gap, nrows * (ch + gap) - gap), BACKGROUND)
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % ncols) * (cw + gap), (i // ncols) * (ch + gap)))
    return grid

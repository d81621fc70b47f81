import numpy as np
import pytest
import torch
from PIL import Image

from sg2image.drawing import (
    NEUTRAL,
    PALETTE,
    _place,
    box_color,
    draw_graph,
    image_grid,
    node_color,
    side_by_side,
    to_pil,
)
from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, SceneGraph

SHAPES = [
    "red circle",
    "blue square",
    "green triangle",
    "yellow star",
    "purple cube",
    "cyan sphere",
    "orange cone",
    "pink heart",
    "gray cylinder",
    "person",
    "tree",
    "dog",
]


@pytest.fixture(scope="module")
def graph():
    return SceneGraph(
        objects=["red circle", "blue square", "green triangle", "large wooden table"],
        relationships=[(0, "left of", 1), (1, "right of", 0), (2, "above", 1), (0, "on", 3)],
    )


def big_graph(n=30):
    objs = [SHAPES[i % len(SHAPES)] for i in range(n)]
    rels = [
        (i, ["left of", "above", "next to", "touching"][i % 4], (i * 7 + 3) % n)
        for i in range(n - 5)
    ]
    return SceneGraph(objects=objs, relationships=rels)


def count(img: Image.Image, rgb) -> int:
    return int((np.asarray(img) == np.array(rgb, dtype=np.uint8)).all(-1).sum())


def test_draw_graph_size_and_mode(graph):
    img = draw_graph(graph)
    assert img.size == (256, 256) and img.mode == "RGB"
    assert draw_graph(graph, (320, 200)).size == (320, 200)


def test_draw_graph_is_deterministic(graph):
    assert draw_graph(graph).tobytes() == draw_graph(graph).tobytes()
    big = big_graph()
    assert draw_graph(big).tobytes() == draw_graph(big).tobytes()


def test_node_color():
    fill, outline = node_color("red circle")
    assert fill[0] > 200 and fill[1] < fill[0] and fill[2] < fill[0]  # a light red
    assert node_color("Red ball") == (fill, outline)
    assert node_color("blue cube")[0][2] > node_color("blue cube")[0][0]
    assert node_color("circle") == NEUTRAL and node_color("") == NEUTRAL


def test_tint_appears_in_picture():
    img = draw_graph(SceneGraph(objects=["red circle", "sky"], relationships=[(0, "below", 1)]))
    assert count(img, node_color("red circle")[0]) > 200
    assert count(img, NEUTRAL[0]) > 200  # "sky" names no colour


def test_image_node_and_edges_are_not_drawn():
    # a validated SceneGraph refuses them, so build one without validation
    with_image = SceneGraph.model_construct(
        objects=["red circle", IMAGE_OBJECT], relationships=[(0, IN_IMAGE, 1)]
    )
    alone = SceneGraph(objects=["red circle"])
    assert draw_graph(with_image).tobytes() == draw_graph(alone).tobytes()


def test_long_predicates_and_parallel_edges():
    long = "is standing very far behind and slightly to the left of the other thing"
    g = SceneGraph(
        objects=["man", "horse", "brown saddle"],
        relationships=[(0, long, 1), (1, long + " too", 0), (0, "riding", 1), (2, "on", 1)],
    )
    img = draw_graph(g)
    assert img.size == (256, 256)
    # both directions between one pair are drawn apart: more ink than with one edge only
    one = draw_graph(SceneGraph(objects=g.objects, relationships=[(0, long, 1), (2, "on", 1)]))
    assert count(img, (255, 255, 255)) < count(one, (255, 255, 255))


def test_one_object():
    img = draw_graph(SceneGraph(objects=["white cat"]), 128)
    assert img.size == (128, 128)
    assert count(img, (255, 255, 255)) < 128 * 128  # something was drawn


def test_thirty_objects():
    img = draw_graph(big_graph(30))
    assert img.size == (256, 256)
    assert count(img, node_color("red circle")[0]) > 0


@pytest.mark.parametrize("scale", [1.0, 4.0])  # 4x: too crowded, so the grid fallback
def test_place_keeps_boxes_apart_and_inside(scale):
    rng = np.random.default_rng(0)
    n, w, h, margin = 30, 512, 512, 4
    unit = rng.uniform(-0.2, 0.2, (n, 2))  # bunched up on purpose
    sizes = rng.uniform([40, 20], [100, 30], (n, 2)) * scale
    pos, cell = _place(unit, sizes, w, h, margin, np.full((n, n, 2), 8.0))
    if cell is not None:  # on the grid, boxes are cut down to their cells
        sizes = np.minimum(sizes, cell - 4)
    lo, hi = pos - sizes / 2, pos + sizes / 2
    assert (lo >= margin - 1e-6).all() and (hi <= np.array([w, h]) - margin + 1e-6).all()
    apart = (lo[:, None] >= hi[None]) | (hi[:, None] <= lo[None])  # per axis
    assert (apart.any(-1) | np.eye(n, dtype=bool)).all()
    assert (cell is None) == (scale == 1.0)


def test_to_pil_accepts_image_kinds():
    hwc = np.zeros((4, 6, 3), dtype=np.uint8)
    hwc[0, 0] = (255, 0, 0)
    assert to_pil(hwc).size == (6, 4) and to_pil(hwc).getpixel((0, 0)) == (255, 0, 0)
    assert to_pil(Image.fromarray(hwc).convert("RGBA")).mode == "RGB"
    t = torch.full((3, 4, 6), -1.0)
    t[:, 0, 0] = 1.0
    img = to_pil(t)  # [-1, 1], channels first
    assert img.size == (6, 4) and img.getpixel((0, 0)) == (255,) * 3
    assert img.getpixel((1, 0)) == (0, 0, 0)
    assert to_pil(torch.full((1, 3, 4, 6), 0.5)).getpixel((2, 2)) == (128,) * 3  # [0, 1]
    assert to_pil(torch.zeros(3, 4, 6), value_range=(-1, 1)).getpixel((0, 0)) == (128,) * 3
    with pytest.raises(ValueError):
        to_pil(np.zeros((4, 6, 5)))


def test_side_by_side(graph):
    checker = np.kron([[0, 1], [1, 0]], np.ones((16, 16)))[..., None].repeat(3, -1) * 255
    sheet = side_by_side(checker.astype(np.uint8), graph)
    assert sheet.size == (256 + 4 + 256, 256)
    # NEAREST upscaling: 8x blocks stay flat black and white
    assert sheet.getpixel((0, 0)) == (0, 0, 0) and sheet.getpixel((127, 127)) == (0, 0, 0)
    assert sheet.getpixel((128, 0)) == (255,) * 3
    captioned = side_by_side(torch.zeros(3, 64, 32), graph, caption="seed 0")
    assert captioned.width == 128 + 4 + 256 and captioned.height > 256


def test_side_by_side_with_a_layout(graph):
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    boxes = [[0.125, 0.25, 0.5, 0.75], [0.5, 0.5, 1.0, 1.0], [0, 0, 0.25, 0.25], [0.6, 0, 1, 0.4]]
    sheet = side_by_side(grey, graph, boxes=boxes)
    plain = side_by_side(grey, graph)
    assert sheet.size == plain.size and sheet.crop((260, 0, 516, 256)) == plain.crop(
        (260, 0, 516, 256)
    )  # the graph drawing untouched: the boxes go over the image only
    # 1 px outlines at the panel's scale (8x): the red circle's left side at x = 32
    assert sheet.getpixel((32, 150)) == (255, 0, 0) and sheet.getpixel((33, 150)) == (128,) * 3
    assert sheet.getpixel((255, 200)) == (0, 0, 255)  # the blue square's right, at the edge
    # no colour in "large wooden table": the palette's 4th; its tag carries its label
    assert box_color(graph.objects[3], 3) == PALETTE[3]
    assert sheet.getpixel((255, 90)) == PALETTE[3]
    tag = np.asarray(sheet.crop((154, 0, 256, 14))).astype(int)
    assert (tag == PALETTE[3]).all(-1).sum() > 200  # filled with its colour
    assert (tag.sum(-1) < 200).sum() > 10  # and dark text on it (orange is light)


@pytest.mark.parametrize("n, cols, grid_shape", [(5, 3, (2, 3)), (2, 4, (1, 2)), (4, 4, (1, 4))])
def test_image_grid_dimensions(n, cols, grid_shape):
    images = [np.full((32, 48, 3), 10 * i, dtype=np.uint8) for i in range(n)]
    grid = image_grid(images, cols=cols, gap=8)
    rows, ncols = grid_shape
    assert grid.size == (ncols * 48 + (ncols - 1) * 8, rows * 32 + (rows - 1) * 8)
    assert grid.getpixel((48 + 8, 0)) == (10, 10, 10)  # second image, first row


def test_image_grid_with_graphs_and_captions(graph):
    images = [torch.rand(3, 32, 32) for _ in range(3)]
    grid = image_grid(images, [graph] * 3, [f"seed {i}" for i in range(3)], cols=2, size=128)
    cell = side_by_side(images[0], graph, "seed 0", size=128)
    assert grid.size == (2 * cell.width + 8, 2 * cell.height + 8)
    with pytest.raises(ValueError):
        image_grid(images, [graph] * 2)
    with pytest.raises(ValueError):
        image_grid([])

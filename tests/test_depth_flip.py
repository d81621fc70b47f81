"""benchmarks/depth_flip.py: on the world's own renders, the drawn front is the graph's, and
it changes with the flipped graph; an image that ignores the graph follows nothing."""

from test_shapes_base import _benchmark_script

from sg2image.data.shapes import render

flip = _benchmark_script("depth_flip")


def test_renders_follow_their_graph_and_a_fixed_image_follows_nothing():
    graphs = flip.depth_test_graphs(12)
    flipped = [flip.flipped(g) for g in graphs]
    for g, f in zip(graphs, flipped, strict=True):
        assert [r[0::2] for r in g.relationships] == [r[0::2] for r in f.relationships]
        assert g.boxes == f.boxes and g.objects == f.objects
    renders = [render(g) for g in graphs]
    flipped_renders = [render(f) for f in flipped]
    truth = flip.order_scores(renders, flipped_renders, graphs, flipped)
    assert truth["depth_triples"] >= 12
    assert truth["right"] >= 0.95 and truth["right_flipped"] >= 0.95
    assert truth["follows"] >= 0.95
    # the same images for the flipped graphs: the order drawn does not depend on the graph
    ignored = flip.order_scores(renders, renders, graphs, flipped)
    assert ignored["follows"] == 0.0
    assert ignored["right"] + ignored["right_flipped"] <= 1.0 + 1e-9

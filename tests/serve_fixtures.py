"""Tiny random SceneGraphPipelines for the serving and command tests (never the shipped
model): a layout-free one and a layout model."""

import socket
import threading
import time

import torch

from sg2image.data.shapes import shapes_vocab
from sg2image.models.base import build_tiny_base, load_base
from sg2image.models.layout import LayoutGenerator
from sg2image.pipeline import pipeline_from_base

TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
TINY_LAYOUT = dict(embed_dim=16, encoder_layers=1, head_layers=2, time_dim=8, sample_steps=4)
GRAPH = {"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}


def tiny_pipeline(root, max_objects: int = 6):
    """On the Shapes vocabulary, so the editor's examples are the Shapes test scenes."""
    torch.manual_seed(0)
    base = load_base(build_tiny_base(root / "base"))
    pipe = pipeline_from_base(
        base, shapes_vocab(), TINY_ENCODER, dict(max_triples=8), max_objects=max_objects
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_layout_pipeline(root, max_objects: int = 6, world: str = "plain"):
    """A tiny layout model on the Shapes vocabulary of ``world`` ("depth": with 'in front of'
    and 'behind'): its untrained layout generator samples boxes of side about 0.3 around random
    centres, and the refinement keeps them apart, so each box can be seen and dragged in the
    editor."""
    torch.manual_seed(0)
    vocab = shapes_vocab(world)
    base = load_base(build_tiny_base(root / "base"))
    pipe = pipeline_from_base(
        base,
        vocab,
        TINY_ENCODER,
        dict(max_triples=8),
        max_objects=max_objects,
        layout_encoder_kwargs=dict(channels=3),
    )
    # the refinement brings every box inside the canvas (fit_canvas would move it anyway)
    refine = dict(steps=200)
    gen = LayoutGenerator(vocab.num_objects, vocab.num_predicates, refine=refine, **TINY_LAYOUT)
    with torch.no_grad():  # a constant velocity: the flow ends at side 0.3, centre at random
        gen.box_out.bias.copy_(torch.tensor([0.0, 0.0, -0.4, -0.4]))
        # a trained model reads its layout map; an untrained one would ignore the boxes
        pipe.unet.conv_in.weight[:, -3:].normal_(0, 0.5)
    pipe.register_modules(layout_generator=gen)  # not assignment: see tests/test_layout.py
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LoopbackServer:
    """A real uvicorn server for an app, on a free loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

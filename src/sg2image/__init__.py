"""sg2image: images from scene graphs (CLIP-guided graph conditioning of diffusion models).

The classes a saved pipeline folder names in its model_index.json are exported here,
because diffusers resolves them as ``getattr(sg2image, class_name)``.
"""

from pathlib import Path

from sg2image.graph import (
    GraphBatch,
    GraphValidationError,
    SceneGraph,
    Vocab,
    pack_graphs,
    parse_graphs,
)
from sg2image.models.conditioning import GraphConditioner
from sg2image.models.graph_encoder import SceneGraphEncoder
from sg2image.pipeline import SceneGraphPipeline

__version__ = "0.1.0"
# The Shapes model shipped in the package: SceneGraphPipeline.from_pretrained(SHAPES_MODEL).
SHAPES_MODEL = Path(__file__).parent / "assets" / "shapes-pipeline"
__all__ = [
    "SHAPES_MODEL",
    "GraphBatch",
    "GraphConditioner",
    "GraphValidationError",
    "SceneGraph",
    "SceneGraphEncoder",
    "SceneGraphPipeline",
    "Vocab",
    "pack_graphs",
    "parse_graphs",
]

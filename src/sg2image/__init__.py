"""sg2image: images from scene graphs (CLIP-guided graph conditioning of diffusion models).

The classes a saved pipeline folder names in its model_index.json are exported here,
because diffusers resolves them as ``getattr(sg2image, class_name)``.

Exports are lazy (PEP 562): ``import sg2image`` imports neither torch nor diffusers, so
commands that need no model (``sg2image --help``, ``validate``, ``draw``, ``shapes``)
start at once; the first access to, say, ``sg2image.SceneGraphPipeline`` imports it.
"""

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.10.1"  # the same as pyproject.toml's version (CHANGELOG.md)
# The Shapes model shipped in the package: SceneGraphPipeline.from_pretrained(SHAPES_MODEL).
SHAPES_MODEL = Path(__file__).parent / "assets" / "shapes-pipeline"
# Its depth-world sibling ("in front of" / "behind"; --preset shapes-depth).
SHAPES_DEPTH_MODEL = Path(__file__).parent / "assets" / "shapes-depth-pipeline"
# What `--model NAME` means on the command line when NAME is no folder.
SHIPPED_MODELS = {"shapes": SHAPES_MODEL, "shapes-depth": SHAPES_DEPTH_MODEL}

# name -> the module that defines it
_LAZY = {
    "GraphBatch": "sg2image.graph",
    "GraphValidationError": "sg2image.graph",
    "SceneGraph": "sg2image.graph",
    "Vocab": "sg2image.graph",
    "pack_graphs": "sg2image.graph",
    "parse_graphs": "sg2image.graph",
    "GraphConditioner": "sg2image.models.conditioning",
    "SceneGraphEncoder": "sg2image.models.graph_encoder",
    "SceneGraphPipeline": "sg2image.pipeline",
}

__all__ = [  # a literal list, so linters see the TYPE_CHECKING imports below as exports
    "SHAPES_DEPTH_MODEL",
    "SHAPES_MODEL",
    "SHIPPED_MODELS",
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

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ does this
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


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sg2image' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # imported once; later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""The command line starts without torch: `import sg2image` and the commands that need no
model (--help, validate, draw, shapes make / vocab / render / check) must not import torch,
diffusers or transformers, which cost seconds of start-up. Checked in a fresh interpreter on
sys.modules, not by timing (benchmarks/cli_startup.py measures the time)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sg2image

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "torch_geometric")
EXAMPLES = Path(sg2image.__file__).parent / "examples" / "shapes.json"


def heavy_imported_after(code: str) -> list[str]:
    """The heavy packages in sys.modules after running `code` in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    return [m for m in HEAVY if m in modules]


def test_package_and_cli_import_no_torch():
    assert heavy_imported_after("import sg2image, sg2image.cli") == []


@pytest.mark.parametrize(
    "module", ["sg2image.graph", "sg2image.drawing", "sg2image.data.shapes", "sg2image.eval.oracle"]
)
def test_modules_of_the_fast_commands_import_no_torch(module):
    assert heavy_imported_after(f"import {module}") == []


def test_fast_commands_run_without_torch(tmp_path):
    """The commands run, one after another in one interpreter, and none imports torch:
    their bodies import lazily too, and validate reads the default model's
    model_index.json, not the model."""
    runs = [
        ["--help"],
        ["validate", EXAMPLES],
        ["shapes", "vocab", "-o", tmp_path / "vocab.json"],
        ["validate", EXAMPLES, "--vocab", tmp_path / "vocab.json"],
        ["draw", EXAMPLES, "-o", tmp_path / "drawn"],
        ["shapes", "make", "--n", "3", "-o", tmp_path / "g.json"],
        ["shapes", "render", tmp_path / "g.json", "-o", tmp_path / "renders"],
        ["shapes", "check", tmp_path / "g.json", tmp_path / "renders"],
    ]
    code = "from typer.testing import CliRunner\nfrom sg2image.cli import app\n"
    for args in runs:
        args = [str(a) for a in args]
        code += (
            f"r = CliRunner().invoke(app, {args!r})\n"
            f"assert r.exit_code == 0, ({args!r}, r.output)\n"
        )
    assert heavy_imported_after(code) == []
    assert len(list((tmp_path / "renders").glob("*.png"))) == 3  # they did run


def test_lazy_exports_resolve():
    """Every name in __all__ resolves (diffusers looks pipeline classes up as
    getattr(sg2image, name)); unknown names are an AttributeError as usual."""
    for name in sg2image.__all__:
        assert getattr(sg2image, name) is not None
    eager = {"SHAPES_MODEL", "SHAPES_DEPTH_MODEL", "SHIPPED_MODELS"}
    assert set(sg2image.__all__) == eager | set(sg2image._LAZY)
    assert "SceneGraphPipeline" in dir(sg2image)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sg2image.Nope  # noqa: B018

"""Test set-up and fixtures shared by the whole suite.

Threads: every test process (and every subprocess it starts, through OMP_NUM_THREADS) runs
torch on one thread. Tiny models gain nothing from a second thread, and on a busy 2-core
machine OpenMP threads spin-waiting on each other made a tiny UNet call 30-100x slower
(measured: 12 ms on one thread, 0.3-2 s on two while other processes ran). Under pytest-xdist
each worker is one process on one core.

Session fixtures (built once per test process, i.e. once per xdist worker that needs them).
They are shared: never write into their folders. A test that changes one copies it first
(``shutil.copytree(src, tmp_path / "x")``) or builds its own.

- ``tiny_sd``: ``(base_dir, clip_dir)``, a tiny random Stable Diffusion 1.x folder (tokenizer,
  text encoder, UNet, VAE, scheduler; ``build_tiny_base``, 32 px) and a tiny CLIP vision
  tower (``build_tiny_clip_vision``): what ``train`` and the SD presets take as
  ``base_model`` / ``clip_model``, and what ``pipeline_from_base(load_base(base_dir), ...)``
  builds a random pipeline on.
- ``tiny_shapes_run``: ``(out, pipeline_dir)``, the whole ``train --preset shapes`` chain
  with seconds-long budgets (tests/tiny_settings.py: ``ShapesBaseConfig.tiny()`` and
  ``TINY_SHAPES_METHOD``): ``out/shapes-base`` holds the tiny Shapes base (``base``, ``clip``,
  ``parts``, ``logs``, ``report.json``), ``out/method`` the method's run (checkpoints,
  metrics.jsonl, config.json) and ``pipeline_dir`` (= ``out/method/pipeline``) a trained
  layout model that ``load_pipeline`` / ``SceneGraphPipeline.from_pretrained`` loads. To
  train on it (a further stage, say), write to a new ``output_dir`` and read its folders. A
  copy of ``out/shapes-base`` starts a new preset run without training a base again
  (test_shapes_preset does); a copy of ``out/method`` cannot be resumed (its config names
  the original folders).

Markers: ``slow`` marks the long end-to-end tests (whole training chains, several processes,
the browser); CI runs them, a developer may skip them with ``pytest -m "not slow"``.
"""

import os

# before torch is imported, so that this process and the subprocesses of the CLI tests read it
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """The suite already runs on one thread (see above); kept for the modules that ask for
    it (``pytestmark = pytest.mark.usefixtures("one_thread")``), in case a test changed it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """(base_dir, clip_dir): a tiny random SD-1.x folder and CLIP vision tower (seeded)."""
    from sg2image.models.base import build_tiny_base, build_tiny_clip_vision

    root = tmp_path_factory.mktemp("tiny_sd")
    return build_tiny_base(root / "base"), build_tiny_clip_vision(root / "clip")


@pytest.fixture(scope="session")
def tiny_shapes_run(tmp_path_factory):
    """(out, pipeline_dir): the tiny `--preset shapes` chain, trained once (seconds)."""
    from tiny_settings import TINY_SHAPES_METHOD

    from sg2image.training.base_model import ShapesBaseConfig
    from sg2image.training.presets import run_preset

    out = tmp_path_factory.mktemp("tiny_shapes_run")
    return out, run_preset("shapes", out, TINY_SHAPES_METHOD, ShapesBaseConfig.tiny())

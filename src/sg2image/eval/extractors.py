"""Feature extractors for FID, KID and IS: uint8 images (N, 3, H, W) -> (features (N, D),
class logits (N, C) or None).

FID moves with the extractor, so each one says what it is (name, source, sha256 of its
weights) and results carry that. Three kinds:

* ``InceptionExtractor``: torch-fidelity's InceptionV3 with the standard FID weights (the
  TensorFlow 2015-12-05 graph converted to PyTorch, file ``...-2015-12-05-6726825d.pth``):
  2048-d pool features for FID / KID and the unbiased logits for IS, as pytorch-fid,
  torch-fidelity and torchmetrics use them. Numbers comparable with the literature.
* ``ClipExtractor``: CLIP image embeddings from a local CLIP folder (any size, the Shapes
  CLIP included). Works offline; not comparable with Inception numbers; no logits, no IS.
* ``CustomExtractor``: any torch module (tests use tiny random ones).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from sg2image.eval.errors import EvalSetupError, missing_extra
from sg2image.eval.metrics import CLIP_MEAN, CLIP_STD, ClipImageFeatures

# torch hub names checkpoints by the first 8 hex digits of their sha256: the standard FID
# Inception file is "pt_inception-2015-12-05-6726825d.pth" (pytorch-fid) or
# "weights-inception-2015-12-05-6726825d.pth" (torch-fidelity).
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch .pth file read with weights_only=True:
    the standard Inception and AlexNet weights exist only as torch pickles, and this refuses
    anything in them but tensors and plain containers (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise EvalSetupError(f"{path}: no such file ({what})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError: all mean "not weights"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalSetupError(f"{path}: not a plain file of tensors ({what}): {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalSetupError(f"{path}: not a state dict of tensors ({what})")
    return state


class FeatureExtractor(nn.Module):
    """uint8 images (N, 3, H, W) -> (features (N, D) float32, logits (N, C) float32 or None).

    ``logits`` are class logits of a real classifier (what IS needs) or None; then
    ``no_logits_reason`` says why IS cannot be computed from this extractor.
    """

    name: str = "custom"
    source: str | None = None
    sha256: str | None = None
    no_logits_reason: str = "the feature extractor gives no class logits"

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "sha256": self.sha256}


class CustomExtractor(FeatureExtractor):
    """Any module: ``module(images)`` returns features (N, D), or (features, logits)
    when it is a classifier. Images arrive as uint8 (N, 3, H, W); scaling is its own."""

    def __init__(self, module: nn.Module, name: str, source: str | None = None):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.name, self.source = name, source

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        out = self.module(images)
        if isinstance(out, tuple):
            return out[0].float(), out[1].float()
        return out.float(), None


def _clip_normalisation(source: str) -> tuple[tuple, tuple]:
    """image_mean / image_std of the folder's preprocessor_config.json (the Shapes CLIP
    uses 0.5 / 0.5), else OpenAI CLIP's."""
    config = Path(source) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return CLIP_MEAN, CLIP_STD


def _folder_sha256(folder: Path) -> str | None:
    """One sha256 over a model folder's weight files (names and contents)."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + file_sha256(f).encode())
    return digest.hexdigest()


class ClipExtractor(FeatureExtractor):
    """CLIP image embeddings (N, projection_dim) of a CLIP vision folder or hub id."""

    no_logits_reason = (
        "CLIP image embeddings are not class logits, so there is no IS on them "
        "(pass --inception for the Inception Score)"
    )

    def __init__(self, source: str | Path):
        super().__init__()
        from sg2image.models.base import load_clip_vision

        source = str(source)
        mean, std = _clip_normalisation(source)
        self.clip = ClipImageFeatures(load_clip_vision(source), mean, std)
        self.name = f"CLIP image_embeds ({self.clip.num_features}-d)"
        self.source = source
        self.sha256 = _folder_sha256(Path(source)) if Path(source).is_dir() else None

    def forward(self, images: torch.Tensor):
        return self.clip(images), None


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's FID InceptionV3: 2048-d pool features and 1008 unbiased logits.

    It resizes to 299 with TensorFlow-1 bilinear interpolation, as the original FID code
    does (torchmetrics' own default wrapper antialiases instead, which shifts FID).
    ``weights`` is a local file, or "download" for torch-fidelity's download (or its
    torch hub cache).
    """

    name = "InceptionV3 (FID, 2015-12-05 weights): pool 2048 / logits_unbiased"

    def __init__(self, weights: str | Path):
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise missing_extra("torch-fidelity", "fidelity", "Inception FID/KID/IS") from None
        path = None
        if str(weights) != "download":
            if Path(weights).suffix == ".safetensors":
                raise EvalSetupError(f"{weights}: torch-fidelity reads the .pth file only")
            # Checked here with weights_only=True before torch-fidelity loads the same file.
            load_state_dict(weights, f"the InceptionV3 FID weights, {INCEPTION_FILE}")
            path = str(weights)
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=path,
            )
        except RuntimeError as e:  # load_state_dict: wrong keys or shapes
            first = str(e).strip().splitlines()[0]
            raise EvalSetupError(f"{weights}: not the InceptionV3 FID weights ({first})") from None
        except OSError as e:  # URLError and friends: offline
            raise EvalSetupError(
                f"the InceptionV3 FID weights could not be downloaded ({e}); pass the file "
                f"{INCEPTION_FILE} with --inception PATH"
            ) from None
        except Exception as e:  # whatever else a torch-fidelity version raises on loading
            first = (str(e).strip().splitlines() or [""])[0]
            raise EvalSetupError(
                f"{weights}: torch-fidelity could not build its InceptionV3 "
                f"({type(e).__name__}: {first})"
            ) from None
        if path is None:  # where torch hub keeps what torch-fidelity downloaded
            cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
            path = str(cached) if cached.is_file() else None
        self.standard = None
        if path is not None:
            self.source, self.sha256 = path, file_sha256(path)
            self.standard = self.sha256.startswith(INCEPTION_SHA256_PREFIX)
            if not self.standard:
                self.name += " (NOT the standard weights file: numbers not comparable)"
        else:
            self.source = "downloaded by torch-fidelity"

    def describe(self) -> dict:
        return {**super().describe(), "standard_weights": self.standard}

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        pool, logits = self.net(images)
        return pool, logits

"""Diversity between samples of the same graph (files ``{index:06d}_{k}.png``).

DS, as the literature reports it: LPIPS v0.1 with AlexNet between every pair of samples of
one graph, mean and std over all pairs. It needs the optional ``lpips`` package
(``pip install 'sg2image[lpips]'``) and AlexNet backbone weights: torchvision's
``alexnet-owt-7be5be79.pth``, given as a local file or downloaded by torchvision. LPIPS'
own linear layers ship inside the package.

Without LPIPS the suite reports ``feature_diversity`` instead (L2 between the FID features
of the same pairs): a different number, never called DS.
"""

from __future__ import annotations

import importlib.util
from itertools import combinations
from pathlib import Path

import torch

from sg2image.eval.errors import EvalSetupError, missing_extra
from sg2image.eval.extractors import file_sha256, load_state_dict

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def sample_pairs(samples: dict[int, dict[int, Path]]) -> list[tuple[Path, Path]]:
    """Every pair (sample k, sample l), k < l, of each graph's samples, in graph order."""
    return [
        (ks[a], ks[b])
        for i in sorted(samples)
        for ks in [samples[i]]
        for a, b in combinations(sorted(ks), 2)
    ]


def lpips_installed() -> bool:
    return importlib.util.find_spec("lpips") is not None


def load_alexnet_backbone(net: torch.nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """torchvision AlexNet weights (``features.N.*``) into lpips' sliced copy of its
    ``features`` (``sliceK.N.*``: the layer index N is kept, only the slice differs)."""
    mapped = {}
    for name in net.state_dict():
        key = "features." + name.split(".", 1)[1]
        if key not in state:
            raise EvalSetupError(
                f"{path}: no '{key}' (expected torchvision's AlexNet weights, {ALEXNET_FILE})"
            )
        mapped[name] = state[key]
    try:
        net.load_state_dict(mapped)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EvalSetupError(f"{path}: not torchvision's AlexNet weights ({first})") from None


class Lpips:
    """LPIPS v0.1 (AlexNet): uint8 image pairs (P, 3, H, W) x 2 -> distances (P,)."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu"):
        try:
            import lpips
        except ImportError:
            raise missing_extra("lpips", "lpips", "DS (LPIPS)") from None
        if weights is None:
            try:
                model = lpips.LPIPS(net="alex", version="0.1", verbose=False)
            except Exception as e:  # offline: URLError, or whatever torchvision raises
                raise EvalSetupError(
                    f"LPIPS: the AlexNet backbone weights could not be loaded ({e}); pass "
                    f"torchvision's {ALEXNET_FILE} with --lpips-weights PATH, or --no-lpips"
                ) from None
            self.source, self.sha256 = "torchvision (downloaded or cached)", None
        else:
            # A random backbone (nothing downloaded), then the given weights over it.
            model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
            state = load_state_dict(weights, f"AlexNet weights for LPIPS, {ALEXNET_FILE}")
            load_alexnet_backbone(model.net, state, weights)
            self.source, self.sha256 = str(weights), file_sha256(weights)
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = device

    def describe(self) -> dict:
        return {"name": "LPIPS v0.1 (AlexNet)", "source": self.source, "sha256": self.sha256}

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def scale(x):  # uint8 -> [-1, 1], what LPIPS expects
            return x.to(self.device).float() / 127.5 - 1.0

        return self.model(scale(a), scale(b)).flatten().cpu()

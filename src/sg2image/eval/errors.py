"""The one error type of the evaluation suite's set-up: a missing extra, absent weights, a
bad detector path. A ValueError, so the CLI prints it as one line and exits with code 2."""

from __future__ import annotations


class EvalSetupError(ValueError):
    """What is missing or wrong, and what to do about it, in one line."""


def missing_extra(package: str, extra: str, what: str) -> EvalSetupError:
    return EvalSetupError(
        f"{what} needs the optional package '{package}', which is not installed: "
        f"pip install 'sg2image[{extra}]' (it pulls a CUDA torch and torchvision)"
    )

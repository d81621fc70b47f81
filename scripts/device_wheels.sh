#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machine's image lacks, into .whl/ (ignored by
# git; the device tool carries it when a run names it: carry [".whl"]).
#
# That image (the device tool's KINDS.md, 2026-11) has Python 3.12, torch, transformers,
# accelerate, huggingface_hub, safetensors, typer, rich, h5py, scipy and torch_geometric, but
# not diffusers or pydantic. Versions are this project's tested ones; diffusers needs
# huggingface-hub >= 1.32 (the image has 1.33). About 9 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata==8.7.0 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing_extensions==4.16.0
ls -la .whl

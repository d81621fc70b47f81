"""Sampling for evaluation: a whole split to disk (resumable, split across processes), or a
list of graphs to arrays in memory (the benchmarks' seeded loop).

Files are ``OUT/{index:06d}_{k}.png`` (graph index in the split, sample k), so the
reference image, the graph and every sample of it line up by name. Under
``accelerate launch`` process r takes the graphs with index % num_processes == r.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from sg2image.graph import SceneGraph


def named_pipeline(spec: str) -> tuple[str, Path]:
    """``NAME=PIPELINE_DIR`` (a benchmark's argument) -> (name, folder); ValueError, saying
    what is wrong, unless the folder holds a saved pipeline."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not (Path(path) / "model_index.json").is_file():
        raise ValueError(f"{spec!r}: expected NAME=PIPELINE_DIR, a folder with model_index.json")
    return name, Path(path)


def sample_arrays(
    pipe, graphs: list[SceneGraph], batch_size: int = 16, seed: int = 0, **call_kwargs
) -> list[np.ndarray]:
    """(H, W, 3) uint8 images of ``graphs``, ``batch_size`` at a time; graph i draws its noise
    from generator ``seed + i``, so the images do not depend on the batch size, and two
    calls on edited graphs (a flipped relation, mirrored boxes) see the same noise.
    ``call_kwargs`` go to the pipeline's call (steps, guidance, layout, sampler)."""
    images = []
    for k in tqdm(range(0, len(graphs), batch_size), desc="sampling", leave=False):
        part = graphs[k : k + batch_size]
        gens = [torch.Generator().manual_seed(seed + k + j) for j in range(len(part))]
        out = pipe(part, generator=gens, output_type="np", **call_kwargs)
        images += [(np.asarray(im) * 255).round().astype(np.uint8) for im in out.images]
    return images


def sample_name(index: int, k: int) -> str:
    return f"{index:06d}_{k}.png"


def graph_at(dataset, i: int) -> SceneGraph:
    """Item i's graph without loading its image when the dataset can say it alone."""
    if isinstance(dataset, torch.utils.data.Subset):
        return graph_at(dataset.dataset, dataset.indices[i])
    return dataset.graph(i) if hasattr(dataset, "graph") else dataset[i]["graph"]


def sample_split(
    pipe,
    dataset,
    out_dir: str | Path,
    samples_per_graph: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 2.0,
) -> int:
    """Generate the missing samples of ``dataset`` into ``out_dir``; returns how many this
    process wrote. Sample k of graph i uses seed + k * len(dataset) + i, whatever the
    process count or batch, so a resumed or re-sharded run gives the same images."""
    state = PartialState()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    todo = [
        (i, k)
        for i in range(state.process_index, n, state.num_processes)
        for k in range(samples_per_graph)
        if not (out / sample_name(i, k)).is_file()
    ]
    if state.is_main_process:
        graphs_file = out / "graphs.json"
        if not graphs_file.is_file():
            graphs_file.write_text(json.dumps([graph_at(dataset, i).to_json() for i in range(n)]))
    written = 0
    bar = tqdm(
        range(0, len(todo), batch_size), desc="sampling", disable=not state.is_local_main_process
    )
    for start in bar:
        chunk = todo[start : start + batch_size]
        graphs = [graph_at(dataset, i) for i, _ in chunk]
        gens = [torch.Generator().manual_seed(seed + k * n + i) for i, k in chunk]
        images = pipe(
            graphs,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=gens,
        ).images
        for (i, k), image in zip(chunk, images, strict=True):
            # Written then renamed: an interrupted run never leaves a half PNG to skip over.
            tmp = out / f".{sample_name(i, k)}.tmp"
            image.save(tmp, format="PNG")
            os.replace(tmp, out / sample_name(i, k))
            written += 1
    state.wait_for_everyone()
    return written

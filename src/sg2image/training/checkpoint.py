"""Atomic checkpoints, the ``latest`` pointer, rotation, and the pipeline export.

Layout under ``output_dir/checkpoints``::

    checkpoint-000120/        one complete checkpoint (never half-written, see below)
        model*.safetensors    weights of every trained module (accelerate, safe_serialization)
        optimizer*.bin, scheduler*.bin, random_states_<rank>.pkl   torch files we wrote
        config.json           the run's TrainConfig
        trainer_state.json    stage, steps; written last
    latest                    the name of the newest complete checkpoint

Atomicity: a checkpoint is written into ``checkpoint-N.tmp/`` and renamed to
``checkpoint-N`` only when complete (a rename within a folder is atomic on POSIX); then
``latest`` is rewritten through a temporary file and os.replace. A crash at any point leaves
``latest`` naming a complete checkpoint (or absent), and at worst a stale ``*.tmp`` folder,
which the next save removes.

Safety: optimizer, scheduler and RNG states are torch pickles. accelerate loads them with
``torch.load(weights_only=True)``, and we additionally only ever load from a checkpoint
folder inside this run's own ``output_dir/checkpoints`` that carries our trainer_state.json,
never from an arbitrary user path (a pickle can run code when loaded).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sg2image.training.config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"
FORMAT = "sg2image-trainer-state/1"


def checkpoint_root(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / CHECKPOINTS


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith("checkpoint-") or not name[11:].isdigit():
        return None
    return int(name[11:])


def is_complete(path: Path) -> bool:
    return path.is_dir() and _step_of(path) is not None and (path / STATE_FILE).is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (``*.tmp`` leftovers are not complete)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_complete(p)), key=_step_of)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: readers see the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def find_latest(root: Path) -> Path | None:
    """The checkpoint ``latest`` names; if that one is missing (deleted by hand), the newest
    complete one."""
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if is_complete(target):
            return target
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a checkpoint written by this trainer")
    return state


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint folder ``cfg.resume`` names, or None to start from scratch.

    "latest" with no checkpoint yet starts from scratch (so the same command can start and
    restart a preemptible job). A path must be a complete checkpoint inside this run's
    ``output_dir/checkpoints`` (see the module doc: we load no pickle from elsewhere).
    """
    if cfg.resume is None:
        return None
    root = checkpoint_root(cfg)
    if cfg.resume == "latest":
        return find_latest(root)
    path = Path(cfg.resume).resolve()
    if path.parent != root.resolve():
        raise ConfigError(
            f"resume: {cfg.resume} is not a checkpoint of this run ({root}/checkpoint-N). "
            "Checkpoints hold pickled optimizer state, which is only loaded from the run's own "
            "folder: copy a checkpoint you trust there, or set output_dir to its run."
        )
    if not is_complete(path):
        raise ConfigError(f"resume: {cfg.resume} is not a complete checkpoint")
    read_state(path)
    return path


def save_checkpoint(accelerator, cfg: TrainConfig, state: dict[str, Any], extra=None) -> Path:
    """Write checkpoint-<global_step> atomically, point ``latest`` at it, rotate old ones.

    Every process must call it (accelerate writes each rank's RNG state). ``extra(folder)``,
    if given, writes more files into the folder on the main process before it is published.
    """
    root = checkpoint_root(cfg)
    name = f"checkpoint-{state['global_step']:06d}"
    final, tmp = root / name, root / f"{name}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every rank's files are in tmp
    if accelerator.is_main_process:
        cfg.save(tmp / "config.json")
        if extra is not None:
            extra(tmp)
        # Written last: its presence is what makes a folder a checkpoint.
        write_atomic(tmp / STATE_FILE, json.dumps({"format": FORMAT, **state}, indent=1))
        if final.exists():  # re-saving a step after resuming from an older checkpoint
            old = root / f"{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)  # find_latest falls back to the newest complete one meanwhile
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        write_atomic(root / LATEST, name + "\n")
        rotate(root, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    return final


def rotate(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints (never the one ``latest`` names)."""
    latest = find_latest(root)
    for path in complete_checkpoints(root)[:-keep]:
        if path != latest:
            shutil.rmtree(path)


def load_checkpoint(accelerator, path: Path) -> dict[str, Any]:
    """Restore models, optimizers, schedulers and RNG states; returns trainer_state.json."""
    state = read_state(path)
    rng = path / f"random_states_{accelerator.process_index}.pkl"
    if not rng.is_file():
        # accelerate skips it silently. Data order and per-example noise do not depend on the
        # process count; only the global RNG (stage 1's discriminator dropout) does.
        logger.warning(  # from the process concerned (accelerator.print: the main one only)
            "%s was written by %s process(es); process %d starts from a fresh RNG state",
            path,
            state.get("num_processes"),
            accelerator.process_index,
        )
    accelerator.load_state(str(path))
    if accelerator.is_main_process:
        # Resuming from an older checkpoint starts a new branch: a crash from here on must
        # come back to this branch, not to the newer checkpoints of the abandoned one.
        write_atomic(path.parent / LATEST, path.name + "\n")
    return state


def publish_dir(write, final: Path) -> None:
    """Write a folder with ``write(tmp_folder)``, then swap it in for ``final`` (main process)."""
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)

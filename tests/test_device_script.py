"""scripts/device_train.sh's own logic, on the CPU: arguments, the time limit, snapshots of
the run folder that leave optimizer checkpoints out. The training it starts is replaced by a
stand-in `python3` (the real chain is tested in test_gpu_preset.py)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE = """\
#!{python}
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
if args and args[0].endswith(".py"):
    print("fake run", " ".join(args), flush=True)
    sys.exit(0)
if args[:2] != ["-m", "sg2image"]:
    sys.exit(0)  # the version print
print("fake train", " ".join(args[2:]), flush=True)
run = Path(args[args.index("-o") + 1])
(run / "method" / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
(run / "method" / "checkpoints" / "checkpoint-1" / "optimizer.bin").write_bytes(b"x" * 100)
(run / "method" / "pipeline").mkdir(parents=True, exist_ok=True)
(run / "method" / "pipeline" / "model_index.json").write_text("{{}}")
(run / "shapes-base" / "base").mkdir(parents=True, exist_ok=True)
(run / "shapes-base" / "report.json").write_text('{{"unet": {{"samples_per_s": 1}}}}')
(run / "timings.json").write_text('{{"base_s": 1}}')
time.sleep(float(os.environ.get("FAKE_SECONDS", "0")))
"""


@pytest.fixture
def tree(tmp_path):
    """A copy of the script in a bare project folder, a stand-in python3 first on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "device_train.sh", tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("OUT", None)
    return tmp_path, env


def run(tree, *args, seconds=0):
    root, env = tree
    env = {**env, "FAKE_SECONDS": str(seconds)}
    cmd = ["bash", str(root / "scripts" / "device_train.sh"), "--out", str(root / "o"), *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def unpack(root: Path) -> list[str]:
    parts = sorted((root / "o" / "snapshot").glob("part-*"))
    assert parts, "no snapshot"
    joined = root / "joined.tgz"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        return [m.name for m in tar.getmembers()]


def test_smoke_runs_the_preset_and_snapshots_without_checkpoints(tree):
    res = run(tree, "--smoke")
    assert res.returncode == 0, res.stdout + res.stderr
    root = tree[0]
    log = (root / "o" / "train.log").read_text()
    expected = "train --preset shapes-gpu --budget-scale 1 --smoke -o runs/shapes-gpu-smoke"
    assert f"fake train {expected}" in log
    assert "training exited with status 0" in log and "== shapes-base/report.json" in log
    names = unpack(root)
    assert "./method/pipeline/model_index.json" in names and "./timings.json" in names
    assert not any("checkpoints" in n for n in names)
    # the pipeline holds the base's VAE and text encoder: the base folder is left out
    assert not any(n.startswith("./shapes-base/base") for n in names)


def test_real_scale_step_runs_after_training_and_shortens_the_limit(tree):
    res = run(tree, "--sd-step", "30")
    assert res.returncode == 0, res.stdout + res.stderr
    # the stand-in python3 prints what it is asked to run
    log = (tree[0] / "o" / "train.log").read_text()
    assert "fake run benchmarks/sd_step.py --seconds 30 --batch 32 --out" in log


def test_time_limit_stops_training_and_says_how_to_resume(tree):
    res = run(tree, "--limit", "2", "--budget-scale", "0.5", seconds=60)
    assert res.returncode == 124, res.stdout + res.stderr
    log = (tree[0] / "o" / "train.log").read_text()
    assert "--budget-scale 0.5 -o runs/shapes-gpu" in log
    assert "stopped by the 2 s limit: run the script again to resume" in log
    assert "./method/pipeline/model_index.json" in unpack(tree[0])


def test_another_preset_with_overrides(tree):
    res = run(tree, "--preset", "shapes-gpu-depth", "--run", "runs/depth-no-graph", "--",
              "conditioner.use_graph=false", "seed=1")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    log = (tree[0] / "o" / "train.log").read_text()
    expected = "train --preset shapes-gpu-depth --budget-scale 1 -o runs/depth-no-graph"
    assert f"fake train {expected} conditioner.use_graph=false seed=1" in log
    res = run(tree, "--preset", "shapes-gpu-depth", "--smoke")
    log = (tree[0] / "o" / "train.log").read_text()
    assert res.returncode == 0 and "--smoke -o runs/shapes-gpu-depth-smoke\n" in log


def test_unknown_argument_is_refused(tree):
    res = run(tree, "--fast")
    assert res.returncode == 2 and "unknown argument: --fast" in res.stderr


def test_header_names_every_wheel_the_wheel_script_downloads():
    wheels = (ROOT / "scripts" / "device_wheels.sh").read_text()
    for name in ("diffusers==", "pydantic==", "pydantic_core==", "typing-inspection=="):
        assert name in wheels
    header = textwrap.dedent((ROOT / "scripts" / "device_train.sh").read_text()[:1500])
    assert "device_wheels.sh" in header and "--smoke" in header


ROWS_FAKE = """\
#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] != ["-m"]:
    sys.exit(0)  # the import check and the float16 copies (a script on stdin)
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(args[2:]) + "\\n")
if args[2] == "train":
    run = Path(args[args.index("-o") + 1])
    (run / "method" / "pipeline").mkdir(parents=True, exist_ok=True)
"""


def test_depth_rows_script_trains_rows_that_differ_only_by_name(tmp_path):
    """scripts/device_depth_rows.sh: the rows of the depth table on one base, the
    layout rows on one shared layout model, then one benchmark over all of them."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "device_depth_rows.sh", repo / "scripts")
    base, layout = tmp_path / "base", tmp_path / "layout"
    base.mkdir(), layout.mkdir()
    (base / "config.json").write_text("{}")
    (layout / "config.json").write_text("{}")
    fake = tmp_path / "python"
    fake.write_text(ROWS_FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(calls)}
    script = ["bash", "scripts/device_depth_rows.sh", "--out", str(tmp_path / "out")]
    done = subprocess.run([*script, "--base", str(base), "--layout", str(layout),
                           "--finetune-steps", "7"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    runs = {}
    for line in calls.read_text().splitlines():
        args = json.loads(line)
        if args[0] == "train":
            runs[args[args.index("-o") + 1]] = args
        else:
            bench = args
    names = ("full", "no-graph", "no-order", "no-order-loc", "no-order-weighted", "paper",
             "paper-boxes", "paper-loc")
    assert sorted(runs) == [f"runs/rows-{r}" for r in names]
    for run, args in runs.items():
        assert "finetune.max_steps=7" in args and "finetune.batch_size=256" in args, run
        assert (repo / run / "shapes-base" / "config.json").is_file(), run
    extra = {
        run.removeprefix("runs/rows-"): {
            a
            for a in args
            if a.startswith(("layout.pretrained", "conditioner.", "layout_encoder.",
                             "finetune.overlap", "finetune.localise", "position_grid"))
        }
        for run, args in runs.items()
    }
    shared = f"layout.pretrained={layout}"
    assert extra == {
        "full": {shared},
        "no-graph": {shared, "conditioner.use_graph=false"},
        "no-order": {shared, "layout_encoder.depth_order=false"},
        "no-order-loc": {shared, "layout_encoder.depth_order=false",
                         "layout_encoder.instance_slots=5", "conditioner.object_slots=true",
                         "conditioner.triple_slots=true", "conditioner.object_depth=true",
                         "finetune.localise_weight=1", "finetune.localise_steps=1",
                         "finetune.localise_weight_after=0.1"},
        "no-order-weighted": {shared, "layout_encoder.depth_order=false",
                              "layout_encoder.instance_slots=5", "conditioner.object_slots=true",
                              "conditioner.triple_slots=true", "conditioner.object_depth=true",
                              "finetune.overlap_weight=16"},
        "paper": set(),
        "paper-boxes": {"conditioner.object_tokens=true", "conditioner.object_boxes=true"},
        "paper-loc": {"conditioner.object_tokens=true", "conditioner.object_boxes=true",
                      "position_grid=true", "finetune.localise_weight=1"},
    }
    for name in ("paper", "paper-loc", "paper-boxes"):
        args = runs[f"runs/rows-{name}"]
        assert args[args.index("--preset") + 1] == "shapes-depth-paper"
    assert bench[0] == "bench" and bench[bench.index("--run") + 1] == "runs/rows-full"
    assert [bench[i + 1] for i, a in enumerate(bench) if a == "--ablation"] == [
        "no-graph=runs/rows-no-graph/method/pipeline",
        "no-order=runs/rows-no-order/method/pipeline",
        "no-order-loc=runs/rows-no-order-loc/method/pipeline",
        "no-order-weighted=runs/rows-no-order-weighted/method/pipeline",
        "paper=runs/rows-paper/method/pipeline",
        "paper-loc=runs/rows-paper-loc/method/pipeline",
        "paper-boxes=runs/rows-paper-boxes/method/pipeline",
    ]
    assert (tmp_path / "out" / "bench.tgz").is_file()
    missing = subprocess.run([*script, "--base", str(tmp_path / "nothing")], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "holds no Shapes base" in missing.stderr

#!/usr/bin/env bash
# Train the embedded Shapes model on a lent GPU: `sg2image train --preset shapes-gpu`, with
# the run's results coming back through the device tool's output folder (issue 12).
#
#   here, once:          bash scripts/device_wheels.sh     (fills .whl/: diffusers, pydantic)
#   device tool, first:  bash scripts/device_train.sh --smoke          carry [".whl"], ~1 min
#   then:                bash scripts/device_train.sh [--budget-scale F]   timeout_s 600
#   another preset:      bash scripts/device_train.sh --preset shapes-gpu-depth [-- KEY=VALUE ...]
#   (the depth table's rows: training/presets.py; e.g. -- conditioner.use_graph=false
#   --run runs/depth-no-graph must come before the --)
#   with --sd-step S, after training: S seconds of the method's step at real scale (SD-1.4
#   UNet, 256 px, bf16; benchmarks/sd_step.py -> sd_step.json); the training's time limit
#   shrinks by S + 60 s to leave room for it.
#
# --smoke runs every part for a few steps at the full batch sizes and prints the full run's
# projected training time; if it is over ~7 minutes, pass --budget-scale (7 / projected).
# On one H200 the projection overstated the measured run 3.7x (its few steps are mostly
# warm-up; benchmarks/results/gpu-h200-2026-12-04), so that scale is conservative.
# Output, in $OUT (or --out DIR): train.log (everything, unbuffered) and snapshot/part-NN,
# a tar.gz of the run folder in 15 MiB pieces, without optimizer checkpoints, refreshed
# every 60 s and at the end, so a run stopped by the time limit still returns what it has
# (finished base parts; the method's pipeline as of its last checkpoint). Unpack here with
#   cat snapshot/part-* | tar -xz -C runs/shapes-gpu
# The run folder itself (runs/shapes-gpu) stays on the machine while it is warm: running the
# script again resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0 SCALE=1 DEST="${OUT:-out/device}" LIMIT="" RUN="" SD_STEP=0 PRESET=shapes-gpu
EXTRA=()  # the preset's overrides, after --
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --budget-scale) SCALE="$2"; shift ;;
        --out) DEST="$2"; shift ;;
        --limit) LIMIT="$2"; shift ;;  # seconds the training may run (540; smoke 240)
        --run) RUN="$2"; shift ;;  # the run folder (runs/shapes-gpu[-smoke])
        --sd-step) SD_STEP="$2"; shift ;;  # seconds of the real-scale step after training
        --preset) PRESET="$2"; shift ;;  # shapes-gpu (default), shapes-gpu-depth[-f2]
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5

main() {
    if [ -d .whl ]; then  # the image's python3 has torch; the rest of our needs travel as wheels
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$PWD/src"
    else
        export PYTHONPATH="$PWD/src"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__,
    'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers',
    transformers.__version__, 'accelerate', accelerate.__version__)"

    ARGS=(train --preset "$PRESET" --budget-scale "$SCALE")
    if [ "$SMOKE" = 1 ]; then
        ARGS+=(--smoke) RUN="${RUN:-runs/$PRESET-smoke}" LIMIT="${LIMIT:-240}"
    fi
    RUN="${RUN:-runs/$PRESET}" LIMIT="${LIMIT:-$((540 - (SD_STEP > 0 ? SD_STEP + 60 : 0)))}"

    snapshot() {  # the run so far, as tar.gz pieces; the previous set is replaced whole
        [ -d "$RUN" ] || return 0
        local ex=(--exclude=./method/checkpoints --exclude=./shapes-base/unet_checkpoint.pt
                  --exclude=./shapes-base/parts --exclude='*.tmp' --exclude='*.old')
        if [ -f "$RUN/method/pipeline/model_index.json" ]; then  # the pipeline holds what counts
            ex+=(--exclude=./shapes-base/base --exclude=./method/layout_generator)
        fi
        rm -rf "$DEST/snapshot.new" && mkdir -p "$DEST/snapshot.new"
        tar -C "$RUN" -czf - "${ex[@]}" . 2>/dev/null | split -b 15M -d - "$DEST/snapshot.new/part-"
        rm -rf "$DEST/snapshot" && mv "$DEST/snapshot.new" "$DEST/snapshot"
    }
    # sleep's output goes nowhere: killing the loop leaves its sleep running, and a sleep that
    # held the pipe to tee kept the script from exiting for up to 60 s after the training
    ( while sleep 60 </dev/null >/dev/null 2>&1; do snapshot || true; done ) &
    SNAPSHOTS=$!
    trap 'kill $SNAPSHOTS 2>/dev/null || true' EXIT

    START=$(date +%s)
    set +e
    timeout --signal=INT --kill-after=30 "$LIMIT" python3 -m sg2image "${ARGS[@]}" -o "$RUN" \
        ${EXTRA[@]+"${EXTRA[@]}"}
    STATUS=$?
    set -e
    echo "training exited with status $STATUS after $(( $(date +%s) - START )) s"
    [ "$STATUS" = 124 ] && echo "stopped by the ${LIMIT} s limit: run the script again to resume"
    kill $SNAPSHOTS 2>/dev/null || true
    wait $SNAPSHOTS 2>/dev/null || true
    for f in timings.json projection.json shapes-base/report.json method/timings.json; do
        [ -f "$RUN/$f" ] && { echo "== $f"; cat "$RUN/$f"; }
    done
    snapshot
    if [ "$SD_STEP" -gt 0 ]; then
        timeout --signal=INT $((SD_STEP + 55)) python3 benchmarks/sd_step.py --seconds "$SD_STEP" \
            --batch 32 --out "$DEST/sd_step.json" || echo "sd_step exited with status $?"
    fi
    ls -la "$DEST" "$DEST/snapshot"
    return "$STATUS"
}

main 2>&1 | tee -a "$DEST/train.log"
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# The depth table's rows (issue 19: which part of the model carries depth order), trained
# side by side on one GPU from one carried Shapes depth base, then benchmarked there.
#
#   here:   sg2image train --preset shapes-depth -o runs/depth   (its shapes-base is the base)
#           bash scripts/device_wheels.sh                          (fills .whl/)
#           mkdir -p carry && cp -r runs/depth/shapes-base carry/depth-base   (parts/ and
#           unet_checkpoint.pt may be left out: the base is finished)
#           cp -r runs/depth/method/layout_generator carry/depth-layout
#   device: bash scripts/device_depth_rows.sh --base carry/depth-base --layout carry/depth-layout
#           (device tool: carry [".whl", "carry"])
#
# Rows, all with the preset's method on that base and the same budgets (FT fine-tuning steps
# of 256, bf16): "full" (--preset shapes-depth: depth-ordered layout map, object tokens),
# "no-graph" (conditioner.use_graph=false), "no-order" (layout_encoder.depth_order=false:
# only the graph conditioning tells front from back), two graph-only rows with instance
# slots binding each object token to its box and each triple token to its two boxes
# (layout_encoder.instance_slots, conditioner.object_slots, conditioner.triple_slots) and
# depth-rank object tokens (conditioner.object_depth): "no-order-weighted" (the loss on the
# depth pairs' overlap weighted x17, finetune.overlap_weight=16) and "no-order-loc" (the
# attention-localisation loss at weight 1 for the first quarter of the steps, then 0.1:
# finetune.localise_steps, the CPU recipe's schedule, whose row reaches occlusion 0.82 /
# 0.76 and a drawn order that follows the graph for 0.92 of the pairs), and "paper" (--preset
# shapes-depth-paper: no layout); and two tries at placement without a layout:
# "paper-boxes", whose object tokens also embed a box that a head on the graph encoder
# predicts (conditioner.object_boxes), and "paper-loc", the same with the position grid and
# the localisation loss (placement 0.79 on the CPU in 1,500 steps). The three layout rows share one
# layout model (layout.pretrained): --layout FOLDER, or else the full row's, trained first; so
# they differ only where their names say. The rows train at once: these small models leave an
# H200 mostly idle. A row cut by --limit is scored from its last checkpoint (rows.log says).
# Then `sg2image bench` on the GPU over the first N depth test graphs (predicted and given
# boxes, the plain split's six predicates as one more row).
# Output in $OUT: rows.log, bench.tgz (results/*.json, bench.md and its pictures) and
# pipelines.tgz-NN (the rows' pipelines in float16; the vae, text encoder and layout model
# only in "full": the others' are the same files).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="" LAYOUT="" FT=800 N=300 LIMIT=380 SMOKE="" DEVICE=cuda DEST="${OUT:-out/device}"
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE="$2"; shift ;;  # a finished Shapes depth base folder (shapes-base)
        --layout) LAYOUT="$2"; shift ;;  # a trained layout_generator folder for the layout rows
        --finetune-steps) FT="$2"; shift ;;
        --n) N="$2"; shift ;;  # test graphs of the benchmark
        --limit) LIMIT="$2"; shift ;;  # seconds the training may run, all rows together
        --smoke) SMOKE="--smoke" ;;  # a base trained with `train --preset shapes-depth --smoke`
        --out) DEST="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;  # where the benchmark samples (cpu: a dry run here)
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[ -f "$BASE/config.json" ] || { echo "--base: $BASE holds no Shapes base" >&2; exit 2; }
mkdir -p "$DEST" && DEST="$(cd "$DEST" && pwd)"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
PY="${PYTHON:-python3}"  # a dry run here: PYTHON=.venv/bin/python

main() {
    if [ -d .whl ] && ! $PY -c "import diffusers" 2>/dev/null; then  # the device's image
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$PWD/src"
    else
        export PYTHONPATH="$PWD/src"
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    local gpu=(mixed_precision=bf16 log_every=50 checkpoint_every=200 keep_checkpoints=1
               export_every_checkpoint=true gca.batch_size=256
               finetune.max_steps="$FT" finetune.batch_size=256 finetune.lr=1e-3
               finetune.graph_lr=2e-3 finetune.lr_warmup_steps=200)
    local layouts='stages=["layout", "gca", "finetune"]'
    local shared="$PWD/runs/rows-full/method/layout_generator"
    local start=$(date +%s)
    row() {  # name preset overrides...: one row's run, its output in runs/rows-NAME.log
        local name=$1 preset=$2; shift 2
        rm -rf "runs/rows-$name" && mkdir -p "runs/rows-$name"
        cp -r "$BASE" "runs/rows-$name/shapes-base"
        local status=0
        # two CPU threads a row: eight rows and their loaders share the machine's 16 cores
        OMP_NUM_THREADS=2 timeout --signal=INT --kill-after=20 $((LIMIT - ($(date +%s) - start))) \
            $PY -m sg2image train --preset "$preset" $SMOKE -o "runs/rows-$name" "${gpu[@]}" "$@" \
            > "runs/rows-$name.log" 2>&1 || status=$?
        echo "row $name exited with status $status after $(( $(date +%s) - start )) s"
    }
    if [ -n "$LAYOUT" ]; then  # a carried layout model: all rows start at once
        shared="$(cd "$LAYOUT" && pwd)"
        row full shapes-depth "$layouts" layout.pretrained="$shared" num_workers=3 &
    else  # the full row trains it first
        row full shapes-depth "$layouts" num_workers=12 &
    fi
    row paper shapes-depth-paper num_workers=3 &
    row paper-loc shapes-depth-paper num_workers=2 conditioner.object_tokens=true \
        conditioner.object_boxes=true position_grid=true finetune.localise_weight=1 &
    row paper-boxes shapes-depth-paper num_workers=2 conditioner.object_tokens=true \
        conditioner.object_boxes=true &
    while [ ! -f "$shared/config.json" ]; do
        sleep 5
        [ $(( $(date +%s) - start )) -lt "$LIMIT" ] || { echo "no layout model in time"; break; }
    done
    row no-graph shapes-depth "$layouts" layout.pretrained="$shared" num_workers=3 \
        conditioner.use_graph=false &
    row no-order shapes-depth "$layouts" layout.pretrained="$shared" num_workers=3 \
        layout_encoder.depth_order=false &
    row no-order-loc shapes-depth "$layouts" layout.pretrained="$shared" num_workers=3 \
        layout_encoder.depth_order=false layout_encoder.instance_slots=5 \
        conditioner.object_slots=true conditioner.triple_slots=true \
        conditioner.object_depth=true finetune.localise_weight=1 \
        finetune.localise_steps=$((FT / 4)) finetune.localise_weight_after=0.1 &
    row no-order-weighted shapes-depth "$layouts" layout.pretrained="$shared" num_workers=3 \
        layout_encoder.depth_order=false layout_encoder.instance_slots=5 \
        conditioner.object_slots=true conditioner.triple_slots=true \
        conditioner.object_depth=true finetune.overlap_weight=16 &
    wait
    local others=(no-graph no-order no-order-loc no-order-weighted paper paper-loc paper-boxes)
    for name in full "${others[@]}"; do
        echo "== $name"; tail -c 1500 "runs/rows-$name.log" | tr '\r' '\n' | tail -n 8
        cat "runs/rows-$name/method/timings.json" 2>/dev/null || true
    done
    local ablations=()
    for name in "${others[@]}"; do
        ablations+=(--ablation "$name=runs/rows-$name/method/pipeline")
    done
    local work
    work=$(mktemp -d)
    mkdir -p "$work/bench" "$work/pipelines"
    $PY -m sg2image bench --run runs/rows-full "${ablations[@]}" --n "$N" --diversity-n 50 \
        --no-sweep --batch-size 100 --device "$DEVICE" --results "$work/bench/results" \
        --docs "$work/bench/bench.md" || echo "bench exited with status $?"
    tar -C "$work/bench" -czf "$DEST/bench.tgz" .
    WORK="$work" $PY - <<'EOF'
import os
from pathlib import Path
from sg2image.training.presets import ship
for src in Path("runs").glob("rows-*/method/pipeline"):
    ship(src, Path(os.environ["WORK"]) / "pipelines" / src.parts[1].removeprefix("rows-"))
EOF
    local same=()  # the parts every row shares: kept in "full" only
    for name in "${others[@]}"; do
        for part in vae text_encoder layout_generator; do same+=(--exclude="$name/$part"); done
    done
    tar -C "$work/pipelines" -czf - "${same[@]}" . | split -b 15M -d - "$DEST/pipelines.tgz-"
    ls -la "$DEST"
}

main 2>&1 | tee "$DEST/rows.log"

#!/usr/bin/env bash
# The GPU session's benchmark script (run on the lent machine as `bash bench/device_run.sh`):
#   1. pipeline benchmark on the full demo (also builds the dataset the next steps use);
#   2. training throughput: one whole epoch of the no-FFN Graph Transformer (bf16 and fp32), then
#      every model over a fixed number of steps (epoch time projected) plus the reference setup;
#   3. quality on the full demo: the no-FFN Graph Transformer trained with early stopping.
# Each step writes its JSON into $OUT as it finishes (logs go to $OUT/run.log), so a timeout keeps
# what was done. Runs without an install: PYTHONPATH=. python3 -m engine (no textual there).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.
OUT=${OUT:-bench/results/device}
SIZE=${SIZE:-full}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-2048}
EPOCHS=${EPOCHS:-6}
WS=${WS:-/tmp/sessrec-ws}
mkdir -p "$OUT"
LOG="$OUT/run.log"
S=(python3 -m engine --workspace "$WS")
t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 ))s)" >> "$LOG"; }
step env
(nvidia-smi -L; nproc; python3 -c "import torch, torch_geometric as g; print(torch.__version__, g.__version__)") \
  >> "$LOG" 2>&1
step pipeline
timeout 120 "${S[@]}" bench pipeline --size "$SIZE" --out "$OUT/pipeline.json" >> "$LOG" 2>&1
DS=bench-demo-$SIZE
step epoch-bf16
timeout 100 "${S[@]}" bench train --dataset "$DS" --device "$DEVICE" --models graph_transformer --full-epoch \
  --batch-size "$BATCH" --no-reference --out "$OUT/train_epoch.json" >> "$LOG" 2>&1
step epoch-fp32
timeout 100 "${S[@]}" bench train --dataset "$DS" --device "$DEVICE" --models graph_transformer --full-epoch \
  --batch-size "$BATCH" --no-reference --no-bf16 --out "$OUT/train_epoch_fp32.json" >> "$LOG" 2>&1
step models
timeout 150 "${S[@]}" bench train --dataset "$DS" --device "$DEVICE" --batch-size "$BATCH" --steps 25 \
  --out "$OUT/train_models.json" >> "$LOG" 2>&1
step quality
# progress and the final result on stdout, logs into run.log; the run's events (kept even if the
# time limit cuts the run) are copied from its run folder
timeout 240 "${S[@]}" --events jsonl train --dataset "$DS" --model graph_transformer --device "$DEVICE" \
  --batch-size "$BATCH" --epochs "$EPOCHS" --patience 2 --lr 2e-3 --run-id gt-full \
  > "$OUT/quality_gt_result.jsonl" 2>> "$LOG"
cp "$WS/runs/gt-full/events.jsonl" "$OUT/quality_gt_events.jsonl" 2>> "$LOG"
step done

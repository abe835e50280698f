#!/usr/bin/env bash
# The GPU session's benchmark script (run on the lent machine as `bash bench/device_run.sh`):
#   1. pipeline benchmark on the full demo (also builds the dataset the next steps use);
#   2. training throughput: one whole epoch of the no-FFN Graph Transformer, then every model over
#      a fixed number of steps (epoch time projected) plus the reference configuration;
#   3. quality on the full demo: the no-FFN Graph Transformer trained with early stopping.
# Each step writes its JSON/log into $OUT as it finishes, so a timeout keeps what was done.
# Runs without an install: PYTHONPATH=. python3 -m engine (the device image has no textual).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.
OUT=${OUT:-bench/results/device}
SIZE=${SIZE:-full}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-2048}
EPOCHS=${EPOCHS:-8}
WS=${WS:-/tmp/sessrec-ws}
mkdir -p "$OUT"
S=(python3 -m engine --workspace "$WS")
(nvidia-smi -L; python3 -c "import torch, torch_geometric as g; print(torch.__version__, g.__version__)") \
  > "$OUT/env.txt" 2>&1
t0=$(date +%s)
timeout 120 "${S[@]}" bench pipeline --size "$SIZE" --out "$OUT/pipeline.json" > "$OUT/pipeline.log" 2>&1
echo "pipeline done $(( $(date +%s) - t0 ))s" >> "$OUT/env.txt"
DS=bench-demo-$SIZE
timeout 120 "${S[@]}" bench train --dataset "$DS" --device "$DEVICE" --models graph_transformer --full-epoch \
  --batch-size "$BATCH" --no-reference --out "$OUT/train_epoch.json" > "$OUT/train_epoch.log" 2>&1
echo "epoch done $(( $(date +%s) - t0 ))s" >> "$OUT/env.txt"
timeout 150 "${S[@]}" bench train --dataset "$DS" --device "$DEVICE" --batch-size "$BATCH" --steps 25 \
  --out "$OUT/train_models.json" > "$OUT/train_models.log" 2>&1
echo "models done $(( $(date +%s) - t0 ))s" >> "$OUT/env.txt"
timeout 240 "${S[@]}" train --dataset "$DS" --model graph_transformer --device "$DEVICE" --batch-size "$BATCH" \
  --epochs "$EPOCHS" --patience 2 --lr 2e-3 --run-id gt-full > "$OUT/quality_gt.log" 2>&1
cp "$WS/runs/gt-full/events.jsonl" "$OUT/quality_gt_events.jsonl" 2>/dev/null
echo "quality done $(( $(date +%s) - t0 ))s" >> "$OUT/env.txt"

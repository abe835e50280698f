#!/usr/bin/env bash
# The GPU session's accuracy script for the field's standard benchmarks (issue 9), run on the lent
# machine as `bash bench/device_srgnn.sh`. The device has no ../shared: copy the benchmark folders
# into the checkout first and carry them (an ignored path):
#     mkdir -p bench/data && cp -r ../shared/data/srgnn bench/data/      # here, then
#     run(command="bash bench/device_srgnn.sh", carry=["bench/data"], timeout_s=540)
# Steps (each writes its JSON into $OUT as it finishes; logs in $OUT/run.log):
#   1. baselines (V-STAN, STAN, V-SKNN, SR) on diginetica and yoochoose1_64: test once, published
#      numbers beside them;
#   2. the Graph Transformer (hidden 256, full softmax, bf16), epoch chosen on validation, one seed,
#      and its hybrid with the best baseline.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.
OUT=${OUT:-bench/results/device}
SHARED=${SHARED:-bench/data}
WS=${WS:-/tmp/sessrec-ws}
EPOCHS=${EPOCHS:-20}
mkdir -p "$OUT"
LOG="$OUT/run.log"
S=(python3 -m engine --workspace "$WS")
t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 ))s)" >> "$LOG"; }
[ -d "$SHARED/srgnn" ] || { echo "no $SHARED/srgnn: copy ../shared/data/srgnn there and carry it" | tee -a "$LOG"; exit 2; }
step env
(nvidia-smi -L; python3 -c "import torch, torch_geometric as g; print(torch.__version__, g.__version__)") >> "$LOG" 2>&1
for ds in diginetica yoochoose1_64; do
  step "baselines $ds"
  timeout 200 "${S[@]}" -q bench quality --shared "$SHARED" --datasets "$ds" --models vstan,stan,sknn,sr \
    --seeds 0 --device cuda --no-hybrid --out "$OUT/quality_baselines_$ds.json" >> "$LOG" 2>&1
done
for ds in diginetica yoochoose1_64; do
  step "gnn $ds"
  timeout 240 "${S[@]}" -q bench quality --shared "$SHARED" --datasets "$ds" \
    --models graph_transformer,vstan --seeds 0 --device cuda --epochs "$EPOCHS" --batch-size 1024 \
    --param hidden=256 --out "$OUT/quality_gnn_$ds.json" >> "$LOG" 2>&1
done
step done

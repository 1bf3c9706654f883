#!/usr/bin/env bash
# Reproduce the shipped default model, plate_refocus/models/default.keras (+ default.json).
#
#   benchmarks/train_default_model.sh [WORKDIR] [MINUTES]
#
# 1. simulates the training plate (seed 1; the evaluation plate uses another seed),
# 2. trains the lean residual U-Net on it with the project's own `train` command,
#    writing the best checkpoint (by validation loss) after every epoch that improves it,
# 3. copies the best checkpoint into the package.
# The shipped model was made with MINUTES=75 on a shared 2-core AMD EPYC (no GPU); its
# metadata records the exact command line, steps, time and hardware.
set -euo pipefail
WORKDIR=${1:-/tmp/plate_refocus_default}
MINUTES=${2:-75}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORKDIR"
PLATE="$WORKDIR/train_seed1.zarr"
if [ ! -d "$PLATE" ]; then
  plate-refocus simulate "$PLATE" --rows 4 --columns 6 --fields 4 --size 256 \
    --depths 0,2,4,6,8,10,15,20,25,30 --seed 1 --no-progress
fi
# Adam starts at 1e-3 here rather than the report's 1e-4: on a CPU budget of about an hour it
# reached the same validation loss in a fraction of the steps (scratch comparison, 8 min each:
# +3.4 dB vs +2.0 dB mean gain at 10-30 um); reduce-on-plateau halves it from there.
plate-refocus train "$PLATE" --out "$WORKDIR/default.keras" --name plate-refocus-default-v1 \
  --depth 4 --filters 8 --full-resolution patch \
  --patch 128 --batch-size 8 --steps-per-epoch 200 --epochs 1000 --max-time "$MINUTES" \
  --learning-rate 1e-3 --patience 4 --loss mse --weighting relative \
  --validation-fraction 0.17 --validation-patches 120 --seed 1
cp "$WORKDIR/default.keras" "$WORKDIR/default.json" "$HERE/plate_refocus/models/"
echo "copied the best checkpoint to $HERE/plate_refocus/models/"

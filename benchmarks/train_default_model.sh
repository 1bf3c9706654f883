#!/usr/bin/env bash
# Reproduce plate-refocus-default-v1, the model shipped before the network issue (trained on the
# simulator's own cells only). The shipped model is now benchmarks/train_randomised_model.py's.
#
#   benchmarks/train_default_model.sh [WORKDIR] [MINUTES]
#
# 1. simulates the training plate (seed 1; the evaluation plate uses another seed),
# 2. trains the lean residual U-Net on it with the project's own `train` command,
#    writing the best checkpoint (by validation loss) after every epoch that improves it,
# 3. re-saves the best checkpoint without optimizer state as WORKDIR/default-v1.keras.
# The shipped model is the best checkpoint (epoch 99, 19,800 steps of 8 patches of 128x128,
# 55 minutes) of a run started with MINUTES=72 and stopped by hand after 58 minutes, once the
# learning rate had decayed to 1.6e-5 and the validation loss had flattened; it ran on a 2-core
# AMD EPYC (no GPU) shared with other jobs (load 10-20). Its JSON records the command line,
# steps, time and hardware. Stopping by time is not step-exact: for an exact replay pass
# --epochs 99 instead of --max-time (training is deterministic for a seed on one machine).
# The best checkpoint is re-saved without optimizer state (2 MB) by save_model.
set -euo pipefail
WORKDIR=${1:-/tmp/plate_refocus_default}
MINUTES=${2:-75}
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
python -c "import sys; from plate_refocus.unet import load_model, save_model; save_model(load_model(sys.argv[1]), sys.argv[2])" \
  "$WORKDIR/default.keras" "$WORKDIR/default-v1.keras"
echo "wrote $WORKDIR/default-v1.keras (pass it as --model; the package ships the randomised model)"

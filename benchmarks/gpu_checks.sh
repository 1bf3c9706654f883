#!/usr/bin/env bash
# The checks run on a lent GPU machine (one H100/H200, CuPy and JAX installed, no TensorFlow,
# no network): the CuPy path of the PSF tests, bench_psf on the GPU beside the same machine's
# CPU, and the shipped U-Net on the GPU through Keras' JAX backend (the TensorFlow GPU wheel is
# too large to carry there). Keras and its two missing dependencies travel as wheels in .whl/:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl keras==3.15.1 namex optree
# Usage (on that machine, repository root):  bash benchmarks/gpu_checks.sh [OUTDIR] [SECTIONS]
# SECTIONS: which of the numbered checks below to run (default "1 2 3 4"). In check 4,
# GPU_RUN_WORKERS sets the GPU run's local cluster (default "--workers 16") and CPU_RUN=0
# skips the CPU run and the comparison.
set -uo pipefail
out=${1:-/tmp/gpu_checks}
sections=" ${2:-1 2 3 4} "
want() { [[ $sections == *" $1 "* ]]; }
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import cupy, scipy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)" | tee -a "$out/gpu.txt"

# 1. every PSF test with CuPy visible: backend="auto" now means the GPU, and the explicit
#    CuPy-vs-NumPy agreement test runs instead of skipping (conftest needs Dask: not loaded)
want 1 && timeout 200 python3 -m pytest --noconftest -p no:cacheprovider -q -rs tests/test_psf.py \
    -k "not dask_distributed" 2>&1 | tee "$out/test_psf_gpu.txt"
want 1 && timeout 200 python3 -m pytest --noconftest -p no:cacheprovider -q -rs tests/test_focus.py \
    tests/test_deconvolve.py -k cupy 2>&1 | tee "$out/test_focus_deconvolve_gpu.txt"

# 2. PSF throughput: GPU, then this machine's CPU with one FFT thread (as a Dask task)
want 2 && timeout 120 python3 benchmarks/bench_psf.py --backend cupy --fields 72 --repeats 5 2>&1 | tee "$out/bench_psf.txt"
want 2 && timeout 120 python3 benchmarks/bench_psf.py --backend numpy --fields 18 --repeats 5 2>&1 | tee -a "$out/bench_psf.txt"

# 3. the shipped U-Net on the GPU (Keras on JAX)
if want 3 && KERAS_BACKEND=jax python3 -c "import keras" 2>/dev/null; then
    for batch in 4 32; do
        KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150 \
            python3 benchmarks/bench_unet.py --batch $batch --repeats 5 2>&1 | grep -v "^WARNING" | tee -a "$out/bench_unet_gpu.txt"
    done
fi

# 4. the whole pipeline on the GPU (U-Net on Keras/JAX, PSF FFTs on CuPy: `run --gpu`) and the
#    same plate on this machine's CPU cores (JAX on the CPU, NumPy FFTs); then how far apart they are
if want 4 && KERAS_BACKEND=jax python3 -c "import keras, distributed, zarr, xarray" 2>/dev/null; then
    cli="python3 -m plate_refocus.cli"
    plate=/tmp/gpu_plate.zarr
    rm -rf $plate /tmp/run_gpu.zarr /tmp/run_cpu.zarr
    $cli simulate $plate --rows 8 --columns 12 --fields 2 --size 512 --depths 0,4,10,20,30 \
        --channels nuclei --workers 16 --no-progress 2>&1 | tail -2
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 200 \
        $cli run $plate /tmp/run_gpu.zarr --gpu ${GPU_RUN_WORKERS:---workers 16} 2>&1 | grep -E "^(done|dashboard)|Error" | tee "$out/pipeline.txt"
    [[ ${CPU_RUN:-1} == 1 ]] && KERAS_BACKEND=jax JAX_PLATFORMS=cpu PLATE_REFOCUS_NO_GPU=1 timeout 200 \
        $cli run $plate /tmp/run_cpu.zarr --workers 16 2>&1 | grep -E "^(done|dashboard)|Error" | tee -a "$out/pipeline.txt"
    [[ ${CPU_RUN:-1} == 1 ]] && python3 - <<'PY' 2>&1 | tee -a "$out/pipeline.txt"
import numpy as np
import xarray as xr
gpu, cpu = xr.open_zarr("/tmp/run_gpu.zarr"), xr.open_zarr("/tmp/run_cpu.zarr")
print("FFT backends asked for:", gpu.attrs["fft_backend"], "(gpu run) vs", cpu.attrs["fft_backend"], "(cpu run)")
r_g, r_c = gpu.refocused.values, cpu.refocused.values
print(f"refocused: max |gpu - cpu| / max |cpu| = {np.abs(r_g - r_c).max() / np.abs(r_c).max():.2e}")
o_g, o_c = gpu.otf_radial.values, cpu.otf_radial.values
print(f"otf_radial: max |gpu - cpu| = {np.nanmax(np.abs(o_g - o_c)):.2e}")
print(f"defocus_um: max |gpu - cpu| = {np.nanmax(np.abs(gpu.defocus_um.values - cpu.defocus_um.values)):.3f} um")
print("defocus_um (gpu, well A01):", np.round(gpu.defocus_um.values[0], 2), "true |z|:", gpu.z_um.values)
PY
fi

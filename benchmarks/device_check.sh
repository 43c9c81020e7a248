#!/usr/bin/env bash
# The accelerator checks, as one script of under 8 minutes of device time.
#
#   bash benchmarks/device_check.sh [OUT_DIR]      # from the repository root, on the GPU/TPU machine
#
# 1. UNCSM's metric network over every test pair of the NUS-WIDE-size split (33,955 test
#    items: 2.3e9 pairs both ways) through the streamed evaluation, against the float32
#    matmul peak of the same device (benchmarks/metric_eval.py).
# 2. The precision check: every product that a claim rests on is pinned to float32
#    (tests/test_precision.py, run on the device's backend).
# 3. The benchmark suite with its peers on the device (benchmarks/suite.py), at sizes that
#    fit the budget; POT's exact solver is CPU code and is left out (--flags below).
#
# Each part has its own time limit; the reports land in OUT_DIR (default $OUT, else
# reports/device). Python packages that the machine lacks (ott-jax, ml-collections, pot,
# faiss...) travel as wheels in .whl/ (see the device tool's notes); cmjax itself runs
# from this checkout (PYTHONPATH), not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-reports/device}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"

status=0
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local code=${PIPESTATUS[0]}
  echo "== $name: exit $code in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
  [ "$code" = 0 ] || status=1
}

part metric_eval 150 python3 -m benchmarks.metric_eval --items=33955 --block=1024 \
    --matmul_size=8192 --repeats=1 --output="$out/benchmark_metric_eval.md"
part precision 60 python3 -m pytest -q -p no:cacheprovider tests/test_precision.py
part suite 240 python3 -m benchmarks.suite --benchmarks=hamming,evaluation,gcn_text,uncsm_step \
    --output="$out/benchmark_suite.md"
exit $status

#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, with .whl/ carried (see prepare.sh):
#
#   bash benchmarks/gpu/run.sh STAGE
#
# STAGE (each fits one 10-minute command; logs and tables go under $OUT, or
# benchmarks/results/gpu-<stage> when $OUT is unset):
#   smoke   the environment, the transfer guard and the GPU-path tests, a --quick benchmark
#   tests   the whole test suite on the cupy backend (-k cupy: every backend-parametrised test,
#           float64 and float32 where the test draws both), then `npattn check --backend cupy`
#           for every op and block in float64 and in float32
#   blocks  the benchmark suite's blocks (CBAM family at the four block shapes, NonLocal at the
#           quadratic shapes), float32 and float64, beside PyTorch CUDA
#   ops     the benchmark suite's op rows, float32 and float64, beside PyTorch CUDA
set -uo pipefail
stage=${1:?usage: bash benchmarks/gpu/run.sh smoke|tests|blocks|ops}
out=${OUT:-benchmarks/results/gpu-$stage}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci

# npattn from this checkout; its array-API dependencies from the carried wheels.  The image's
# cupy-cuda13x stands in for the `gpu` extra (cupy-cuda12x), which cannot be fetched there.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

status=0
step() {  # step NAME COMMAND...: run, keep the log, remember a failure
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}

case $stage in
smoke)
    step env bash -c 'nvidia-smi -L; python3 -c "
import sys, numpy, cupy, torch, array_api_compat, array_api_strict
print(sys.version.split()[0], \"numpy\", numpy.__version__, \"cupy\", cupy.__version__,
      \"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(),
      \"array_api_compat\", array_api_compat.__version__, \"array_api_strict\", array_api_strict.__version__)
from npattn.backend import cupy_available; print(cupy_available())"'
    step guard python3 -m pytest -q -rs -p no:cacheprovider tests/test_device_guard.py tests/test_gpu_path.py
    step bench-quick python3 benchmarks/suite.py --backend cupy --quick --threads 16 --out "$out"
    ;;
tests)
    step pytest python3 -m pytest -q -rs -p no:cacheprovider -n 8 -k cupy tests/
    step check64 python3 -m npattn check --backend cupy --dtype float64
    step check32 python3 -m npattn check --backend cupy --dtype float32
    ;;
blocks)
    step bench-blocks python3 benchmarks/suite.py --backend cupy --groups block quadratic \
        --threads 16 --out "$out"
    ;;
ops)
    step bench-ops python3 benchmarks/suite.py --backend cupy --groups op --threads 16 --out "$out"
    ;;
*)
    echo "unknown stage $stage: smoke, tests, blocks or ops" >&2
    exit 2
    ;;
esac
echo "run.sh $stage: $([ $status -eq 0 ] && echo all passed || echo SOME STEP FAILED), logs in $out"
exit $status

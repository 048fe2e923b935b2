#!/usr/bin/env bash
# Run HERE (a machine with PyPI), from the repository root, before using the GPU machine.
#
# The GPU machine reaches no package registry.  Its image has CuPy (cupy-cuda13x), PyTorch,
# NumPy, SciPy, pytest, Hypothesis and pytest-xdist, but not npattn's two array-API
# dependencies: their wheels (pure Python, about 160 KiB) travel with the working tree in the
# folder .whl/, which .gitignore ignores, so the device tool's `carry` must name it.
# benchmarks/gpu/run.sh installs them there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
git check-ignore -q .whl || { echo 'prepare.sh: .whl/ must be ignored (.gitignore)' >&2; exit 1; }
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl \
    "array-api-compat==1.16.0" "array-api-strict==2.6.1"
ls -l .whl

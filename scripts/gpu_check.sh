#!/usr/bin/env bash
# Build aoti_cy against this machine's torch, compile the test models for CUDA
# and run the whole test suite, GPU tests included, logging to ${OUT:-.}/gpu_check.log.
# Meant for a GPU machine with torch, Cython, setuptools and pytest installed.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu_check.log"
# Model .so files must link libstdc++ dynamically: a compiler that links it
# statically produces models that crash in their own container-create.
export CXX=/usr/bin/g++ CC=/usr/bin/gcc
export AOTI_CY_CACHE="${AOTI_CY_CACHE:-/tmp/aoti_cy_cache}"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, Cython; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cython', Cython.__version__)"
  python3 setup.py build_ext --inplace -q 2>&1 | grep -Ev "^(copying|running)" | tail -20
  PYTHONPATH="$PWD" python3 -m pytest -q -rs -p no:cacheprovider tests "$@"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"

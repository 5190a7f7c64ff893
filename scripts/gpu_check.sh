#!/usr/bin/env bash
# On a GPU machine: build aoti_cy against its torch, compile the test models
# (CPU and CUDA), run the whole test suite, GPU tests included, and the CUDA
# benchmarks. Logs to ${OUT:-.}/gpu_check.log, benchmark JSON beside it.
# Arguments replace the test selection (default: tests); with AOTI_CY_NO_BENCH=1
# the benchmarks are skipped.
# Needs torch, Cython, setuptools and pytest installed; downloads nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
log="$out/gpu_check.log"
# Model .so files must link libstdc++ dynamically: a compiler that links it
# statically produces models that crash in their own container-create.
export CXX=/usr/bin/g++ CC=/usr/bin/gcc
export AOTI_CY_CACHE="${AOTI_CY_CACHE:-/tmp/aoti_cy_cache}"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, Cython; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cython', Cython.__version__)"
  python3 setup.py build_ext --inplace -q -j "$(nproc)" 2>&1 | grep -Ev "^(copying|running|creating|/usr/bin/g)" | tail -20
  PYTHONPATH="$PWD" python3 -m pytest -q -rs -p no:cacheprovider "${@:-tests}"
  status=$?
  if [ -z "${AOTI_CY_NO_BENCH:-}" ]; then
    PYTHONPATH="$PWD" python3 benchmarks/bench_run.py --device cuda \
        --cuda-graphs --models add_one,mlp,two_kernels --calls 2000 --repeats 9 \
        --json "$out/bench-cuda.json" 2>&1 | grep -v Warning
  fi
  exit $status
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# Run aoti_cy's whole test suite on torch 2.14.1, in a virtual environment of
# its own (.venv-torch-2.14 in the repository root, made on first use).
# Not run in CI: torch 2.14's wheel pulls ~3 GB of CUDA libraries.
#
# The tree is copied (tracked and untracked-but-not-ignored files) into the
# venv and built there, so this build never overwrites the in-place build of
# the main environment (both are cpython-311 .so files). Models are compiled
# by torch 2.14 into their own cache (default .venv-torch-2.14/model-cache;
# set AOTI_CY_CACHE to choose), since a model is tied to the torch that built it.
#
# Arguments replace the test selection (default: tests). The log goes to
# ${LOG:-.venv-torch-2.14/test_torch_2_14.log}.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="$root/.venv-torch-2.14"
python="$venv/bin/python"
# Pinned: the versions this script was verified with.
packages=(torch==2.14.1 "cython>=3.0" numpy "setuptools>=64" pytest "hypothesis>=6"
          transformers==5.24.0)

if ! "$python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.14.1')" 2>/dev/null; then
  echo "making $venv (torch 2.14.1 and its CUDA libraries: a few GB)"
  python3 -m venv "$venv" || exit 1
  "$venv/bin/pip" install -q "${packages[@]}" || exit 1
fi
# transformers must not have replaced the pinned torch.
"$python" -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(v.split('+')[0] != '2.14.1')" \
  || { echo "the venv's torch is not 2.14.1"; exit 1; }

# Model .so files must link libstdc++ dynamically (see scripts/gpu_check.sh).
export CXX=/usr/bin/g++ CC=/usr/bin/gcc
export AOTI_CY_CACHE="${AOTI_CY_CACHE:-$venv/model-cache}"
# A private temporary folder: the tests that check aoti_cy leaves no
# /tmp/aoti_cy-* folder behind must not see other processes' folders.
export TMPDIR="$venv/tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR" || exit 1
src="$venv/aoti_cy-src"
log="${LOG:-$venv/test_torch_2_14.log}"
rm -rf "$src" && mkdir -p "$src" || exit 1
git ls-files -z --cached --others --exclude-standard \
  | (cd "$root" && xargs -0 cp --parents -t "$src" 2>/dev/null)
cd "$src" || exit 1
{
  date -u
  "$python" -c "import torch, Cython, transformers; print('torch', torch.__version__, 'cython', Cython.__version__, 'transformers', transformers.__version__)"
  "$python" setup.py build_ext --inplace -q 2>&1 | grep -Ev "^(copying|running|creating|/usr/bin/g)" | tail -20
  PYTHONPATH="$src" "$python" -c "import aoti_cy; print('aoti_cy from', aoti_cy.__file__, 'built for', aoti_cy.BUILT_FOR_TORCH)" || exit 1
  PYTHONPATH="$src" "$python" -m pytest -q -rs -p no:cacheprovider "${@:-tests}"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# Run aoti_cy's test suite on one torch release, in a virtual environment of
# its own:
#
#   scripts/test_torch.sh VERSION [PYTEST ARGS...]
#   scripts/test_torch.sh 2.14.1                          # the whole suite
#   scripts/test_torch.sh 2.14.1 tests/test_weights.py    # a selection
#
# VERSION is a torch release (X.Y.Z, optionally +local, e.g. 2.13.0+cpu).
# The venv lives in $AOTI_CY_TORCH_VENVS/torch-VERSION (default
# ${XDG_CACHE_HOME:-~/.cache}/aoti_cy-torch-venvs), is made on first use with
# that torch pinned (and transformers pinned, as the suite's real models
# need), and is checked on every use: a venv whose torch is another release
# is refused, never silently reused. pip's own settings (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, a pip.conf) choose where the wheels come from; PYTHON
# chooses the interpreter the venv is made from (default python3).
#
# The tree is copied (tracked and untracked-but-not-ignored files) into the
# venv and built there, so this build never overwrites the in-place build of
# another environment (the extension files of one Python version have the
# same names for every torch). Models are compiled by that torch into the
# venv's own cache (default VENV/model-cache; set AOTI_CY_CACHE to choose),
# since a model is tied to the torch that built it. Tests that need entry
# points the release's models lack skip, naming them (requires_symbol in
# tests/conftest.py).
#
# Arguments after VERSION replace the test selection (default: tests). The
# log goes to ${LOG:-VENV/test_torch.log}. Exit status: pytest's, or 1 when
# the venv or the build could not be made, 2 for a usage error.
set -uo pipefail

usage() { echo "usage: $0 VERSION [PYTEST ARGS...]   (e.g. $0 2.14.1)" >&2; exit 2; }
[ $# -ge 1 ] || usage
version="$1"; shift
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(\+[A-Za-z0-9.]+)?$ ]] || {
  echo "not a torch release: '$version' (expected X.Y.Z or X.Y.Z+local)" >&2; usage; }

cd "$(dirname "$0")/.." || exit 1
root="$PWD"
venvs="${AOTI_CY_TORCH_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/aoti_cy-torch-venvs}"
venv="$venvs/torch-$version"
python="$venv/bin/python"
# Pinned: torch as asked, transformers as the suite's real models were checked with.
packages=("torch==$version" "cython>=3.0" numpy "setuptools>=64" pytest "hypothesis>=6"
          transformers==5.24.0)
# The venv's torch, compared with VERSION (the local part only when VERSION has one).
check_torch="import sys, torch; v = torch.__version__; want = sys.argv[1]
print('torch', v)
sys.exit((v if '+' in want else v.split('+')[0]) != want)"

if [ ! -x "$python" ]; then
  echo "making $venv (torch $version; with its CUDA libraries, a few GB)"
  mkdir -p "$venvs" && "${PYTHON:-python3}" -m venv "$venv" || exit 1
  "$venv/bin/pip" install -q "${packages[@]}" || { rm -rf "$venv"; exit 1; }
fi
# transformers (or anything else) must not have replaced the pinned torch.
"$python" -c "$check_torch" "$version" \
  || { echo "the torch in $venv is not $version; remove that folder to remake it" >&2; exit 1; }

# Model .so files must link libstdc++ dynamically (see scripts/gpu_check.sh).
export CXX=/usr/bin/g++ CC=/usr/bin/gcc
export AOTI_CY_CACHE="${AOTI_CY_CACHE:-$venv/model-cache}"
# A private temporary folder: the tests that check aoti_cy leaves no
# /tmp/aoti_cy-* folder behind must not see other processes' folders.
export TMPDIR="$venv/tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR" || exit 1
src="$venv/aoti_cy-src"
log="${LOG:-$venv/test_torch.log}"
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

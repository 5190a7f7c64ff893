#!/usr/bin/env bash
# Build aoti_cy's own C/C++ and Cython code with AddressSanitizer and
# UndefinedBehaviorSanitizer and run the input matrix, the fuzzers and the
# stress tests (and the error, constants and proxy-executor tests) under it.
#
#   scripts/sanitize.sh                      # the default test selection
#   scripts/sanitize.sh tests/test_inputs.py # test paths replace the selection
#   scripts/sanitize.sh -x                   # options are passed to pytest
#
# Works on a copy of the tree (AOTI_CY_SANITIZE_DIR, default
# ${TMPDIR:-/tmp}/aoti_cy-sanitize): the instrumented extensions are built
# in place there, so the normal build of the tree this script lives in is
# never replaced. The copy is refreshed on each run; the extensions are
# rebuilt when a compiled source (csrc/, .pyx, .pxd, setup.py) changed.
# Python (PYTHON, default python3) needs torch, Cython, setuptools, pytest
# and hypothesis; the compiler is the system gcc, whose libasan/libubsan are
# preloaded.
#
# Only aoti_cy's extensions are instrumented: Python, torch and the compiled
# test models (model .so files from torch) stay as they are. libasan must be
# the first library in the process, hence LD_PRELOAD; child processes the
# tests spawn (python -c ..., g++, strip) inherit it and run under ASan too.
#
# Settings, and why:
# - detect_leaks=0: LeakSanitizer over a whole Python + torch process reports
#   the interpreter's and torch's intentional process-lifetime allocations
#   (interned objects, op registries, thread pools) by the thousand; leaks in
#   aoti_cy are tested by tests/test_stress.py (RSS, fds and temp folders
#   over 1e5 runs; under ASan fds and folders only: see UNDER_ASAN there).
# - halt_on_error/abort_on_error, UBSan halt_on_error: the first report kills
#   the process, so a report is a test-run failure, never a stderr line only.
# - allocator_may_return_null=1: glibc malloc returns NULL for an impossible
#   size and torch turns that into an exception; without it ASan aborts.
# - PYTHONMALLOC=malloc: Python objects go through malloc, so ASan sees
#   overruns of Python buffers aoti_cy touches, not only of C++ ones.
# - AOTI_CY_FUZZ_EXAMPLES is passed through: unset, each fuzz property runs
#   its 60 derandomized examples, as in CI.
# Suppressions for reports inside torch or Python (none needed so far) go in
# scripts/sanitize.supp, which is passed to both sanitizers.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="${AOTI_CY_SANITIZE_DIR:-${TMPDIR:-/tmp}/aoti_cy-sanitize}"
python="${PYTHON:-python3}"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"

# 1. A copy of the sources, without their build outputs.
[ "$work" != "$src" ] || { echo "AOTI_CY_SANITIZE_DIR is the source tree" >&2; exit 1; }
mkdir -p "$work"
tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.so' \
    --exclude='./aoti_cy/*.cpp' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.hypothesis -cf - . | tar -C "$work" -xf -
cd "$work"

# 2. The instrumented build. distutils appends CFLAGS to every compile
#    (C++ included, after the interpreter's -O3, so -O1 wins) and LDFLAGS to
#    every link; torch's BuildExtension keeps both.
#    Everything is rebuilt (--force) when the compiled sources differ from
#    the last build's: distutils does not see a changed header.
sources_hash="$({ cat setup.py csrc/* aoti_cy/*.pyx aoti_cy/*.pxd aoti_cy/includes/*
                  "$python" -c "import torch; print(torch.__version__)"; } | sha256sum)"
force=()
[ "$(cat build/asan/sources.sha256 2>/dev/null)" = "$sources_hash" ] || force=(--force)
rm -f build/asan/sources.sha256
set +e
CC=/usr/bin/gcc CXX=/usr/bin/g++ CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="$flags" \
    "$python" setup.py build_ext --inplace -q --build-temp build/asan "${force[@]}" 2>&1 \
    | grep -Ev "^(copying|running|creating|/usr/bin/g|warning: .*Cython)"
build_status=${PIPESTATUS[0]}
set -e
[ "$build_status" -eq 0 ] || { echo "the instrumented build failed" >&2; exit 1; }
echo "$sources_hash" > build/asan/sources.sha256
count=0
for so in aoti_cy/*.so; do
    # Each extension must call into both runtimes, or it was not instrumented.
    imports="$(nm -D --undefined-only "$so")"
    [[ "$imports" == *__asan_report* ]] || { echo "not built with ASan: $so" >&2; exit 1; }
    [[ "$imports" == *__ubsan_handle* ]] || { echo "not built with UBSan: $so" >&2; exit 1; }
    count=$((count + 1))
done
echo "instrumented extensions: $count"

# 3. The tests, under the sanitizers.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# ASan writes its reports to files (<log>.<pid>), so those of child
# processes are kept too; UBSan (a separate runtime here) ignores log_path
# and writes to fd 2, so pytest captures only sys.stderr (--capture=sys),
# never fd 2: a report that aborts the process must not go down with
# pytest's capture buffer. Everything is also kept in pytest.log.
logs="$work/sanitizer-logs"
rm -rf "$logs" && mkdir -p "$logs"
supp="$work/scripts/sanitize.supp"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:suppressions=$supp:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:suppressions=$supp"
export PYTHONMALLOC=malloc
# A private temp folder: the tests count /tmp/aoti_cy-* folders, and other
# processes on the machine create and remove theirs meanwhile.
export TMPDIR="$work/tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
export PYTHONPATH="$work"
# The tests must import the instrumented copy, in a process running ASan.
"$python" -c "import aoti_cy, sys; assert aoti_cy.__file__.startswith(sys.argv[1]), aoti_cy.__file__
assert 'libasan' in open('/proc/self/maps').read(), 'libasan is not loaded'" "$work"
tests=(tests/test_inputs.py tests/test_stress.py tests/test_fuzz.py tests/test_errors.py
       tests/test_constants.py tests/test_proxy_executor.py)
for arg in "$@"; do [[ -e "${arg%%::*}" ]] && { tests=(); break; }; done
set +e
"$python" -m pytest -q -rs -p no:cacheprovider -p no:logging --capture=sys "${tests[@]}" "$@" 2>&1 \
    | tee "$logs/pytest.log"
status=${PIPESTATUS[0]}
set -e

# 4. The reports, from every process the run started.
reports=$(cat "$logs"/* 2>/dev/null | grep -cE "^(==[0-9]+==ERROR: |.*: runtime error: )" || true)
echo "sanitizer reports: $reports"
[ "$reports" -eq 0 ] || { cat "$logs"/asan.* >&2 2>/dev/null; [ "$status" -ne 0 ] || status=1; }
exit "$status"

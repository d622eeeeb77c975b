#!/usr/bin/env bash
# Build the C inference kernels (l3ic_jax._cpu) with ASan + UBSan in a scratch copy of the tree and run them over
# odd sizes, batches, both Winograd tile sizes and 1-3 threads (tools/cpu_sanitize_driver.py).
#
#   tools/cpu_sanitize.sh
#
# The driver calls l3ic_jax.cpu_backend directly, without XLA: jaxlib's own C++ exceptions abort under a preloaded
# ASan runtime, so the parity tests cannot run this way. Exit status is nonzero on any failure or sanitizer report.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$repo" ls-files -z l3ic_jax csrc setup.py pyproject.toml README.md | (cd "$repo" && xargs -0 cp --parents -t "$work")
cd "$work"
L3IC_FSE_DEBUG=1 python setup.py -q build_ext --inplace >/dev/null 2>&1 || { echo "sanitizer build failed" >&2; exit 1; }
LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$work" python "$repo/tools/cpu_sanitize_driver.py"

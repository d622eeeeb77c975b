#!/usr/bin/env bash
# Build the FSE C core and its C test driver with sanitizers and run the
# driver (reference vectors, model-checked fuzzing, mutated streams).
#
#   tools/fse_sanitize.sh [--iters N] [--seed S]          # ASan + UBSan
#   tools/fse_sanitize.sh --valgrind [--iters N]          # memcheck instead
#
# Vector directories: tests/data/fse (always) and ../shared/reference/fse
# (when present).  Exit status is nonzero on any failure or sanitizer report.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/csrc/fse"
mode=asan
iters=2000
seed=1
while [ $# -gt 0 ]; do
    case "$1" in
        --valgrind) mode=valgrind ;;
        --iters) iters="$2"; shift ;;
        --seed) seed="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

dirs=("$repo/tests/data/fse")
if [ -d "$repo/../shared/reference/fse" ]; then
    dirs+=("$(cd "$repo/../shared/reference/fse" && pwd)")
fi

CC="${CC:-gcc}"
build="$(mktemp -d)"  # honours TMPDIR
trap 'rm -rf "$build"' EXIT
common=(-std=c99 -Wall -Wextra -Werror -g -I"$src")

if [ "$mode" = asan ]; then
    "$CC" "${common[@]}" -O1 -fno-omit-frame-pointer \
        -fsanitize=address,undefined -fno-sanitize-recover=all \
        -o "$build/test_fse_core" "$src/test_fse_core.c" "$src/fse_core.c" -lm
    echo "== ASan+UBSan: $build/test_fse_core --iters $iters --seed $seed ${dirs[*]}"
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$build/test_fse_core" --iters "$iters" --seed "$seed" "${dirs[@]}"
else
    command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 2; }
    "$CC" "${common[@]}" -O1 -o "$build/test_fse_core" \
        "$src/test_fse_core.c" "$src/fse_core.c" -lm
    echo "== valgrind memcheck: --iters $iters --seed $seed ${dirs[*]}"
    valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect \
        "$build/test_fse_core" --iters "$iters" --seed "$seed" "${dirs[@]}"
fi
echo "== $mode: OK"

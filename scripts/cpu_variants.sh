#!/usr/bin/env bash
# Reruns the tests that hold float32 tolerances (pytest -m float32) on other CPU code paths of
# XLA and torch, rounding as another machine's kernels would: a tolerance that only holds on the
# kernels of this CPU fails here. See docs/tolerances.md.
#
#   make test-cpu-variants     (or: bash scripts/cpu_variants.sh [extra pytest args])
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
pytest_args=("$@")
status=0
summary=()

# variant NAME [VAR=VALUE ...]: the float32 tests under these environment settings.
variant() {
  local name=$1 log line
  shift
  echo "== $name: ${*:-the defaults}"
  log=$(mktemp)
  env "$@" "$python" -m pytest -n 2 -q -p no:cacheprovider -m float32 "${pytest_args[@]}" \
    >"$log" 2>&1
  line=$(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1 | tr -d '=' | sed 's/^ *//')
  if [ -z "$line" ] || grep -qE 'failed|error' <<<"$line"; then
    status=1
    grep -E '^(FAILED|ERROR)' "$log"
  fi
  summary+=("$(printf '%-13s %s' "$name" "${line:-no result: see the output above}")")
  rm -f "$log"
}

variant default
# XLA's code generator held to AVX2, Eigen's contractions on one thread (another partition of
# each sum); torch's oneDNN held to AVX2, two threads for its reductions.
variant avx2 "XLA_FLAGS=--xla_cpu_max_isa=AVX2 --xla_cpu_multi_thread_eigen=false" \
  ONEDNN_MAX_CPU_ISA=AVX2 JAXNETS_TEST_TORCH_THREADS=2
# SSE4.2 code, convolutions through YNNPACK instead of Eigen (jaxnets' CPU flags off);
# oneDNN held to SSE4.1.
variant sse4-ynnpack JAXNETS_XLA_FLAGS=0 XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 \
  ONEDNN_MAX_CPU_ISA=SSE41

echo "== summary ($(lscpu | sed -n 's/^Model name: *//p'))"
printf '%s\n' "${summary[@]}"
exit $status

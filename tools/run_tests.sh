#!/usr/bin/env bash
# Set up .venv (created or reused) and run the test suite with pytest under
# every backend in $MIRASOL_BACKENDS (default: jax tensorflow torch), then
# ruff.
#
# The first backend runs in one lane and the others, one after the other,
# in a second lane beside it: one pytest process keeps less than one core
# busy on average (tracing and compiling are single-threaded), so two
# lanes finish the suite sooner on a 2-core machine. Each line of output
# starts with its backend. MIRASOL_TEST_LANES=1 runs the backends one
# after the other.
#
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k backbone`.
set -euo pipefail
MIRASOL_EXTRAS=test,bench source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
cd "$REPO_ROOT"

run_backend() {
  local backend="$1"
  shift
  echo "=== pytest with KERAS_BACKEND=$backend ==="
  # `sed -u` labels each line as it comes; the pipeline's status is
  # pytest's.
  KERAS_BACKEND="$backend" python -m pytest -q -p no:cacheprovider "$@" \
    2>&1 | sed -u "s/^/[$backend] /"
  return "${PIPESTATUS[0]}"
}

run_lane() {
  local lane="$1"
  shift
  local status=0
  local backend
  for backend in $lane; do
    run_backend "$backend" "$@" || status=1
  done
  return "$status"
}

# The whole suite's JAX tests that mostly wait on subprocesses (the
# guides, the train command) run at the end of the second lane, so that
# the two lanes take about as long. Not when arguments choose the tests.
LATE_JAX_TESTS="${MIRASOL_LATE_JAX_TESTS-tests/test_guides.py tests/test_training.py}"

read -r -a backends <<< "${MIRASOL_BACKENDS:-jax tensorflow torch}"
status=0
if [ "${MIRASOL_TEST_LANES:-2}" = 1 ] || [ "${#backends[@]}" -lt 2 ]; then
  run_lane "${backends[*]}" "$@" || status=1
elif [ "$#" = 0 ] && [ "${backends[0]}" = jax ] && [ -n "$LATE_JAX_TESTS" ]; then
  ignore=()
  for path in $LATE_JAX_TESTS; do ignore+=("--ignore=$path"); done
  run_backend jax "${ignore[@]}" &
  first=$!
  run_lane "${backends[*]:1}" || status=1
  # shellcheck disable=SC2086
  run_backend jax $LATE_JAX_TESTS || status=1
  wait "$first" || status=1
else
  run_lane "${backends[0]}" "$@" &
  first=$!
  run_lane "${backends[*]:1}" "$@" || status=1
  wait "$first" || status=1
fi
if [ "$status" != 0 ]; then
  echo "=== pytest failed (see the lines above, labelled by backend) ==="
  exit "$status"
fi
echo "=== ruff ==="
ruff check keras_mirasol tests tools guides
ruff format --check keras_mirasol tests tools guides

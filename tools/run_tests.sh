#!/usr/bin/env bash
# Set up .venv (created or reused) and run the test suite with pytest under
# every backend in $MIRASOL_BACKENDS (default: jax tensorflow torch), then
# ruff.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k backbone`.
set -euo pipefail
MIRASOL_EXTRAS=test,bench source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
cd "$REPO_ROOT"
for backend in ${MIRASOL_BACKENDS:-jax tensorflow torch}; do
  echo "=== pytest with KERAS_BACKEND=$backend ==="
  KERAS_BACKEND="$backend" python -m pytest -q -p no:cacheprovider "$@"
done
echo "=== ruff ==="
ruff check keras_mirasol tests tools guides
ruff format --check keras_mirasol tests tools guides

#!/usr/bin/env bash
# Set up .venv (created or reused) and run the main job: `keras-mirasol demo`.
# Extra arguments go to the demo, e.g. `bash tools/run_demo.sh --steps 200`.
set -euo pipefail
# The `guides` extra (matplotlib): the demo draws its figures into the run
# folder (training.png, accuracy_by_type.png).
export MIRASOL_EXTRAS="${MIRASOL_EXTRAS:-guides}"
source "$(dirname "${BASH_SOURCE[0]}")/setup_venv.sh"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
keras-mirasol demo "$@"

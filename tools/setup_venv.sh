# Source this file: creates (or reuses) .venv in the repository root and
# installs keras_mirasol into it with the extras given in $MIRASOL_EXTRAS.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${MIRASOL_VENV:-$REPO_ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtualenv $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
target="$REPO_ROOT"
if [ -n "${MIRASOL_EXTRAS:-}" ]; then target="$REPO_ROOT[$MIRASOL_EXTRAS]"; fi
# Reinstall only when the dependencies or extras change (the install is
# editable, so code changes need none).
stamp="$VENV/.keras_mirasol_install${MIRASOL_EXTRAS:+_$MIRASOL_EXTRAS}"
want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q -e "$target"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

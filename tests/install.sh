#!/usr/bin/env bash
# Create (or update) the two test environments, both with python3.11 ($PYTHON to choose another):
#   .venv      batchinfer with its dev extra at the newest versions (Ray included, for backend: ray's
#              tests): the whole test suite runs here
#   .venv-old  batchinfer at the oldest supported pandas/numpy/pyarrow (tests/old-versions.txt), with
#              what Azure's examples and the Azure tests need (scikit-learn, mlflow-skinny 2.x, whose sklearn
#              flavour still saves with cloudpickle as Azure's examples expect, Microsoft's
#              mltable, which the tests use as the reference reader): the Azure-compatibility tests run here
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}

# Debian's Chromium, for the report's browser tests (tests/browser.py drives it through playwright, which
# never downloads a browser of its own). It takes ~40 s: installed in the background while pip works,
# waited for at the end. Not root and no password-less sudo: the browser tests skip and say why.
CHROMIUM_LOG=$(mktemp)
chromium_pid=""
install_chromium() {
    export DEBIAN_FRONTEND=noninteractive
    local as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)  # sudo resets the environment
    local install=("${as_root[@]}" apt-get -q -y --no-install-recommends install chromium)
    # apt-get update only when the install fails (a fresh container has no package lists)
    "${install[@]}" || { "${as_root[@]}" apt-get -q update && "${install[@]}"; }
}
if [ ! -x /usr/bin/chromium ] && [ -z "${BATCHINFER_CHROMIUM:-}" ]; then
    if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
        install_chromium >"$CHROMIUM_LOG" 2>&1 &
        chromium_pid=$!
    else
        echo "tests/install.sh: no /usr/bin/chromium and not root (nor password-less sudo) to apt-get install" \
             "chromium: the report's browser tests will be skipped (set BATCHINFER_CHROMIUM to a Chromium to run them)"
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q -e '.[dev]'

# Azurite (Azure Blob's server, for the tests on 127.0.0.1) from npm, into .tools/ (git ignores it);
# 3.35 is the last release that runs on Node 20
if command -v npm >/dev/null && [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
    npm install --silent --no-fund --no-audit --no-progress --prefix .tools azurite@3.35 </dev/null
fi

[ -x .venv-old/bin/python ] || "$PYTHON" -m venv .venv-old
.venv-old/bin/python -m pip install -q --upgrade pip  # azureml-dataprep needs pip>=25.3
.venv-old/bin/pip install -q -c tests/old-versions.txt -e . \
    "pytest<9.2" pytest-timeout pytest-xdist scikit-learn "mlflow-skinny<3" mltable
.venv-old/bin/python - <<'PY'
import numpy, pandas, pyarrow
lines = [line.split("#")[0].strip() for line in open("tests/old-versions.txt")]
wanted = dict(line.split("==") for line in lines if line)
found = {"pandas": pandas.__version__, "numpy": numpy.__version__, "pyarrow": pyarrow.__version__}
assert found == wanted, f".venv-old has {found}, tests/old-versions.txt says {wanted}"
PY

if [ -n "$chromium_pid" ]; then
    if ! wait "$chromium_pid"; then
        cat "$CHROMIUM_LOG" >&2
        echo "tests/install.sh: apt-get install chromium failed (its log is above)" >&2
        rm -f "$CHROMIUM_LOG"
        exit 1
    fi
fi
rm -f "$CHROMIUM_LOG"

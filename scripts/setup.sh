#!/usr/bin/env bash
# Set up se_viz in ./.venv from the project's own files (idempotent, safe to re-run).
#   bash scripts/setup.sh         app, CLI and library
#   bash scripts/setup.sh --dev   also the test tools and Debian's chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
echo "setup: installing requirements.txt (PaddlePaddle is ~1.3 GB the first time)"
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps -e .

if [ "${1:-}" = "--dev" ]; then
  echo "setup: installing requirements-dev.txt"
  "${PIP[@]}" -r requirements-dev.txt
  if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium for the browser tests"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium fonts-dejavu-core
  fi
fi
echo "setup: done"

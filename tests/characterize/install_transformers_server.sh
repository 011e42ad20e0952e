#!/usr/bin/env bash
# Install `transformers serve` (Hugging Face's OpenAI-compatible server) for the characterize
# tests, in its own virtual environment so its dependencies (typer, a newer click, torch) stay
# out of guide-opt's. torch 2.13.0 is the CPU build this machine kind keeps on disk.
# Usage: bash tests/characterize/install_transformers_server.sh   (VENV defaults to /opt/guide-opt-serve)
set -euo pipefail
VENV="${VENV:-/opt/guide-opt-serve}"
if "$VENV/bin/transformers" --help >/dev/null 2>&1; then
  echo "transformers serve already installed in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet 'transformers[serving]==5.23.0'
"$VENV/bin/transformers" --help >/dev/null
echo "transformers serve installed in $VENV"

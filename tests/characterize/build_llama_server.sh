#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (llama-server) for the characterize tests.
#
# The source is the llama.cpp that the llama-cpp-python source distribution on PyPI vendors
# (pinned version below); nothing else is downloaded: the server's web UI is not fetched and
# HTTPS/curl support is off. The binary is statically linked and installed as
# $PREFIX/bin/llama-server (default PREFIX=/usr/local). Takes several minutes on 2 cores.
# Usage: bash tests/characterize/build_llama_server.sh   (skips the build when it is installed)
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PREFIX="${PREFIX:-/usr/local}"
if "$PREFIX/bin/llama-server" --version >/dev/null 2>&1; then
  echo "llama-server already installed at $PREFIX/bin/llama-server"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$work" "llama-cpp-python==$VERSION"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work" --wildcards '*/vendor/llama.cpp/*'
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >/dev/null
nice -n 19 cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
install -D -m 0755 "$work/build/bin/llama-server" "$PREFIX/bin/llama-server"
"$PREFIX/bin/llama-server" --version

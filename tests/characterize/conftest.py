"""A real OpenAI-compatible server on loopback: llama.cpp's ``llama-server`` serving a tiny random
Llama that the tests write (``tiny_llama.py``). Nothing is downloaded at run time.

The binary comes from ``$GUIDE_OPT_LLAMA_SERVER`` or ``llama-server`` on PATH (CI builds it with
``tests/characterize/build_llama_server.sh``); tests that need it skip with that hint when it
is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

#: Name the server answers to (``--alias``), i.e. the ``model`` of requests.
MODEL_ALIAS = "tiny-llama"
#: Parallel request slots of the server (continuous batching over at most this many users).
SLOTS = 4


def llama_server_binary() -> str | None:
    """The llama-server executable, or None."""
    return os.environ.get("GUIDE_OPT_LLAMA_SERVER") or shutil.which("llama-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """(base URL, log file) of a running llama-server with the tiny model; stopped after the session."""
    binary = llama_server_binary()
    if binary is None:
        hint = "llama-server not installed: run 'bash tests/characterize/build_llama_server.sh'"
        if os.environ.get("CI"):
            pytest.fail(f"{hint} (.ci/run builds it; a CI run must not skip the real-server tests)")
        pytest.skip(hint)
    pytest.importorskip("gguf", reason="the tiny model is written with the gguf package (pip install gguf)")
    from tiny_llama import write_tiny_llama

    folder = tmp_path_factory.mktemp("llama-server")
    model = write_tiny_llama(folder / "tiny-llama.gguf")
    port = _free_port()
    log_path = folder / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [binary, "--model", str(model), "--alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
         "--ctx-size", str(2048 * SLOTS), "--parallel", str(SLOTS), "--threads", "1", "--no-warmup"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama-server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server did not become healthy in 60 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

"""Real OpenAI-compatible servers on loopback, each serving a tiny random Llama that the tests
write (nothing is downloaded at run time):

- ``transformers_server``: Hugging Face's ``transformers serve`` (a FastAPI/uvicorn server) with a
  word-level tokenizer, written with numpy (``tiny_hf_llama.py``). It runs in its own virtual environment,
  ``$GUIDE_OPT_SERVE_VENV`` (default ``/opt/guide-opt-serve``), which
  ``tests/characterize/install_transformers_server.sh`` creates; ``.ci/run`` does, and under CI a
  missing server is a failure, not a skip.
- ``llama_server``: llama.cpp's ``llama-server`` (``tiny_llama.py`` writes the GGUF), which also
  reports its own per-request timings. From ``$GUIDE_OPT_LLAMA_SERVER`` or PATH; built by
  ``tests/characterize/build_llama_server.sh`` (a long compile); skipped where absent.
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


#: The virtual environment holding ``transformers serve``.
SERVE_VENV = Path(os.environ.get("GUIDE_OPT_SERVE_VENV", "/opt/guide-opt-serve"))


def _wait_healthy(process: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not become healthy in {timeout_s:g} s: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory):
    """(base URL, model name) of ``transformers serve`` with the tiny model; stopped after the session."""
    transformers = SERVE_VENV / "bin" / "transformers"
    if not transformers.exists():
        hint = f"transformers serve not installed in {SERVE_VENV}: run 'bash tests/characterize/install_transformers_server.sh'"
        if os.environ.get("CI"):
            pytest.fail(f"{hint} (.ci/run installs it; a CI run must not skip the real-server tests)")
        pytest.skip(hint)
    from guide_opt.characterize.client import PROMPT_WORDS
    from tiny_hf_llama import write_tiny_hf_llama

    folder = tmp_path_factory.mktemp("transformers-serve")
    model = write_tiny_hf_llama(folder / "tiny-llama", list(PROMPT_WORDS))
    port = _free_port()
    log_path = folder / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(transformers), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                    "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}", log_path, 180)
            yield f"http://127.0.0.1:{port}", str(model)
        finally:
            _stop(process)


def llama_server_binary() -> str | None:
    """The llama-server executable, or None."""
    return os.environ.get("GUIDE_OPT_LLAMA_SERVER") or shutil.which("llama-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """(base URL, log file) of a running llama-server with the tiny GGUF model; stopped after the session."""
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama-server not installed: run 'bash tests/characterize/build_llama_server.sh' (a long compile)")
    pytest.importorskip("gguf", reason="the tiny model is written with the gguf package (pip install gguf)")
    from tiny_llama import write_tiny_llama

    folder = tmp_path_factory.mktemp("llama-server")
    model = write_tiny_llama(folder / "tiny-llama.gguf")
    port = _free_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [binary, "--model", str(model), "--alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
             "--ctx-size", str(2048 * SLOTS), "--parallel", str(SLOTS), "--threads", "1", "--no-warmup"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}", log_path, 60)
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            _stop(process)

"""The console script's exit: complete output, the exit code, the exit handlers, then no module teardown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _console(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``console_main`` with ``args`` in a fresh interpreter that registers an exit handler writing a marker file."""
    marker = tmp_path / "exit-handler-ran"
    code = ("import atexit, pathlib, sys\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
            f"sys.argv = ['guide-opt', *{list(args)!r}]\n"
            "from guide_opt.cli import console_main\n"
            "console_main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120), marker


def test_output_is_complete_and_exit_handlers_run(tmp_path):
    # The catalog listing is long (tens of KB through a pipe), so a lost buffer would cut the JSON short.
    done, marker = _console(tmp_path, "models", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) > 10
    assert marker.read_text() == "yes"


def test_bad_input_keeps_its_exit_code_and_message(tmp_path):
    done, marker = _console(tmp_path, "solve", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "missing.yaml" in done.stderr
    assert marker.read_text() == "yes"

"""The README's commands work as written (documentation that matches the code).

Every line of a README code block that starts with ``guide-opt`` is run in-process; it must
exit 0, or 2 where the README says it is infeasible. Paths are relative to the repository.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from guide_opt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("guide-opt "):
                commands.append(line)
    return commands


def test_readme_has_commands():
    assert len(readme_commands()) >= 5


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    if "./my-model/config.json" in argv:  # the README's example path: write such a file
        config = tmp_path / "config.json"
        config.write_text('{"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, '
                          '"num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 8192}')
        argv[argv.index("./my-model/config.json")] = str(config)
    if "--calibration" in argv:  # the README makes this file with 'guide-opt calibrate' first
        calibration = tmp_path / "calibration.yaml"
        assert main(["calibrate", "--source", "lmdeploy", "--out", str(calibration)]) == 0
        argv[argv.index("--calibration") + 1] = str(calibration)
    for i, arg in enumerate(argv):  # outputs go to a temporary folder
        if arg.endswith((".png", ".svg", ".yaml", ".db")) and not os.path.exists(arg) and argv[i - 1] in ("--plot", "--out", "--storage"):
            argv[i] = str(tmp_path / Path(arg).name)
    code = main(argv)
    out, err = capsys.readouterr()
    expected = 2 if "infeasible" in command else 0
    assert code == expected, f"{command} exited {code}: {err.strip()[:300]}"
    assert "Traceback" not in err

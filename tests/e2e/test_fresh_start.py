"""From nothing to a toy world and working CLIs, through the commands a new user runs."""

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True).stdout


def test_toy_world_cli_then_every_tool_answers(tmp_path):
    out = run(sys.executable, "-m", "toyworld", tmp_path / "world", "--preset", "tiny")
    assert "400 corpus samples" in out and str(tmp_path / "world") in out
    assert sorted(p.name for p in (tmp_path / "world" / "corpus").glob("*.tar")) == [f"0000{i}.tar" for i in range(4)]
    first = (tmp_path / "world" / "corpus" / "00000.tar").read_bytes()
    run(sys.executable, "-m", "toyworld", tmp_path / "world", "--preset", "tiny")  # rerun: reuses what exists
    assert (tmp_path / "world" / "corpus" / "00000.tar").read_bytes() == first
    for tool in ("react-index", "react-tune", "react-eval"):
        assert run(BIN / tool, "--version").startswith(f"{tool}, version ")

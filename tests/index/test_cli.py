import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import react_index
from react_index.cli import main


def test_version_and_help():
    runner = CliRunner()
    out = runner.invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"react-index, version {react_index.__version__}"
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "Retrieval for REACT" in out.output and "--version" in out.output


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "react-index"  # pip puts scripts beside the venv's python
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("react-index, version ")


def test_importing_react_index_never_imports_torch():
    code = ("import sys, react_index, react_index.cli, react_index.manifest; "
            "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

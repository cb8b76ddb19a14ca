"""The monorepo's structural promises: dependency boundaries, no cross-package imports, vendored
contract copies, CLIs, docs examples and the README/CI command."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"react-index": "react_index", "react-tune": "react_tune", "react-eval": "react_eval"}

ALLOWED = {
    "react-index": {"numpy", "pyarrow", "faiss-cpu", "click", "fsspec", "tqdm"},
    "react-tune": {"torch", "open-clip-torch", "pyarrow", "fsspec", "tqdm", "click", "safetensors", "pillow"},
    "react-eval": {"torch", "open-clip-torch", "numpy", "pyarrow", "click", "tqdm", "fsspec", "pillow", "matplotlib",
                   "pyyaml"},
}
EXTRAS = {
    "react-index": {"clip": {"torch", "open-clip-torch", "pillow"}, "gpu": {"faiss-gpu-cu12"},
                    "download": {"aiohttp", "pillow"}, "captions": {"pyahocorasick"}},
    "react-tune": {},
    "react-eval": {"detection": {"pycocotools"}},
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project(package: str) -> dict:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_stay_inside_their_boundary(package):
    project = _project(package)
    assert {_name(r) for r in project["dependencies"]} == ALLOWED[package]
    extras = {k: {_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    assert extras == EXTRAS[package]
    assert not any("==" in r for r in project["dependencies"])  # ranges, not pins
    assert project["scripts"] == {package: f"{PACKAGES[package]}.cli:main"}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_another_or_the_toy_world(package):
    forbidden = (set(PACKAGES.values()) - {PACKAGES[package]}) | {"toyworld"}
    for path in (ROOT / "packages" / package / "src").rglob("*.py"):
        assert not _imports(path) & forbidden, f"{path} imports {_imports(path) & forbidden}"


def test_react_index_keeps_torch_out_of_module_level_imports():
    """Only clip_embed (the [clip] extra) imports torch; everything else loads it lazily, if at all."""
    for path in (ROOT / "packages" / "react-index" / "src").rglob("*.py"):
        if path.name != "clip_embed.py":
            assert not _imports(path, top_level_only=True) & {"torch", "open_clip", "PIL", "torchvision"}, path


def test_vendored_contract_copies_match_their_source():
    out = subprocess.run([sys.executable, str(ROOT / "vendor" / "sync.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_every_cli_answers_help_and_version(package):
    module = __import__(f"{PACKAGES[package]}.cli", fromlist=["main"])
    runner = CliRunner()
    version = runner.invoke(module.main, ["--version"])
    assert version.exit_code == 0 and version.output == f"{package}, version {_project(package)['version']}\n"
    help_ = runner.invoke(module.main, ["--help"])
    assert help_.exit_code == 0 and "--version" in help_.output


def test_docs_examples_validate_for_every_kind():
    from manifest_cases import doc_examples

    from react_index import _manifests

    examples = doc_examples()
    assert set(examples) == set(_manifests.SPECS)
    for kind, doc in examples.items():
        _manifests.validate(doc, kind, "react-index", f"docs/manifests.md example of {kind}")


def test_readme_shows_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["python3 -m nox -s demo", "python3 -m nox -s tests"]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if "nox -s" in line and not line.lstrip().startswith("#")]
    assert ci_commands == ["python3 -m nox -s tests"]


def test_docs_links_from_readme_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and all((ROOT / link).exists() for link in links), links


def test_example_ids_in_docs_are_real_ids():
    from manifest_cases import doc_examples, spec_id

    for doc in doc_examples().values():
        assert doc["id"] == spec_id(doc)
        json.dumps(doc)

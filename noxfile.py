"""Every developer and CI entry point. `python3 -m nox -l` lists them.

    python3 -m nox -s demo     the main job: the toy-world pipeline, offline, on CPU
    python3 -m nox -s tests    everything CI runs (also runs tests_index: react-index alone, no torch)
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

# Dev sessions pin torch to the build this project is developed and CI-tested with (a CUDA build
# that also runs on CPU); the packages themselves declare ranges, not pins.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
INDEX = "./packages/react-index"
TUNE = "./packages/react-tune"
EVAL = "./packages/react-eval"
TOYWORLD = "./toyworld"
TEST_TOOLS = ["pytest>=8", "pytest-xdist>=3"]
# react-index's tests check its row order against the reader autofaiss and clip-retrieval use (test-only)
INDEX_TEST_TOOLS = ["embedding-reader>=1.8,<2"]
PYTEST = ["pytest", "-q", "-ra", "-p", "no:cacheprovider"]


def _ensure_chromium(session):
    """The inspect/report tests render pages in Debian's headless Chromium."""
    if shutil.which("chromium"):
        return
    if os.geteuid() != 0:
        session.error("the tests need Debian's chromium: sudo apt-get install chromium")
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "chromium", external=True,
                env={"DEBIAN_FRONTEND": "noninteractive"})


# Every session that needs the whole stack (tests, demo, e2e, reproduce, bench, docs, pretrain) runs in ONE
# environment, .nox/dev: the pinned torch is the CUDA build (≈ 6 GB installed), and building it once per
# session cost minutes and gigabytes each. The three packages and the toy world are installed editable, so a
# code change needs no reinstall; dependencies are reinstalled only when their specification changes (a stamp
# over the requirement list and the pyproject files). The packaging itself is checked by tests_index, which
# installs react-index as a user would, into a fresh environment of its own.
DEV_ENV = Path(".nox") / "dev"
DEV_REQUIREMENTS = [*TORCH, *TEST_TOOLS, *INDEX_TEST_TOOLS]
DEV_EDITABLE = [f"{INDEX}[clip,download,captions]", TUNE, f"{EVAL}[detection]", f"{TOYWORLD}[models]"]


def _dev_stamp() -> str:
    spec = json.dumps([DEV_REQUIREMENTS, DEV_EDITABLE, sys.version_info[:2]])
    for project in (INDEX, TUNE, EVAL, TOYWORLD):
        spec += (Path(project) / "pyproject.toml").read_text()
    return hashlib.sha256(spec.encode()).hexdigest()


def _dev(session) -> Path:
    """The shared environment's bin folder, created or refreshed first when it is missing or out of date."""
    bin_dir, stamp = DEV_ENV / "bin", DEV_ENV / "installed.sha256"
    if stamp.exists() and stamp.read_text() == _dev_stamp() and (bin_dir / "python").exists():
        session.log(f"using the shared environment {DEV_ENV} (up to date; nothing to install)")
        return bin_dir.resolve()
    session.log(f"installing the shared environment {DEV_ENV}: torch 2.14.1 + torchvision 0.29.1 (the CUDA build "
                "with its CUDA libraries: ≈ 3 GB of wheels to download, ≈ 6 GB installed; it also runs on CPU), "
                "open_clip, faiss-cpu, pyarrow, pycocotools and the three packages (editable) — once; later runs "
                "reuse it")
    if not (bin_dir / "python").exists():
        session.run(sys.executable, "-m", "venv", str(DEV_ENV), external=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on"]
    session.run(*pip, *DEV_REQUIREMENTS, *(arg for spec in DEV_EDITABLE for arg in ("-e", spec)), external=True)
    stamp.write_text(_dev_stamp())
    return bin_dir.resolve()


def _run_dev(session, *args) -> None:
    """Run `python ARGS` in the shared environment."""
    bin_dir = _dev(session)
    session.run(str(bin_dir / "python"), *args, external=True,
                env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(bin_dir.parent)})


@nox.session(venv_backend="none")
def tests(session):
    """All tests, in the shared environment with every package; then react-index alone (tests_index) and lint."""
    _ensure_chromium(session)
    _run_dev(session, "-m", *PYTEST, "-n", "2", "tests", *session.posargs)
    session.notify("tests_index")
    session.notify("lint")


@nox.session
def tests_index(session):
    """react-index alone in a fresh venv: its tests pass and torch is not importable."""
    session.install(f"{INDEX}[download,captions]", TOYWORLD, *TEST_TOOLS, *INDEX_TEST_TOOLS)
    _ensure_chromium(session)
    no_torch = ("import importlib.util, sys; sys.exit("
                "'torch is importable in the react-index-only venv' if importlib.util.find_spec('torch') else 0)")
    session.run("python", "-c", no_torch)
    session.run(*PYTEST, "tests/index", *session.posargs)


@nox.session(venv_backend="none")
def tests_tune(session):
    """tests/tune, in the shared environment."""
    _run_dev(session, "-m", *PYTEST, "tests/tune", *session.posargs)


@nox.session(venv_backend="none")
def tests_eval(session):
    """tests/eval, in the shared environment."""
    _run_dev(session, "-m", *PYTEST, "tests/eval", *session.posargs)


@nox.session(venv_backend="none")
def e2e(session):
    _run_dev(session, "-m", *PYTEST, "tests/e2e", *session.posargs)


@nox.session(venv_backend="none")
def demo(session):
    """The main job on the toy world (see README)."""
    _run_dev(session, "scripts/demo.py", *session.posargs)


@nox.session(venv_backend="none")
def reproduce(session):
    """Reproduction v2 (docs/reproduction.md): every method on the 64-class longtail world, 3 seeds; under an hour
    on 2 CPU cores; not part of CI. Results in repro-out/."""
    _run_dev(session, "scripts/reproduce.py", *session.posargs)


@nox.session(venv_backend="none")
def reproduce_v1(session):
    """The first reproduction (4 rare shapes of the demo world; docs/reproduction.md, second section)."""
    _run_dev(session, "scripts/reproduce_v1.py", *session.posargs)


@nox.session(venv_backend="none")
def pretrain(session):
    """Remake a committed toy-pretrained base CLIP (toyworld/src/toyworld/weights/) from scratch: the demo world's
    (~16 min), or with `-- --preset longtail` the longtail world's (~15 min)."""
    root = "repro-out/world" if "longtail" in session.posargs else "demo-out/world"
    _run_dev(session, "-m", "toyworld.pretrain", root, "--commit", *session.posargs)


@nox.session(venv_backend="none")
def docs(session):
    """Regenerate docs/cli.md (the three CLIs) and docs/api.md (their Python APIs); tests fail when either is stale."""
    _run_dev(session, "scripts/gen_cli_docs.py", *session.posargs)
    _run_dev(session, "scripts/gen_api_docs.py", *session.posargs)


@nox.session(venv_backend="none")
def bench(session):
    """Speed benchmarks, side by side with peer tools (docs/benchmarks.md); results in bench-out/results.json.

    `nox -s bench -- p1_build` runs one; REACT_BENCH_N=quick runs small sizes. Peer tools get their own
    venvs under bench-out/venvs/, created on first use.
    """
    _run_dev(session, "benchmarks/run.py", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("python", "vendor/sync.py", "--check")


@nox.session(python=False)
def vendor(session):
    """Refresh the vendored copies of vendor/manifests.py inside each package."""
    session.run("python", "vendor/sync.py")

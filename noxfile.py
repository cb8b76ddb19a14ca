"""Every developer and CI entry point. `python3 -m nox -l` lists them.

    python3 -m nox -s demo     the main job: the toy-world pipeline, offline, on CPU
    python3 -m nox -s tests    everything CI runs (also runs tests_index: react-index alone, no torch)
"""

import os
import shutil

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


def _install_all(session):
    session.install(*TORCH, f"{INDEX}[clip,download]", TUNE, f"{EVAL}[detection]", f"{TOYWORLD}[models]",
                    *TEST_TOOLS)


@nox.session
def tests(session):
    """All tests, in one environment with every package; then react-index alone (tests_index) and lint."""
    _install_all(session)
    session.install(*INDEX_TEST_TOOLS)
    _ensure_chromium(session)
    session.run(*PYTEST, "-n", "2", "tests", *session.posargs)
    session.notify("tests_index")
    session.notify("lint")


@nox.session
def tests_index(session):
    """react-index alone in a fresh venv: its tests pass and torch is not importable."""
    session.install(f"{INDEX}[download]", TOYWORLD, *TEST_TOOLS, *INDEX_TEST_TOOLS)
    _ensure_chromium(session)
    no_torch = ("import importlib.util, sys; sys.exit("
                "'torch is importable in the react-index-only venv' if importlib.util.find_spec('torch') else 0)")
    session.run("python", "-c", no_torch)
    session.run(*PYTEST, "tests/index", *session.posargs)


@nox.session
def tests_tune(session):
    session.install(*TORCH, TUNE, f"{TOYWORLD}[models]", *TEST_TOOLS)
    session.run(*PYTEST, "tests/tune", *session.posargs)


@nox.session
def tests_eval(session):
    session.install(*TORCH, f"{EVAL}[detection]", f"{TOYWORLD}[models]", *TEST_TOOLS)
    session.run(*PYTEST, "tests/eval", *session.posargs)


@nox.session
def e2e(session):
    _install_all(session)
    session.run(*PYTEST, "tests/e2e", *session.posargs)


@nox.session
def demo(session):
    """The main job on the toy world (see README)."""
    _install_all(session)
    session.run("python", "scripts/demo.py", *session.posargs)


@nox.session
def reproduce(session):
    """The toy-scale REACT reproduction (docs/reproduction.md): about an hour on 2 CPU cores; not part of CI."""
    _install_all(session)
    session.run("python", "scripts/reproduce.py", *session.posargs)


@nox.session
def pretrain(session):
    """Remake the committed toy-pretrained base CLIP (toyworld/src/toyworld/weights/) from scratch."""
    _install_all(session)
    session.run("python", "-m", "toyworld.pretrain", "demo-out/world", "--commit", *session.posargs)


@nox.session
def docs(session):
    """Regenerate docs/cli.md from the three CLIs' click definitions (a test fails when it is stale)."""
    _install_all(session)
    session.run("python", "scripts/gen_cli_docs.py", *session.posargs)


@nox.session
def bench(session):
    """Speed benchmarks, side by side with peer tools (docs/benchmarks.md); results in bench-out/results.json.

    `nox -s bench -- p1_build` runs one; REACT_BENCH_N=quick runs small sizes. Peer tools get their own
    venvs under bench-out/venvs/, created on first use.
    """
    _install_all(session)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("python", "vendor/sync.py", "--check")


@nox.session(python=False)
def vendor(session):
    """Refresh the vendored copies of vendor/manifests.py inside each package."""
    session.run("python", "vendor/sync.py")

"""Evaluate CLIP models: zero-/few-shot classification, retrieval and detection; reports and a CI gate.

The Python API (what the `react-eval` CLI calls, by keyword):

    from react_eval import run, run_suite, compare, report, read_results

    run("ViT-B-32", "/data/wds_pets", task="zeroshot_classification", out="results/base",
        pretrained="laion400m_e32")
    verdict = compare("results/base", "results/new", max_drop=0.5, suite_mean=True, suite_max_drop=0.3)
    report(["results/base", "results/new"], out="report.html")

Names are imported on first use: `compare`, `report` and `read_results` never import torch; `run` and
`run_suite` do (they load models).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-eval")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

# public name -> the module defining it (no module shares a public name: importing a submodule sets the
# package attribute of its name, which would hide the function)
_API = {
    "run": "runner",
    "run_suite": "runner",
    "compare": "gate",
    "report": "reporting",
    "read_results": "results",
    "TASKS": "constants",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})

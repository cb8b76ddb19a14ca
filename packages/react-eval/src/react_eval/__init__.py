"""Evaluate CLIP models: zero-/few-shot classification, retrieval and detection; reports and a CI gate."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-eval")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

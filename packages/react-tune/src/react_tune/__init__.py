"""REACT customization: train gated blocks on a frozen open_clip model from a retrieval manifest."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-tune")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"


def __getattr__(name):  # `react_tune.load_model` without importing torch for `react-tune --version`
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    raise AttributeError(name)

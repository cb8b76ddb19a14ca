"""REACT customization: train gated blocks on a frozen open_clip model from a retrieval manifest."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-tune")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

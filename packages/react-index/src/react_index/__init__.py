"""Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-index")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

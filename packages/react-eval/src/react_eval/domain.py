"""Built-in class names, templates and per-dataset metrics (vendor/domains.json), and class/template files.

The file readers are the vendored contract's (`_domainfiles.py`, from vendor/domainfiles.py), shared with
react-index, so a class or template file means the same thing in both.
"""

from __future__ import annotations

from ._domainfiles import DomainError, builtin, load_classes, load_templates, read_entries

__all__ = ["DomainError", "builtin", "class_names", "dataset_metric", "load_templates", "read_entries"]


def class_names(spec: str) -> list[str]:
    """Class names from a built-in set or a .txt/.json file (synonyms, if any, are not used by react-eval)."""
    return [c.name for c in load_classes(spec)]


def dataset_metric(name: str) -> str | None:
    """The ELEVATER metric of a dataset known by its CLIP_benchmark name (None: accuracy)."""
    return builtin()["metrics"].get(name.removeprefix("wds/").replace("-", "_"))

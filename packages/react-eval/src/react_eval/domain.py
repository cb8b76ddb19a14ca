"""Built-in class names, templates and per-dataset metrics (vendor/domains.json), and class/template files.

The file readers are the vendored contract's (`_domainfiles.py`, from vendor/domainfiles.py), shared with
react-index, so a class or template file means the same thing in both.
"""

from __future__ import annotations

import re

from ._domainfiles import DomainError, builtin, load_classes, load_templates, read_entries

__all__ = ["DomainError", "builtin", "class_names", "dataset_key", "dataset_metric", "load_templates", "read_entries"]


def class_names(spec: str) -> list[str]:
    """Class names from a built-in set or a .txt/.json file (synonyms, if any, are not used by react-eval)."""
    return [c.name for c in load_classes(spec)]


def dataset_key(name: str) -> str:
    """The name results are paired by: CLIP_benchmark's `wds/vtab/cifar10` (its wds layout, downloaded as the
    folder `wds_vtab-cifar10`), react-eval's `wds/wds_vtab-cifar10` (`wds/` + the folder's name) and
    `vtab-cifar10` are one dataset: case, `/` / `_` / `-` and a `wds/` / `wds_` prefix aside. A plain `cifar10`
    (CLIP_benchmark's torchvision loader) pairs with `wds/cifar10`: the same test split, stored another way."""
    key = name.strip().casefold().removeprefix("wds/").removeprefix("wds_")
    return re.sub(r"[/_\s]+", "-", key).strip("-")


def dataset_metric(name: str) -> str | None:
    """The ELEVATER metric of a dataset known by its CLIP_benchmark name, in any spelling `dataset_key` pairs
    (`pets`, `wds/vtab/pets`, `wds/wds_vtab-pets`); None: accuracy."""
    metrics = builtin()["metrics"]
    key = dataset_key(name)
    for candidate in (key, key.removeprefix("vtab-")):
        if candidate.replace("-", "_") in metrics:
            return metrics[candidate.replace("-", "_")]
    return None

"""Built-in class names, templates and per-dataset metrics (vendor/domains.json), and template files."""

from __future__ import annotations

import functools
import json
from importlib import resources

import fsspec


@functools.cache
def builtin() -> dict:
    return json.loads(resources.files("react_eval").joinpath("domains.json").read_text())


def read_lines(uri: str) -> list[str]:
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_templates(spec: str | None, fallback: list[str] | None = None) -> list[str]:
    """A built-in set name, a file (one per line), the dataset's own templates, or the 80 OpenAI ones."""
    if spec is None:
        templates = fallback or builtin()["templates"]["openai_imagenet"]
    elif spec in builtin()["templates"]:
        templates = builtin()["templates"][spec]
    else:
        templates = read_lines(spec)
    templates = [t.replace("{}", "{c}") for t in templates]
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise ValueError(f"{spec}: template {bad[0]!r} has no {{}} or {{c}} for the class name")
    return templates


def dataset_metric(name: str) -> str | None:
    """The ELEVATER metric of a dataset known by its CLIP_benchmark name (None: accuracy)."""
    return builtin()["metrics"].get(name.removeprefix("wds/").replace("-", "_"))

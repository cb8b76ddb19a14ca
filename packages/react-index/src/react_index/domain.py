"""A target domain: class names (with optional synonyms) and prompt templates, built in or from files.

Built-in sets (`domains.json`, see vendor/make_domains.py): templates `openai_imagenet` (80),
`simple_imagenet` (7) and one set per CLIP_benchmark / ELEVATER dataset (`pets`, `food101`, …);
class names `imagenet1k` (the 1,000 OpenAI names), `coco80` and one set per CLIP_benchmark / ELEVATER
dataset (those CLIP_benchmark ships, and from OpenAI CLIP's prompts.md those it reads from torchvision).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import fsspec


class DomainError(ValueError):
    """Class names or templates that cannot be used."""


@dataclass(frozen=True)
class TargetClass:
    name: str
    synonyms: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


@functools.cache
def builtin() -> dict:
    return json.loads(resources.files("react_index").joinpath("domains.json").read_text())


def _read(uri: str) -> str:
    try:
        with fsspec.open(uri, "rt", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise DomainError(f"{uri}: no such file") from None


def _is_builtin(spec: str, table: str) -> bool:
    return spec in builtin()[table]


def load_templates(spec: str | None = None) -> list[str]:
    """A built-in set name or a file (txt, one per line; or a json list); `{}` and `{c}` mark the class."""
    spec = spec or "openai_imagenet"
    if _is_builtin(spec, "templates"):
        raw = builtin()["templates"][spec]
    else:
        if "/" not in spec and "." not in spec:
            names = ", ".join(sorted(builtin()["templates"]))
            raise DomainError(f"unknown template set {spec!r}; built-in sets: {names}; or pass a file")
        text = _read(spec)
        raw = json.loads(text) if spec.endswith(".json") else [line for line in text.splitlines() if line.strip()]
    templates = [t.replace("{}", "{c}") for t in raw]
    bad = [i for i, t in enumerate(templates) if "{c}" not in t]
    if bad:
        raise DomainError(f"{spec}: template {bad[0] + 1} ({templates[bad[0]]!r}) has no {{}} or {{c}} for the class")
    return templates


def load_classes(spec: str) -> list[TargetClass]:
    """A built-in name, a txt file (one class per line), a json list, or a json dict {class: [synonyms]}."""
    if _is_builtin(spec, "classnames"):
        return [TargetClass(n) for n in builtin()["classnames"][spec]]
    text = _read(spec)
    if spec.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            classes = [TargetClass(str(k), tuple(str(s) for s in (v if isinstance(v, list) else [v])))
                       for k, v in data.items()]
        elif isinstance(data, list):
            classes = [TargetClass(str(n)) for n in data]
        else:
            raise DomainError(f"{spec}: expected a json list of class names or a dict {{class: [synonyms]}}")
    else:
        classes = [TargetClass(line.strip()) for line in text.splitlines() if line.strip()]
    if not classes:
        raise DomainError(f"{spec}: no class names")
    names = [c.name for c in classes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DomainError(f"{spec}: class names must be distinct; repeated: {', '.join(dupes[:5])}")
    return classes


def prompts(classes: list[TargetClass], templates: list[str]) -> list[tuple[int, str, str]]:
    """(class index, template, prompt text) for every class name or synonym under every template."""
    return [(i, t, t.replace("{c}", name)) for i, c in enumerate(classes) for name in c.names for t in templates]

"""The model-loader protocol between react-eval and the packages that plug models into it.

Vendored into react-tune and react-eval as `_loader_protocol.py` by `nox -s vendor` (edit this source, never
a copy). react-eval finds loaders through the `react_eval.loaders` entry-point group: `--model KIND:SPEC`
calls the loader registered as KIND with `(spec, device)`, and it returns a LoadedModel. The two packages
never import each other; each has its own copy of this class, so react-eval checks what it gets by its
fields (`as_loaded`), not by its type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ._manifests import UserError


@dataclass
class LoadedModel:
    model: Any  # a torch module with encode_image(images) and encode_text(tokens)
    preprocess: Callable  # PIL image -> tensor, the model's eval transform
    tokenizer: Callable  # list[str] -> token tensor
    name: str  # the result files' `model` field; unique per model, e.g. "react:<checkpoint id>:ViT-B-32"
    pretrained: str  # the result files' `pretrained` field (a tag or weights file, "" for random init)
    lineage: list[dict] = field(default_factory=list)  # manifests it came from (a checkpoint's)
    base_name: str = ""  # the open_clip architecture underneath, when `name` is not one
    kind: str = "open_clip"  # the loader that made it

    def __post_init__(self):
        if not self.base_name:
            self.base_name = self.name


REQUIRED = ("model", "preprocess", "tokenizer", "name", "pretrained")


def as_loaded(obj, loader: str) -> LoadedModel:
    """A LoadedModel from whatever a loader returned (its own copy of the class, or a dict with the same fields);
    anything else is an error naming the loader and the missing field."""
    names = [f.name for f in fields(LoadedModel)]
    if isinstance(obj, dict):
        values = obj
    else:
        values = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    missing = [n for n in REQUIRED if values.get(n) is None]
    if missing:
        raise UserError(f"model loader '{loader}' returned {type(obj).__name__} without {', '.join(missing)}; "
                        "a loader must return a LoadedModel (see react_eval's loader protocol)")
    for n in ("encode_image", "encode_text"):
        if not callable(getattr(values["model"], n, None)):
            raise UserError(f"model loader '{loader}': its model has no {n}()")
    return LoadedModel(**{n: values[n] for n in names if n in values})

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
class TrainedClassifier:
    """A classifier a model carries (react-tune's `linear-head` variant, REAL-Linear). react-eval's zero-shot
    classification uses it instead of one built from the dataset's prompts alone, when the dataset's class names
    are exactly `classes` (by name; their order is mapped). With x the L2-normalised image feature, Z the zero-shot
    classifier of the dataset's classes from `templates` (built by react-eval as for any model) and
    w = `ensemble_weight`:

        logits = (1 - w) * 100 * x @ Z.T  +  w * (100 / logit_scale) * (x @ weight.T + bias)

    i.e. the ensemble the trainer chose w for, rescaled so that w = 0 is exactly react-eval's zero-shot logits."""
    classes: list[str]
    weight: Any  # (len(classes) x d) float32 array over L2-normalised image features
    bias: Any  # (len(classes),) float32 array
    ensemble_weight: float  # w in [0, 1]
    logit_scale: float  # the zero-shot logit scale the head was trained beside (> 0)
    templates: list[str]  # the prompts of the zero-shot part w was chosen with ({c} marks the class)
    kind: str = "linear-head"


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
    classifier: TrainedClassifier | None = None  # a trained classifier it carries (react-tune linear-head)

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
    if values.get("classifier") is not None:
        values = values | {"classifier": as_classifier(values["classifier"], loader)}
    return LoadedModel(**{n: values[n] for n in names if n in values})


def as_classifier(obj, loader: str) -> TrainedClassifier:
    """A TrainedClassifier from a loader's own copy of the class or a dict with its fields, checked: the weight has
    one row per class and a bias entry per class, 0 <= ensemble_weight <= 1 and logit_scale > 0."""
    import numpy as np

    names = [f.name for f in fields(TrainedClassifier)]
    values = dict(obj) if isinstance(obj, dict) else {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    missing = [n for n in names[:6] if values.get(n) is None]
    if missing:
        raise UserError(f"model loader '{loader}': its classifier has no {', '.join(missing)}")
    weight = np.asarray(values["weight"], dtype=np.float32)
    bias = np.asarray(values["bias"], dtype=np.float32)
    classes = [str(c) for c in values["classes"]]
    if weight.ndim != 2 or weight.shape[0] != len(classes) or bias.shape != (len(classes),):
        raise UserError(f"model loader '{loader}': its classifier's weight {list(weight.shape)} and bias "
                        f"{list(bias.shape)} do not fit its {len(classes)} classes")
    w, scale = float(values["ensemble_weight"]), float(values["logit_scale"])
    if not 0 <= w <= 1 or not scale > 0:
        raise UserError(f"model loader '{loader}': its classifier's ensemble_weight {w} must be in [0, 1] and "
                        f"logit_scale {scale} positive")
    return TrainedClassifier(**{n: values[n] for n in names if n in values} |
                             {"classes": classes, "weight": weight, "bias": bias, "ensemble_weight": w,
                              "logit_scale": scale, "templates": [str(t) for t in values["templates"]]})

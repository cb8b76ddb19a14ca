"""Models to evaluate: open_clip built in, anything else through the `react_eval.loaders` entry points.

`--model ViT-B-32 --pretrained laion400m_e32` loads open_clip; `--model KIND:SPEC` calls the loader
registered as KIND with `(spec, device)` (react-tune registers `react`, so `react:ckpt/` loads a REACT
checkpoint). Every model comes back as a LoadedModel (`_loader_protocol.py`, vendored): a plugin's result is
checked by its fields (`as_loaded`), so a loader may return its own copy of the class or a dict.

A result's `model` field is LoadedModel.name. It must tell the model apart from its base: a plugin that names
its model by the bare open_clip architecture (an older react-tune did) gets `KIND:<short id>:<name>`, the id
taken from the manifest it came from (else from the spec), so CLIP_benchmark's `build` never merges the two.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import open_clip

from ._loader_protocol import LoadedModel, as_loaded
from ._manifests import ManifestError
from ._openclip import create

OPEN_CLIP_SCHEMAS = ("hf-hub", "local-dir")


def installed_loaders() -> dict:
    return {e.name: e for e in entry_points(group="react_eval.loaders")}


def _short_id(loaded: LoadedModel, spec: str) -> str:
    for entry in loaded.lineage:
        if entry.get("id"):
            return str(entry["id"]).rsplit(":", 1)[-1][:12]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.rstrip("/")).strip("_")[-40:] or "model"


def distinct_name(loaded: LoadedModel, kind: str, spec: str) -> str:
    """The plugin's name, unless it is a bare open_clip architecture (then the base model's results would carry the
    same `model`): `KIND:<short id>:<name>`."""
    if loaded.name == loaded.base_name and loaded.name in open_clip.list_models():
        return f"{kind}:{_short_id(loaded, spec)}:{loaded.name}"
    return loaded.name


def load(model: str, pretrained: str | None = None, device: str = "cpu") -> LoadedModel:
    kind, _, spec = model.partition(":")
    if spec and kind not in OPEN_CLIP_SCHEMAS:
        loaders = installed_loaders()
        if kind not in loaders:
            hint = " (pip install react-tune provides 'react')" if kind == "react" else ""
            raise ManifestError(f"no model loader named '{kind}' is installed{hint}; installed loaders: "
                                f"{', '.join(['open_clip', *sorted(loaders)])}")
        loaded = as_loaded(loaders[kind].load()(spec, device), kind)
        loaded.kind = kind
        loaded.name = distinct_name(loaded, kind, spec)
        loaded.model.eval()
        return loaded
    net, _, preprocess, tokenizer, _ = create(model, pretrained)  # unknown names, pickles, foreign weights: named
    return LoadedModel(model=net.eval().to(device), preprocess=preprocess, tokenizer=tokenizer,
                       name=model, pretrained=pretrained or "", lineage=[], base_name=model, kind="open_clip")

"""Models to evaluate: open_clip built in, anything else through the `react_eval.loaders` entry points.

`--model ViT-B-32 --pretrained laion400m_e32` loads open_clip; `--model KIND:SPEC` calls the loader
registered as KIND (react-tune registers `react`, so `react:ckpt/` loads a REACT checkpoint). A
loader returns a dict: model (with encode_image / encode_text), preprocess, tokenizer, name,
pretrained, lineage.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import open_clip

from ._manifests import ManifestError, resolve_model

OPEN_CLIP_SCHEMAS = ("hf-hub", "local-dir")


def installed_loaders() -> dict:
    return {e.name: e for e in entry_points(group="react_eval.loaders")}


def load(model: str, pretrained: str | None = None, device: str = "cpu") -> dict:
    kind, _, spec = model.partition(":")
    if spec and kind not in OPEN_CLIP_SCHEMAS:
        loaders = installed_loaders()
        if kind not in loaders:
            hint = " (pip install react-tune provides 'react')" if kind == "react" else ""
            raise ManifestError(f"no model loader named '{kind}' is installed{hint}; installed loaders: "
                                f"{', '.join(['open_clip', *sorted(loaders)])}")
        loaded = loaders[kind].load()(spec, device)
        loaded["model"].eval()
        return loaded
    record, weights = resolve_model(model, pretrained)
    net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=weights)
    return {"model": net.eval().to(device), "preprocess": preprocess, "tokenizer": open_clip.get_tokenizer(model),
            "name": model, "pretrained": pretrained or "", "lineage": [], "record": record}

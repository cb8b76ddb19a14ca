"""The `react` model loader that react-eval finds through the `react_eval.loaders` entry point.

`react-eval run --model react:CKPT_DIR` calls `load_for_eval("CKPT_DIR", device)`; the returned dict
is the loader protocol react-eval expects (docs/react-tune.md).
"""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .manifest import lineage_entry


def load_for_eval(spec: str, device: str = "cpu") -> dict:
    model, preprocess, tokenizer, manifest = load_checkpoint(spec, device)
    base = manifest["base_model"]
    return {"model": model, "preprocess": preprocess, "tokenizer": tokenizer, "name": base["name"],
            "pretrained": base["pretrained"], "lineage": [lineage_entry(manifest, spec.rstrip("/") + "/manifest.json")]}

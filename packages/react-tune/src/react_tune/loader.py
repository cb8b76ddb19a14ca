"""The `react` model loader that react-eval finds through the `react_eval.loaders` entry point.

`react-eval run --model react:CKPT_DIR` calls `load_for_eval("CKPT_DIR", device)`, which returns a LoadedModel
(`_loader_protocol.py`, vendored in both packages). Its `name` is `react:<checkpoint id>:<base model>`, so result
files (and CLIP_benchmark's model + pretrained key) never mistake the customized model for its base.
"""

from __future__ import annotations

from ._loader_protocol import LoadedModel
from ._manifests import manifest_uri
from .checkpoint import load_checkpoint
from .linear_head import VARIANT, load_head
from .manifest import CHECKPOINT, lineage_entry, read_manifest


def short_id(manifest: dict) -> str:
    """The first 12 hex digits of a manifest's content id."""
    return manifest["id"].split(":", 1)[-1][:12]


def load_for_eval(spec: str, device: str = "cpu") -> LoadedModel:
    """The checkpoint folder `spec` as react-eval's LoadedModel (the `react` entry point; react-eval calls it with
    (spec, device)). A gated-image / locked-text checkpoint is its customized model; a linear-head one is the frozen
    base model carrying its trained classifier (`classifier`), which react-eval's zero-shot classification uses."""
    classifier = None
    if read_manifest(manifest_uri(spec), CHECKPOINT)["variant"] == VARIANT:
        model, preprocess, tokenizer, classifier, manifest = load_head(spec, device)
    else:
        model, preprocess, tokenizer, manifest = load_checkpoint(spec, device=device)
    base = manifest["base_model"]
    return LoadedModel(model=model, preprocess=preprocess, tokenizer=tokenizer,
                       name=f"react:{short_id(manifest)}:{base['name']}", pretrained=base["pretrained"],
                       lineage=[lineage_entry(manifest, manifest_uri(spec))], base_name=base["name"], kind="react",
                       classifier=classifier)

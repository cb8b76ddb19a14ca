"""The frozen-text cache: in both variants the text tower never changes, so a caption's embedding is
computed once per retrieval set (distinct captions only, batched) and reused every epoch.

Cached as safetensors in CACHE_DIR/{key}.safetensors, keyed by the model record and the retrieval
manifest id: `features` (distinct captions × d, L2-normalised) and `index` (row → feature row).
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ._manifests import local_atomic_path


def cache_key(model_record: dict, manifest_id: str) -> str:
    blob = json.dumps({"model": model_record, "manifest": manifest_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@torch.inference_mode()
def encode_captions(model, tokenizer, captions: list[str], device, batch_size: int = 512) -> torch.Tensor:
    out = []
    for lo in tqdm(range(0, len(captions), batch_size), desc="text cache", unit="batch", dynamic_ncols=True):
        tokens = tokenizer(captions[lo:lo + batch_size]).to(device)
        out.append(model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.text_projection.shape[-1])


class CaptionFeatures:
    """Row → normalised caption embedding, stored once per distinct caption (10M rows stay small)."""

    def __init__(self, features: torch.Tensor, index: torch.Tensor):
        self.features, self.index = features, index

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.features[self.index[rows]]


def caption_features(model, tokenizer, captions: list[str], cache_dir: str | None, key: str, device,
                     batch_size: int = 512) -> CaptionFeatures:
    """Normalised caption embeddings of every row, from the cache when it has them."""
    path = os.path.join(cache_dir, f"{key}.safetensors") if cache_dir else None
    if path and os.path.exists(path):
        cached = load_file(path)
        return CaptionFeatures(cached["features"], cached["index"])
    distinct = sorted(set(captions))
    position = {c: i for i, c in enumerate(distinct)}
    features = encode_captions(model, tokenizer, distinct, device, batch_size)
    index = torch.tensor([position[c] for c in captions], dtype=torch.long)
    if path:
        with local_atomic_path(path) as tmp:  # renamed into place only when complete
            save_file({"features": features.contiguous(), "index": index}, tmp)
    return CaptionFeatures(features, index)

"""The frozen-text cache: in both variants the text tower never changes, so a caption's embedding is
computed once per retrieval set (distinct captions only, batched) and reused every epoch, by every rank.

Stored in CACHE_DIR, keyed by the model record and the retrieval manifest id:

    {key}.features.npy   distinct captions × d, float16, L2-normalised (sorted caption order)
    {key}.index.npy      row → feature row (int32; int64 above 2^31 distinct captions)
    {key}.json           written last: the cache is complete (rows, distinct captions, width)

Each file is written under a temporary name and renamed into place. Both arrays are opened memory-mapped,
so every rank on a machine shares one copy in the page cache instead of holding float32 features each (10M
captions × 512 × 2 B = 10 GB on disk, only the rows a step touches in memory). Rank 0 computes the cache;
the other ranks wait for its `{key}.json` (no process group needed, and no collective timeout while a large
set encodes), and a resumed run reads it without encoding anything. CACHE_DIR must be visible to every rank
(the default, OUT/text-cache, is: OUT is shared for --resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from ._manifests import local_atomic_path

log = logging.getLogger("react_tune")
FORMAT = 2  # part of the key: a cache written in another layout is never read as this one


def cache_key(model_record: dict, manifest_id: str) -> str:
    blob = json.dumps({"model": model_record, "manifest": manifest_id, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_paths(cache_dir: str, key: str) -> dict[str, str]:
    return {part: os.path.join(cache_dir, f"{key}.{ext}")
            for part, ext in (("features", "features.npy"), ("index", "index.npy"), ("done", "json"))}


@torch.inference_mode()
def encode_captions(model, tokenizer, captions: list[str], device) -> torch.Tensor:
    """Normalised float32 features of one batch of captions."""
    return model.encode_text(tokenizer(captions).to(device), normalize=True).float().cpu()


class CaptionFeatures:
    """Row → normalised caption embedding (float32 out), stored once per distinct caption as float16."""

    def __init__(self, features: np.ndarray, index: np.ndarray):
        self.features, self.index = features, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        picked = self.features[np.asarray(self.index[rows.numpy()])]
        return torch.from_numpy(np.asarray(picked, dtype=np.float32))


def distinct_captions(batches) -> tuple[pa.Array, np.ndarray]:
    """(distinct captions in sorted order, row → position among them), computed in Arrow (no Python strings)
    over `batches()` (an iterable of caption arrays, read twice) so the whole column is never held at once."""
    parts = [pc.unique(batch) for batch in batches()]
    distinct = pc.unique(pa.chunked_array(parts, pa.string()).combine_chunks()) if parts else pa.array([], pa.string())
    distinct = distinct.take(pc.sort_indices(distinct))
    dtype = np.int32 if len(distinct) < 2 ** 31 else np.int64
    index = [pc.index_in(batch, value_set=distinct).to_numpy(zero_copy_only=False).astype(dtype)
             for batch in batches()]
    return distinct, np.concatenate(index) if index else np.zeros(0, dtype)


def _encode_into(model, tokenizer, distinct: pa.Array, device, batch_size: int, path: str | None) -> np.ndarray:
    """Features of `distinct` as float16, written batch by batch into a .npy at `path` (memory-mapped) or in
    memory; returns the array."""
    out = None
    for lo in tqdm(range(0, len(distinct), batch_size), desc="text cache", unit="batch", dynamic_ncols=True):
        features = encode_captions(model, tokenizer, distinct.slice(lo, batch_size).to_pylist(), device)
        if out is None:
            shape = (len(distinct), features.shape[1])
            out = np.lib.format.open_memmap(path, "w+", np.float16, shape) if path else np.empty(shape, np.float16)
        out[lo:lo + len(features)] = features.numpy().astype(np.float16)
    if out is None:  # no captions at all
        out = np.zeros((0, 0), np.float16)
    if isinstance(out, np.memmap):
        out.flush()
    return out


def build_cache(model, tokenizer, captions, cache_dir: str | None, key: str, device,
                batch_size: int = 512) -> CaptionFeatures:
    """Encode the distinct captions once (`captions()`: the caption column's batches); with `cache_dir`, write
    the three files (the marker last)."""
    distinct, index = distinct_captions(captions)
    if not cache_dir:
        return CaptionFeatures(_encode_into(model, tokenizer, distinct, device, batch_size, None), index)
    paths = cache_paths(cache_dir, key)
    with local_atomic_path(paths["index"]) as tmp, open(tmp, "wb") as f:
        np.save(f, index)
    with local_atomic_path(paths["features"]) as tmp:
        features = _encode_into(model, tokenizer, distinct, device, batch_size, tmp)
        del features  # the memmap is closed before the rename
    with local_atomic_path(paths["done"]) as tmp, open(tmp, "w") as f:
        json.dump({"rows": len(index), "distinct": len(distinct), "format": FORMAT}, f)
    return open_cache(cache_dir, key)


def open_cache(cache_dir: str, key: str) -> CaptionFeatures | None:
    """The complete cache, memory-mapped, or None when its marker is not there yet."""
    paths = cache_paths(cache_dir, key)
    if not os.path.exists(paths["done"]):
        return None
    return CaptionFeatures(np.load(paths["features"], mmap_mode="r"), np.load(paths["index"], mmap_mode="r"))


def caption_features(model, tokenizer, captions, cache_dir: str | None, key: str, device, rank: int = 0,
                     batch_size: int = 512, poll_s: float = 0.5) -> CaptionFeatures:
    """Normalised caption embeddings of every row: from the cache when it is complete; else rank 0 builds it
    (`captions()` gives the caption column's batches, read only then) and the other ranks wait for its marker."""
    if cache_dir:
        cached = open_cache(cache_dir, key)
        if cached is not None:
            return cached
    if rank == 0 or not cache_dir:
        features = build_cache(model, tokenizer, captions, cache_dir, key, device, batch_size)
        pa.default_memory_pool().release_unused()  # the caption column's pages go back before workers fork
        return features
    log.info("rank %d: waiting for rank 0 to write the text cache %s", rank, cache_paths(cache_dir, key)["done"])
    while (cached := open_cache(cache_dir, key)) is None:
        time.sleep(poll_s)
    return cached

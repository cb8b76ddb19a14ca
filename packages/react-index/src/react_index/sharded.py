"""Sharded IVF builds (`react-index build --shards N`): the trained empty index is written once, N shard indexes
are filled from consecutive row ranges of the store (global row ids kept), then merged into on-disk inverted
lists (`{modality}.ivfdata`, faiss `OnDiskInvertedLists`).
"""

from __future__ import annotations

import os

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk
from tqdm import tqdm

from ._manifests import UserError, local_atomic_path


def _write_index(index, path: str) -> None:
    with local_atomic_path(path) as tmp:  # a killed build's temp file is removed by the next one
        faiss.write_index(index, tmp)


def shard_path(folder: str, modality: str, s: int) -> str:
    return f"{folder}/{modality}.shard{s:03d}.index"


def trained_path(folder: str, modality: str) -> str:
    return f"{folder}/{modality}.trained.index"


def fill_range(index, store, modality: str, lo: int, hi: int, chunk_rows: int, bar) -> None:
    """Add rows [lo, hi) of the store to `index` under their global row ids."""
    for start, chunk in store.iter_chunks(modality, chunk_rows):
        a, b = max(lo, start), min(hi, start + len(chunk))
        if a < b:
            index.add_with_ids(np.ascontiguousarray(chunk[a - start:b - start]), np.arange(a, b, dtype=np.int64))
            bar.update(b - a)


def build_shards(index, store, modality: str, folder: str, key: str, n_shards: int, chunk_rows: int, seed: int,
                 n_train: int, rng, train):
    """Train `index` (with `train(index, store, modality, n_train, rng)`), fill `n_shards` shard indexes and merge
    them into on-disk lists; returns the merged index."""
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        raise UserError(f"--shards needs an IVF index; {key!r} is not one: build it with --shards 1 or pass an "
                        "IVF --index-key") from None
    n = store.n
    print(f"  {modality}: training {key} on {n_train:,} of {n:,} vectors")
    train(index, store, modality, n_train, rng)
    trained = trained_path(folder, modality)
    _write_index(index, trained)
    bar = tqdm(total=n, desc=f"  {modality}: add", unit="vec", unit_scale=True, dynamic_ncols=True)
    bounds = np.linspace(0, n, n_shards + 1).astype(np.int64)
    parts = []
    for s in range(n_shards):
        part = shard_path(folder, modality, s)
        if not os.path.exists(part):  # resume: finished shards are kept
            shard_index = faiss.read_index(trained)
            fill_range(shard_index, store, modality, int(bounds[s]), int(bounds[s + 1]), chunk_rows, bar)
            _write_index(shard_index, part)
        else:
            bar.update(int(bounds[s + 1] - bounds[s]))
        parts.append(part)
    bar.close()
    index = faiss.read_index(trained)
    merge_ondisk(index, parts, f"{folder}/{modality}.ivfdata")
    return index


def cleanup(folder: str, modality: str, n_shards: int) -> None:
    """Remove the trained index and the shard files once the merged index is written."""
    for leftover in [trained_path(folder, modality)] + [shard_path(folder, modality, s) for s in range(n_shards)]:
        if os.path.exists(leftover):
            os.remove(leftover)

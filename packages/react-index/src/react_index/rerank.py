"""Exact re-ranking of approximate candidates with the store's own vectors.

Compressed codes (PQ, and to a lesser degree SQ8) cannot order close neighbours: at 10M vectors under a 4 GB
budget a PQ index alone finds a fraction of the true top-10. Searching k′ = r·k candidates and re-scoring them
exactly with the float16 vectors of the store (memory-mapped on disk, never loaded whole; each batch's rows
read in sorted order) recovers the order at the cost of r·k row reads per query. This is faiss's
IndexRefineFlat without keeping a float copy of every vector in RAM.
"""

from __future__ import annotations

import numpy as np

from .store import Store

CANDIDATES_PER_BATCH = 1 << 16  # gathered candidate vectors per step: 65,536 × d × 4 bytes (128 MiB at d=512)


def rerank(store: Store, modality: str, queries: np.ndarray, candidates: np.ndarray, k: int,
           ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best candidates of each query by exact inner product; ids −1 where a query has
    fewer than k valid candidates (−1 in `candidates` marks none)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, width = candidates.shape
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    step = max(1, CANDIDATES_PER_BATCH // max(1, width))
    for lo in range(0, nq, step):
        cand = candidates[lo:lo + step]
        valid = cand >= 0
        unique, inverse = np.unique(cand[valid], return_inverse=True)  # sorted: one ordered pass over the store
        vectors = gather_sorted(store, modality, unique)
        query_of = np.nonzero(valid)[0]
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        scores[valid] = np.einsum("nd,nd->n", vectors[inverse], queries[lo + query_of])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(cand, top, axis=1), -1)
        out_scores[lo:lo + step, :top.shape[1]] = top_scores
        out_ids[lo:lo + step, :top.shape[1]] = top_ids
    return out_scores, out_ids


def gather_sorted(store: Store, modality: str, ids: np.ndarray) -> np.ndarray:
    """float32 rows of sorted `ids`, read shard by shard through the memory map in ascending order."""
    offsets = store.offsets()
    out = np.empty((len(ids), store.dim), dtype=np.float32)
    bounds = np.searchsorted(ids, offsets)
    for s in range(len(offsets) - 1):
        a, b = int(bounds[s]), int(bounds[s + 1])
        if a < b:
            out[a:b] = store.shard_vectors(modality, s)[ids[a:b] - offsets[s]]
    return out


def search_reranked(index, store: Store, modality: str, queries: np.ndarray, k: int, factor: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` for k·factor candidates, re-ranked exactly to the top k (factor 1: the index's own order)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if factor <= 1:
        return index.search(queries, k)
    _, candidates = index.search(queries, k * factor)
    return rerank(store, modality, queries, candidates, k)

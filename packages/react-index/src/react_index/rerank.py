"""Exact re-ranking of approximate candidates with the store's own vectors.

Compressed codes (PQ, and to a lesser degree SQ8) cannot order close neighbours: at 10M vectors under a 4 GB
budget a PQ index alone finds a fraction of the true top-10. Searching k′ = r·k candidates and re-scoring them
exactly with the float16 vectors of the store (memory-mapped on disk, never loaded whole; each batch's rows
read in sorted order) recovers the order at the cost of r·k row reads per query. This is faiss's
IndexRefineFlat without keeping a float copy of every vector in RAM.

Memory stays bounded whatever k and r: queries are searched in batches of at most CANDIDATES_PER_SEARCH
candidates, and re-scored in steps that gather at most CANDIDATES_PER_BATCH distinct rows (queries of one
class share most of their candidates, so each distinct row is read once per step).
"""

from __future__ import annotations

import faiss
import numpy as np

from .store import Store

CANDIDATES_PER_BATCH = 1 << 16  # candidates re-scored per step: ≤ 65,536 rows × d × 4 bytes (128 MiB at d=512)
CANDIDATES_PER_SEARCH = 1 << 20  # candidates (ids + scores) one index.search call returns: 12 MiB


def is_compressed(any_index) -> bool:
    """True when the index scores with lossy codes (PQ, SQ8, SQ4, a dimension-reducing transform, …), so that
    exact re-ranking can reorder its candidates; False for Flat, IVF-Flat, HNSW-Flat and fp16 scalar codes
    (float16, like the store: re-scoring would reproduce their scores)."""
    index = faiss.downcast_index(any_index)  # a new wrapper: `any_index` keeps the object alive meanwhile
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            transform = faiss.downcast_VectorTransform(index.chain.at(i))
            if transform.d_out < transform.d_in:  # PCA / OPQ to fewer dimensions
                return True
        return is_compressed(index.index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return is_compressed(index.index)
    if isinstance(index, faiss.IndexHNSW):
        return is_compressed(index.storage)
    if isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexRefine)):
        return False
    if isinstance(index, (faiss.IndexScalarQuantizer, faiss.IndexIVFScalarQuantizer)):
        return index.sq.qtype != faiss.ScalarQuantizer.QT_fp16
    return True  # PQ, residual / additive quantizers, binary codes, anything unknown: let tuning decide


def rerank(store: Store, modality: str, queries: np.ndarray, candidates: np.ndarray, k: int,
           ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best candidates of each query by exact inner product; ids −1 where a query has
    fewer than k valid candidates (−1 in `candidates` marks none)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.int64)
    nq, width = candidates.shape
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    step = max(1, CANDIDATES_PER_BATCH // max(1, width))
    keep = min(k, width)
    for lo in range(0, nq, step):
        cand = candidates[lo:lo + step]
        valid = cand >= 0
        unique, inverse = np.unique(cand[valid], return_inverse=True)  # sorted: one ordered pass over the store
        vectors = gather_sorted(store, modality, unique)
        local = np.full(cand.shape, -1, dtype=np.int64)
        local[valid] = inverse
        scores = np.empty(cand.shape, dtype=np.float32)  # −inf where local is −1
        q = queries[lo:lo + len(cand)]
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(scores), faiss.swig_ptr(q), faiss.swig_ptr(vectors),
                                         faiss.swig_ptr(local), store.dim, len(cand), width)
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if keep < width else \
            np.broadcast_to(np.arange(width), cand.shape)
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        out_scores[lo:lo + len(cand), :keep] = top_scores
        out_ids[lo:lo + len(cand), :keep] = np.where(np.isfinite(top_scores), np.take_along_axis(cand, top, axis=1),
                                                     -1)
    return out_scores, out_ids


def gather_sorted(store: Store, modality: str, ids: np.ndarray) -> np.ndarray:
    """float32 rows of sorted `ids`, read shard by shard through the memory map in ascending order (float16 rows
    widened by faiss's fp16 decoder: twice as fast as numpy's cast)."""
    offsets = store.offsets()
    out = np.empty((len(ids), store.dim), dtype=np.float32)
    bounds = np.searchsorted(ids, offsets)
    for s in range(len(offsets) - 1):
        a, b = int(bounds[s]), int(bounds[s + 1])
        if a < b:
            rows = store.shard_vectors(modality, s)[ids[a:b] - offsets[s]]
            if rows.dtype == np.float16:
                codes = np.ascontiguousarray(rows).view(np.uint8)
                _fp16_decoder(store.dim).decode_c(faiss.swig_ptr(codes), faiss.swig_ptr(out[a:b]), b - a)
            else:
                out[a:b] = rows
    return out


def _fp16_decoder(d: int):
    if d not in _FP16:
        _FP16[d] = faiss.ScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16)
    return _FP16[d]


_FP16: dict = {}


def search_reranked(index, store: Store, modality: str, queries: np.ndarray, k: int, factor: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` for k·factor candidates, re-ranked exactly to the top k (factor 1: the index's own order
    and scores). Queries go in batches of at most CANDIDATES_PER_SEARCH candidates."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if factor <= 1:
        return index.search(queries, k)
    width = k * factor
    step = max(1, CANDIDATES_PER_SEARCH // width)
    if len(queries) <= step:
        return rerank(store, modality, queries, index.search(queries, width)[1], k)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), step):
        q = queries[lo:lo + step]
        scores[lo:lo + len(q)], ids[lo:lo + len(q)] = rerank(store, modality, q, index.search(q, width)[1], k)
    return scores, ids

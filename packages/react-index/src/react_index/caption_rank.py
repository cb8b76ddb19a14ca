"""Ranking caption matches: Neural Priming's filter, class-balanced.

Every class's candidates (the rows whose caption names it, captions.caption_candidates) are scored by the inner
product of the class's query vector (its prompt-ensemble text embedding, L2-normalised) with the row's stored
vector — the image embedding (`modality="image"`, Neural Priming) or the caption's text embedding
(`modality="text"`, `--rank text`) — and each class keeps its K best: class-balanced, a row may serve several
classes (keep-all, as REACT). Scores are exact (the store's float16 vectors widened to float32).

No torch: the query vectors are given (computed by the caller, or read with `--query-embeddings`). Memory is
bounded by the step size whatever the number of candidates: rows are gathered in sorted order, at most
rerank.CANDIDATES_PER_BATCH at a time, and only the running top K per class is kept.
"""

from __future__ import annotations

import numpy as np

from .rerank import CANDIDATES_PER_BATCH, gather_sorted
from .store import Store


def rank_candidates(store: Store, queries: np.ndarray, candidates: list[np.ndarray], k: int,
                    modality: str = "image", step: int = CANDIDATES_PER_BATCH,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class, row id, score) of each class's k best candidates by exact inner product with `queries[class]`,
    classes in order, each class's rows by descending score (ties: lower row id first). A class with fewer than
    k candidates keeps them all; one with none contributes nothing. The same (class, ids, score) triple
    query.combine produces, so query.select / join_metadata apply unchanged."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) != len(candidates):
        raise ValueError(f"{len(queries)} query vectors for {len(candidates)} classes")
    if queries.ndim != 2 or queries.shape[1] != store.dim:
        raise ValueError(f"query vectors of shape {queries.shape}; the store holds width {store.dim}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    out_cls, out_ids, out_score = [], [], []
    for c, rows in enumerate(candidates):
        rows = np.unique(np.asarray(rows, dtype=np.int64))  # sorted, once each
        if rows.size and (rows[0] < 0 or rows[-1] >= store.n):
            raise ValueError(f"class {c}: candidate rows outside the store's 0…{store.n - 1}")
        best_ids = np.empty(0, np.int64)
        best_score = np.empty(0, np.float32)
        for lo in range(0, len(rows), step):
            ids = rows[lo:lo + step]
            score = gather_sorted(store, modality, ids) @ queries[c]
            best_ids, best_score = _top(np.concatenate([best_ids, ids]), np.concatenate([best_score, score]), k)
        out_cls.append(np.full(len(best_ids), c, np.int64))
        out_ids.append(best_ids)
        out_score.append(best_score)
    if not out_cls:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_cls), np.concatenate(out_ids), np.concatenate(out_score)


def _top(ids: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best by score (ties: lower id), ordered best first."""
    score = np.where(np.isfinite(score), score, -np.inf).astype(np.float32)  # a NaN row ranks last, never first
    order = np.lexsort((ids, -score))[:k]
    return ids[order], score[order]

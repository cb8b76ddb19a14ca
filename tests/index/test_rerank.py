"""Exact re-ranking of compressed-index candidates with the store's float16 vectors."""

import faiss
import numpy as np
import pytest
from stores import make_store

from react_index.rerank import rerank, search_reranked
from react_index.store import open_store


@pytest.fixture(scope="module")
def pq_case(tmp_path_factory):
    """A coarse PQ index over dense clusters: PQ alone cannot order the close neighbours."""
    root = tmp_path_factory.mktemp("rerank")
    store_dir, image, text = make_store(root, 20_000, 64, 6_000, n_clusters=20)
    store = open_store(str(store_dir))
    index = faiss.index_factory(64, "IVF16,PQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(image[:10_000].astype(np.float32))
    index.add(image.astype(np.float32))
    faiss.extract_index_ivf(index).nprobe = 16
    queries = text[:200].astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = image.astype(np.float32) @ queries.T
    truth = np.argsort(-exact, axis=0)[:10].T
    return store, index, queries, truth, exact


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def test_reranking_recovers_the_neighbours_pq_alone_misorders(pq_case):
    store, index, queries, truth, _ = pq_case
    plain = _recall(index.search(queries, 10)[1], truth)
    recalls = [_recall(search_reranked(index, store, "image", queries, 10, factor=f)[1], truth) for f in (4, 16)]
    assert plain < 0.4 and plain < recalls[0] < recalls[1] and recalls[1] > 0.75, (plain, recalls)  # 0.27, .52, .82


def test_rerank_scores_are_exact_and_padding_is_kept(pq_case):
    store, _, queries, _, exact = pq_case
    candidates = np.array([[5, 17, 3, -1], [-1, -1, -1, -1], [8, 8000, 12_345, 19_999]])
    scores, ids = rerank(store, "image", queries[:3], candidates, 3)
    stored = store.rows("image", np.array([5, 17, 3]))
    assert np.allclose(scores[0], np.sort(stored @ queries[0])[::-1], atol=1e-6)  # float16 rows, exact products
    assert set(ids[0]) == {5, 17, 3} and (ids[1] == -1).all() and np.isneginf(scores[1]).all()
    assert np.allclose(scores[2], np.sort(exact[[8, 8000, 12_345, 19_999], 2])[::-1][:3], atol=2e-3)
    assert search_reranked(faiss.IndexFlatIP(64), store, "image", queries[:2], 3, factor=1)[1].shape == (2, 3)

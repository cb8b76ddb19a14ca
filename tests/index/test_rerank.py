"""Exact re-ranking of compressed-index candidates with the store's float16 vectors: the primitives, the
(nprobe, r) tuning in `build` (and for adopted indexes), and `query` searching through it."""

import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from stores import make_store

from react_index import build as build_module
from react_index import query as query_module
from react_index import rerank as rerank_module
from react_index._manifests import UserError
from react_index.build import build_index, exact_neighbours, tune_search
from react_index.cli import main
from react_index.domain import TargetClass
from react_index.query import Queries, Selection, _labels_by_row, retrieve
from react_index.rerank import is_compressed, rerank, search_reranked
from react_index.store import open_store

PQ_KEY = "IVF16,PQ32x4fs"  # 4-bit fast-scan PQ codes: alone it finds about a third of the true top-10 here


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


@pytest.fixture(scope="module")
def pq_builds(pq_case, tmp_path_factory):
    """`build_index --index-key PQ_KEY` on the same store, re-ranking tuned (auto) and off."""
    store = pq_case[0]
    root = tmp_path_factory.mktemp("pqbuild")
    built = {mode: build_index(store.uri, str(root / mode), index_key=PQ_KEY, target_recall=0.9, queries=200,
                               modalities=["image"], rerank=mode) for mode in ("auto", "off")}
    return root, built


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
    wide_scores, wide_ids = rerank(store, "image", queries[:3], candidates, 6)  # k > candidates: padded with -1
    assert (wide_ids[0, 3:] == -1).all() and np.isneginf(wide_scores[0, 3:]).all()


def test_batching_bounds_memory_without_changing_results(pq_case, monkeypatch):
    store, index, queries, _, _ = pq_case
    whole = search_reranked(index, store, "image", queries, 10, factor=8)
    monkeypatch.setattr(rerank_module, "CANDIDATES_PER_SEARCH", 250)  # 3 queries per index.search call
    monkeypatch.setattr(rerank_module, "CANDIDATES_PER_BATCH", 170)  # 2 queries' candidates gathered at a time
    batched = search_reranked(index, store, "image", queries, 10, factor=8)
    assert np.array_equal(whole[1], batched[1]) and np.allclose(whole[0], batched[0])


def test_which_indexes_count_as_compressed():
    expect = {"Flat": False, "HNSW32": False, "IVF64,Flat": False, "IVF64,SQfp16": False, "IVF64,Flat,RFlat": False,
              "IVF64,SQ8": True, "IVF64,SQ4": True, "IVF64,PQ8": True, "IVF64,PQ16x4fs": True, "HNSW32,SQ8": True,
              "OPQ8_32,IVF64_HNSW32,PQ8x8": True, "PCA32,IVF64,Flat": True}
    assert {key: is_compressed(faiss.index_factory(64, key, faiss.METRIC_INNER_PRODUCT)) for key in expect} == expect


def test_tune_search_picks_nprobe_and_r_together_for_any_index(pq_case):
    """The API `react-index adopt` uses for an index built elsewhere (here: plain faiss)."""
    store, index, queries, _, _ = pq_case
    truth_scores, _ = exact_neighbours(store, "image", queries, 10)
    params, factor, recall, qps = tune_search(index, store, "image", queries, truth_scores, 0.9)
    assert factor > 1 and recall >= 0.9 and qps > 0 and set(params) == {"nprobe"}
    assert faiss.extract_index_ivf(index).nprobe == params["nprobe"]  # left applied
    plain = tune_search(index, store, "image", queries, truth_scores, 0.9, rerank=False)
    assert plain[1] == 1 and plain[2] < 0.5  # PQ8 alone: far below the target, the best recall is kept
    fixed = tune_search(index, store, "image", queries, truth_scores, 0.9, rerank=4)
    assert fixed[1] == 4 and plain[2] < fixed[2] < recall
    flat = faiss.IndexFlatIP(64)
    flat.add(np.concatenate([c for _, c in store.iter_chunks("image")]))
    assert tune_search(flat, store, "image", queries, truth_scores, 0.9)[:3] == ({}, 1, 1.0)  # exact: never re-ranked
    with pytest.raises(UserError, match="--rerank must be 'auto', 'off' or a whole number"):
        tune_search(index, store, "image", queries, truth_scores, 0.9, rerank="sometimes")
    own = np.arange(0, 20_000, 100)  # stored vectors as queries, their own row left out (the text index's case)
    own_queries = store.rows("image", own)
    own_truth, _ = exact_neighbours(store, "image", own_queries, 10, exclude=own)
    params, factor, recall, _ = tune_search(index, store, "image", own_queries, own_truth, 0.9, exclude=own)
    assert factor > 1 and recall >= 0.9
    found = build_module.search(index, own_queries, 10, own, store, "image", factor)
    assert not (found == own[:, None]).any() and (found >= 0).all()


def test_build_tunes_the_rerank_factor_to_reach_a_target_pq_alone_misses(pq_builds):
    root, built = pq_builds
    auto, off = built["auto"]["indexes"]["image"], built["off"]["indexes"]["image"]
    assert auto["rerank"] > 1 and auto["measured"]["recall"] >= 0.9, auto
    assert off["rerank"] == 1 and off["measured"]["recall"] < 0.5, off
    on_disk = json.loads((root / "auto" / "manifest.json").read_text())["indexes"]["image"]
    assert on_disk["rerank"] == auto["rerank"] and on_disk["search_params"] == auto["search_params"]
    info = CliRunner().invoke(main, ["info", str(root / "auto")])
    assert f"{auto['rerank']}·k candidates re-ranked exactly" in info.output, info.output
    assert "re-ranked" not in CliRunner().invoke(main, ["info", str(root / "off")]).output


def test_recorded_recall_with_rerank_reproduces_in_plain_faiss_and_numpy(pq_case, pq_builds):
    """Re-measure the manifest's figure without react-index: k·r candidates from faiss, exact scores from the
    store's .npy files, the best k kept; a hit reaches the k-th exact score."""
    store = pq_case[0]
    root, _ = pq_builds
    entry = json.loads((root / "auto" / "manifest.json").read_text())["indexes"]["image"]
    index = faiss.read_index(str(root / "auto" / entry["file"]))
    for name, value in entry["search_params"].items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    base = np.concatenate([np.load(f"{store.uri}/{s['img_emb']}").astype(np.float32)
                           for s in store.manifest["shards"]])
    text = np.concatenate([np.load(f"{store.uri}/{s['text_emb']}").astype(np.float32)
                           for s in store.manifest["shards"]])
    queries = text[np.load(root / "auto" / entry["measured"]["query_ids"])]
    k, r = entry["measured"]["k"], entry["rerank"]
    exact = queries @ base.T
    kth = -np.sort(-exact, axis=1)[:, k - 1]
    candidates = index.search(queries, k * r)[1]
    rescored = np.where(candidates >= 0, np.take_along_axis(exact, np.maximum(candidates, 0), axis=1), -np.inf)
    found = np.take_along_axis(candidates, np.argsort(-rescored, axis=1, kind="stable")[:, :k], axis=1)
    hits = np.take_along_axis(exact, found, axis=1) >= kth[:, None] - 1e-5
    assert hits.mean() == pytest.approx(entry["measured"]["recall"], abs=1e-6)


def test_query_searches_through_reranking_and_its_scores_are_exact(pq_case, pq_builds, tmp_path):
    store, _, queries, _, _ = pq_case
    root, built = pq_builds
    r = built["auto"]["indexes"]["image"]["rerank"]
    np.save(tmp_path / "q.npy", queries[:6].reshape(3, 2, 64))
    classes = [TargetClass(c) for c in ("a", "b", "c")]
    base = np.concatenate([c for _, c in store.iter_chunks("image")])
    exact = base @ queries[:6].T  # (samples, queries): class c's queries are 2c, 2c + 1

    def run(index_dir, **kw):
        out = tmp_path / f"{index_dir.name}-{kw.get('rerank')}.parquet"
        doc = retrieve(str(index_dir), classes, out=str(out), templates=[], mode="t2i", selection=Selection(k=20),
                       query_embeddings=str(tmp_path / "q.npy"), **kw)
        rows = pq.read_table(out).to_pylist()
        recall = np.mean([len({x["sample_id"] for x in rows if x["class_index"] == c}
                              & set(np.argsort(-exact[:, 2 * c:2 * c + 2], axis=0)[:20].ravel().tolist()))
                          / len(set(np.argsort(-exact[:, 2 * c:2 * c + 2], axis=0)[:20].ravel().tolist()))
                          for c in range(3)])
        return doc, rows, recall

    doc, rows, recall = run(root / "auto")
    assert doc["selection"]["rerank"] == {"image": r}
    best_exact = np.array([exact[x["sample_id"], 2 * x["class_index"]:2 * x["class_index"] + 2].max() for x in rows])
    assert np.allclose([x["score"] for x in rows], best_exact, atol=1e-5)  # the retrieval set holds exact scores
    off_doc, off_rows, off_recall = run(root / "auto", rerank="off")
    assert off_doc["selection"]["rerank"] == {"image": 1}
    off_exact = np.array([exact[x["sample_id"], 2 * x["class_index"]:2 * x["class_index"] + 2].max()
                          for x in off_rows])
    assert not np.allclose([x["score"] for x in off_rows], off_exact, atol=1e-3)  # PQ's approximate scores
    assert recall > off_recall + 0.2, (recall, off_recall)
    forced = run(root / "off", rerank=r)  # an index built without re-ranking, re-ranked at query time
    assert forced[0]["selection"]["rerank"] == {"image": r} and forced[2] > off_recall + 0.2
    with pytest.raises(UserError, match="--rerank must be 'auto'"):
        run(root / "auto", rerank="0")


def test_large_k_with_reranking_probes_lists_for_all_candidates(tmp_path):
    """probe_enough_lists must count the r·k candidates, not k: else faiss pads them with -1."""
    store_dir, image, _ = make_store(tmp_path, 4000, 16, 2000, n_clusters=40)
    store = open_store(str(store_dir))
    index = faiss.index_factory(16, "IVF64,SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(image.astype(np.float32))
    index.add(image.astype(np.float32))
    faiss.extract_index_ivf(index).nprobe = 2
    q = Queries(np.array([0, 1]), ["t", "t"], image[:2].astype(np.float32))
    cls, ids, scores, _ = query_module.search(index, q, 300, store=store, modality="image", factor=4)
    assert faiss.extract_index_ivf(index).nprobe >= 2 * 1200 * 64 // 4000  # lists holding ~2·r·k vectors
    assert np.bincount(cls).tolist() == [300, 300] and len(set(ids[cls == 0].tolist())) == 300
    exact = image[:2].astype(np.float32) @ store.rows("image", np.arange(4000)).T
    assert np.allclose(scores[cls == 0], np.sort(exact[0])[::-1][:300], atol=1e-5)  # the exact top 300


def _labels_reference(candidates, queries_by_mode, rows_g, n_samples):
    """The per-row Python loop `_labels_by_row` replaced, kept as the specification."""
    g, label, score = [], [], []
    for (cls, ids, scores, qidx), queries in zip(candidates, queries_by_mode, strict=True):
        g.append(cls.astype(np.int64) * n_samples + ids)
        label.append(np.array(queries.labels, dtype=object)[qidx.astype(np.int64)])
        score.append(scores)
    g, label, score = np.concatenate(g), np.concatenate(label), np.concatenate(score)
    wanted = np.isin(g, rows_g)
    g, label, score = g[wanted], label[wanted], score[wanted]
    order = np.lexsort((-score, g))
    pairs = {}
    for gi, li in zip(g[order].tolist(), label[order].tolist(), strict=True):
        lst = pairs.setdefault(gi, [])
        if li not in lst:
            lst.append(li)
    return pa.array([pairs.get(x, []) for x in rows_g.tolist()], pa.list_(pa.string()))


def test_vectorised_template_lists_match_the_per_row_loop():
    rng = np.random.default_rng(0)
    n_samples, n_classes, templates = 50, 4, ["t0", "t1", "t2", "t1"]  # a repeated label (synonyms share templates)
    candidates, queries_by_mode = [], []
    for labels in (templates * n_classes, ["example:a.jpg", "t0"] * n_classes):  # two modes (fusion)
        per = len(labels) // n_classes
        qcls = np.repeat(np.arange(n_classes), per)
        qidx = rng.integers(0, len(labels), 600)
        scores = rng.choice([0.1, 0.2, 0.3, 0.5], 600).astype(np.float32)  # many ties
        candidates.append((qcls[qidx], rng.integers(0, n_samples, 600), scores, qidx))
        queries_by_mode.append(Queries(qcls, labels, np.zeros((len(labels), 2), np.float32)))
    all_g = np.unique(np.concatenate([c.astype(np.int64) * n_samples + i for c, i, _, _ in candidates]))
    rows_g = rng.permutation(np.concatenate([rng.choice(all_g, 120, replace=False), [n_samples * 3 + 49]]))
    got = _labels_by_row(candidates, queries_by_mode, rows_g, n_samples)
    assert got.type == pa.list_(pa.string())
    assert got.to_pylist() == _labels_reference(candidates, queries_by_mode, rows_g, n_samples).to_pylist()
    assert _labels_by_row(candidates, queries_by_mode, rows_g[:0], n_samples).to_pylist() == []


def test_template_lists_from_the_sorted_candidates_of_one_mode_match_the_per_row_loop():
    """REACT's case (one mode, each class asks each template once): the lists are read off combine's sort."""
    rng = np.random.default_rng(1)
    n_samples, n_classes, templates, k = 40, 5, ["a {}", "b {}", "c {}"], 12
    qcls = np.repeat(np.arange(n_classes), len(templates))
    ids = np.stack([rng.choice(n_samples, k, replace=False) for _ in qcls])  # faiss: a sample once per query
    scores = rng.choice([0.1, 0.2, 0.3], ids.shape).astype(np.float32)
    qidx = np.repeat(np.arange(len(qcls)), k)
    candidates = [(qcls[qidx], ids.ravel(), scores.ravel(), qidx)]
    queries_by_mode = [Queries(qcls, templates * n_classes, np.zeros((len(qcls), 2), np.float32))]
    sorted_modes = []
    cls, sample, _ = query_module.combine(candidates, n_samples, sorted_modes)
    rows_g = rng.permutation(cls.astype(np.int64) * n_samples + sample)[:70]
    got = _labels_by_row(candidates, queries_by_mode, rows_g, n_samples, sorted_modes)
    assert got.to_pylist() == _labels_reference(candidates, queries_by_mode, rows_g, n_samples).to_pylist()
    assert got.to_pylist() == _labels_by_row(candidates, queries_by_mode, rows_g, n_samples).to_pylist()


def test_packed_sort_orders_as_lexsort():
    rng = np.random.default_rng(2)
    group = rng.integers(0, 50, 5000)
    score = rng.choice([-0.5, -0.0, 0.0, 0.25, 0.5, 1.0], 5000).astype(np.float32)
    expected = np.lexsort((-score, group))
    assert np.array_equal(query_module._group_order(group, score), expected)  # one packed int64 key
    assert np.array_equal(query_module._group_order(group + 2**40, score), expected)  # two stable sorts
    assert np.array_equal(query_module._group_order(group, score.astype(np.float64)), expected)


def test_cli_rerank_option_is_checked_before_any_work(pq_builds, tmp_path):
    root, _ = pq_builds
    runner = CliRunner()
    out = runner.invoke(main, ["build", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), "--rerank", "two"])
    assert out.exit_code == 1 and "--rerank must be 'auto', 'off' or a whole number" in out.output
    assert not (tmp_path / "x").exists()
    (tmp_path / "classes.txt").write_text("a\n")
    np.save(tmp_path / "q.npy", np.ones((1, 64), np.float32))
    out = runner.invoke(main, ["query", "--index", str(root / "auto"), "--classes", str(tmp_path / "classes.txt"),
                               "--query-embeddings", str(tmp_path / "q.npy"), "--rerank", "-2",
                               "--out", str(tmp_path / "s.parquet")])
    assert out.exit_code == 1 and "--rerank must be 'auto'" in out.output


def test_a_non_finite_vector_is_never_returned_and_is_counted(capsys):
    """An inf row scores inf against every query: without the filter it would head every class's list."""
    from react_index.query import Queries, search

    vectors = np.eye(4, dtype=np.float32)
    vectors[2] = np.inf
    index = faiss.IndexFlatIP(4)
    index.add(vectors)
    queries = Queries(np.array([0, 1]), ["a", "b"], np.array([[1, 0.1, 0.1, 0.1], [0.1, 1, 0.1, 0.1]], np.float32))
    _, ids, scores, _ = search(index, queries, 3)
    assert 2 not in ids.tolist() and np.isfinite(scores).all() and len(ids) == 4
    assert "2 candidates with a non-finite score dropped" in capsys.readouterr().out

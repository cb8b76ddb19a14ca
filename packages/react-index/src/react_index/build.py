"""`react-index build`: embedding store → tuned faiss index per modality + index manifest.

For each modality (image, text): choose an index under the memory budget (or take --index-key),
train on a sample of the store, add the vectors in bounded chunks read from the memory-mapped
store (or build IVF shards and merge them into on-disk inverted lists), tune nprobe / efSearch
to the recall target against exact search, measure recall and QPS, and write the index file
(plain `faiss.read_index` opens it) and the manifest atomically.

Tuning queries: the image index is tuned with text embeddings (REACT's text-to-image queries)
when the store has them; otherwise, and for the text index, with stored vectors whose own row
is excluded from both the exact and the approximate results. Their row ids are saved beside the
index (`{modality}.queries.npy`) so anyone can re-measure the recall.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time

import faiss
import fsspec
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from ._manifests import UserError, local_atomic_path, manifest_uri, write_bytes_atomic
from .indexkey import choose_index_key, estimate_memory, format_bytes, parse_memory, training_size
from .manifest import INDEX, STORE, lineage_entry, read_manifest, write_manifest
from .rerank import is_compressed, search_reranked
from .sharded import WAIT_TIMEOUT, build_shards, start_ranks
from .sharded import cleanup as cleanup_shards
from .sources import SourceError
from .store import Store, open_store

log = logging.getLogger("react_index")

HNSW_EF_MAX = 4096
RERANK_FACTORS = (1, 2, 4, 8, 16, 32, 64, 128)  # candidates per result tried for a compressed index


def faiss_gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def describe_faiss_device() -> str:
    gpus = faiss_gpus()
    return f"faiss {faiss.__version__} on {gpus} GPU(s)" if gpus else \
        f"faiss {faiss.__version__} on CPU ({faiss.omp_get_max_threads()} threads; no GPU visible to faiss)"


# --- search parameters ---------------------------------------------------------------------------

def search_knobs(index) -> tuple[str | None, int]:
    """The parameter that trades speed for recall, and its useful maximum."""
    try:
        ivf = faiss.extract_index_ivf(index)
        return "nprobe", ivf.nlist
    except RuntimeError:
        pass
    base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
    return ("efSearch", HNSW_EF_MAX) if isinstance(base, faiss.IndexHNSW) else (None, 0)


def apply_params(index, params: dict) -> None:
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def knob_params(knob: str, value: int, index) -> dict:
    params = {knob: int(value)}
    if knob == "nprobe":
        quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            params["quantizer_efSearch"] = max(16, 2 * int(value))  # as autofaiss: efSearch = 2·nprobe
    return params


def search(index, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, store: Store | None = None,
           modality: str | None = None, factor: int = 1) -> np.ndarray:
    """Top-k ids; with `exclude`, each query's own row id is removed from its results; with `factor` > 1,
    k·factor candidates re-ranked exactly with the store's vectors (rerank.search_reranked)."""
    if exclude is None:
        return search_reranked(index, store, modality, queries, k, factor)[1]
    ids = search_reranked(index, store, modality, queries, k + 1, factor)[1]
    out = np.empty((len(ids), k), dtype=np.int64)
    for i, row in enumerate(ids):
        row = row[row != exclude[i]]
        out[i] = row[:k]
    return out


def recall_at_k(store: Store, modality: str, queries: np.ndarray, found: np.ndarray, kth_scores: np.ndarray) -> float:
    """Mean fraction of each query's k results whose exact similarity reaches the k-th exact similarity.

    Equal to |found ∩ exact top-k| / k, except that a result tied with the k-th neighbour counts as a
    hit: web corpora are full of exact duplicates, and which of two identical vectors is returned is
    arbitrary.
    """
    k = found.shape[1]
    valid = found >= 0
    vectors = store.rows(modality, np.where(valid, found, 0).ravel()).reshape(len(found), k, -1)
    scores = np.einsum("qkd,qd->qk", vectors, queries)
    hits = valid & (scores >= kth_scores[:, None] - 1e-5)
    return float(hits.mean())


def exact_neighbours(store: Store, modality: str, queries: np.ndarray, k: int,
                     exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (scores, ids) over the whole store, block by block (never all in RAM)."""
    chunks = (chunk for _, chunk in store.iter_chunks(modality, 32_768))
    extra = 0 if exclude is None else 1
    scores, ids = knn_ground_truth(queries, chunks, k + extra, metric_type=faiss.METRIC_INNER_PRODUCT)
    if exclude is None:
        return scores, ids
    keep = [np.flatnonzero(row != exclude[i])[:k] for i, row in enumerate(ids)]
    return (np.stack([scores[i, j] for i, j in enumerate(keep)]), np.stack([ids[i, j] for i, j in enumerate(keep)]))


def rerank_factors(index, rerank: bool | int | str = True) -> tuple[int, ...]:
    """The re-ranking factors r to try: RERANK_FACTORS for a compressed index (True / "auto"), only 1 for an
    index that scores exactly or with `rerank` False / "off", or the one given (an integer ≥ 1)."""
    if rerank is False or rerank == "off":
        return (1,)
    if rerank is True or rerank == "auto":
        return RERANK_FACTORS if is_compressed(index) else (1,)
    try:
        factor = int(rerank)
    except (TypeError, ValueError):
        factor = 0
    if factor < 1 or (isinstance(rerank, float) and factor != rerank):
        raise UserError(f"--rerank must be 'auto', 'off' or a whole number of candidates per result ≥ 1, got "
                        f"{rerank!r}")
    return (factor,)


def check_rerank(rerank: bool | int | str) -> None:
    """Refuse a --rerank value that is neither 'auto', 'off' nor a whole number ≥ 1."""
    rerank_factors(faiss.IndexFlatIP(1), rerank)


def _smallest_reaching(measure, start: int, limit: int, target: float, reaches_at_start: bool = False,
                       ) -> tuple[int, float]:
    """(value, recall): the smallest knob value in [1, limit] whose recall reaches `target` (recall being
    non-decreasing in the value), searching up from `start` by doubling, then down by bisection; or, when none
    does, the smallest value of the best recall seen (doubling stops where it stops gaining recall: the codes,
    not the search, limit it). `reaches_at_start`: `start` is known to reach the target."""
    seen: dict[int, float] = {}
    value = start
    if not reaches_at_start:
        while True:
            seen[value] = measure(value)
            if seen[value] >= target or value >= limit:
                break
            if value // 2 in seen and seen[value] < seen[value // 2] + 0.002:
                break  # a plateau: twice the search gains nothing
            value = min(limit, value * 2)
        if seen[value] < target:
            best = min(seen, key=lambda v: (-seen[v], v))
            return best, seen[best]
    lo, hi = (value // 2, value) if value // 2 in seen else (0, value)
    while hi - lo > 1:  # smallest value in (lo, hi] that reaches the target
        mid = (lo + hi) // 2
        seen[mid] = measure(mid)
        lo, hi = (lo, mid) if seen[mid] >= target else (mid, hi)
    if hi not in seen:
        seen[hi] = measure(hi)
    return hi, seen[hi]


def tune_search(index, store: Store, modality: str, queries: np.ndarray, truth_scores: np.ndarray, target: float,
                exclude: np.ndarray | None = None, rerank: bool | int | str = True,
                ) -> tuple[dict, int, float, float]:
    """Tune the search parameter (nprobe / efSearch) and the re-ranking factor r together: for each r (see
    `rerank_factors`), the smallest parameter whose recall@k reaches `target`; of those, the pair with the best
    measured QPS (r·k candidates re-scored exactly with the store's vectors, rerank.py). When no pair reaches the
    target, the best recall. k is `truth_scores.shape[1]` (exact top-k scores of `queries`, exact_neighbours);
    `exclude`: each query's own row id, left out of its results.

    Returns (search params, r, recall@k, QPS) and leaves the params applied to `index`. The index may come from
    anywhere (built here, or an adopted autofaiss index); its rows must be the store's rows.
    """
    k = truth_scores.shape[1]
    kth = truth_scores[:, -1]
    knob, limit = search_knobs(index)
    tried = []  # (factor, params, recall, qps)
    value, reached = (1 if knob == "nprobe" else 16), 0.0
    factors = rerank_factors(index, rerank)
    bar = tqdm(total=len(factors), desc=f"  {modality}: tune {knob or 'exact'}"
               + (" × re-ranking" if len(factors) > 1 else ""), unit="setting", dynamic_ncols=True, leave=False)
    for factor in factors:
        def recall(factor=factor) -> float:
            return recall_at_k(store, modality, queries, search(index, queries, k, exclude, store, modality, factor),
                               kth)

        if knob is None:
            params, reached = {}, recall()
        else:
            def measure(value: int, factor=factor) -> float:
                apply_params(index, knob_params(knob, value, index))
                return recall(factor)

            # more candidates re-scored (a superset) find at least as much at the same value: start from the last
            value, reached = _smallest_reaching(measure, value, limit, target, reaches_at_start=reached >= target)
            params = knob_params(knob, value, index)
            apply_params(index, params)
        qps = measure_qps(index, queries, k, store, modality, factor)
        best_before = max((t for t in tried if t[2] >= target), key=lambda t: t[3], default=None)
        tried.append((factor, params, reached, qps))
        bar.update(1)
        bar.set_postfix_str(f"r={factor} {params or ''} recall@{k} {reached:.3f}")
        log.debug("tune %s: r=%d %s recall@%d %.4f, %.0f QPS", modality, factor, params, k, reached, qps)
        if reached >= target:
            if best_before is not None and qps < best_before[3]:
                break  # more candidates per result no longer pay for the fewer lists / nodes visited
            if knob is None or value <= 1:
                break  # the search cannot get cheaper: more candidates would only cost more
        elif len(tried) > 1 and reached < tried[-2][2] + 0.002:
            break  # re-ranking more candidates does not raise the recall the search itself can reach
    bar.close()
    reaching = [t for t in tried if t[2] >= target]
    factor, params, reached, qps = max(reaching, key=lambda t: t[3]) if reaching else \
        max(tried, key=lambda t: (t[2], t[3]))
    apply_params(index, params)
    return params, factor, reached, qps


def measure_qps(index, queries: np.ndarray, k: int, store: Store | None = None, modality: str | None = None,
                factor: int = 1, min_seconds: float = 0.3) -> float:
    """Queries per second of one batch of `queries` (k results, `factor`·k candidates re-ranked): the fastest of
    the passes run in `min_seconds` (at least two), so a pass slowed by another process does not count."""
    best, start = math.inf, time.perf_counter()
    runs = 0
    while runs < 2 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        search_reranked(index, store, modality, queries, k, factor)
        best = min(best, time.perf_counter() - t)
        runs += 1
    return len(queries) / max(best, 1e-9)


# --- building ------------------------------------------------------------------------------------

def _train(index, store: Store, modality: str, n_train: int, rng) -> None:
    if index.is_trained:
        return
    ids = np.sort(rng.choice(store.n, size=n_train, replace=False))
    sample = store.rows(modality, ids)
    if faiss_gpus():
        try:  # k-means on the GPUs: the expensive part of training
            ivf = faiss.extract_index_ivf(index)
            ip = ivf.metric_type == faiss.METRIC_INNER_PRODUCT
            flat = faiss.IndexFlatIP(ivf.d) if ip else faiss.IndexFlatL2(ivf.d)
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(flat)
        except RuntimeError:
            pass
    index.train(sample)


def _add_range(index, store: Store, modality: str, lo: int, hi: int, chunk_rows: int, bar) -> None:
    for start, chunk in store.iter_chunks(modality, chunk_rows):
        a, b = max(lo, start), min(hi, start + len(chunk))
        if a < b:
            part = np.ascontiguousarray(chunk[a - start:b - start])
            if lo == 0 and hi == store.n:
                index.add(part)
            else:
                index.add_with_ids(part, np.arange(a, b, dtype=np.int64))
            bar.update(b - a)


def _to_gpu_for_add(index):
    """Clone to the GPUs for adding when faiss supports this index there; else keep the CPU index."""
    if not faiss_gpus():
        return index, False
    try:
        return faiss.index_cpu_to_all_gpus(index), True
    except RuntimeError:
        return index, False


def _write_index(index, path: str) -> None:
    with local_atomic_path(path) as tmp:  # a killed build's temp file is removed by the next one
        faiss.write_index(index, tmp)


def _save_npy(path: str, array: np.ndarray) -> None:
    with local_atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _index_factory(d: int, key: str):
    try:
        return faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"--index-key {key!r}: faiss cannot build this index for width {d} ({reason}); write a faiss "
                        "index_factory string such as 'IVF1024,Flat' or 'OPQ64_256,IVF65536_HNSW32,PQ64x8'") from None


def build_modality(store: Store, modality: str, folder: str, key: str, max_memory: int, target_recall: float,
                   k: int, n_shards: int, n_queries: int, seed: int, rerank: bool | int | str = "auto",
                   wait_timeout: float = WAIT_TIMEOUT) -> dict | None:
    """Build, tune and write `{folder}/{modality}.index`; returns its manifest entry (None on the ranks other than
    0 of a parallel sharded build: they only fill their shards)."""
    n, d = store.n, store.dim
    rng = np.random.default_rng(seed)
    index = _index_factory(d, key)
    n_train = training_size(key, n, d, max_memory)
    t0 = time.perf_counter()
    chunk_rows = max(1024, min(65_536, max_memory // 32 // (d * 4)))
    path = f"{folder}/{modality}.index"
    if n_shards > 1:  # sharded.py: train once, fill shards (in parallel under torchrun / srun), merge on disk
        index = build_shards(index, store, modality, folder, key, n_shards, chunk_rows, seed, n_train, rng, _train,
                             wait_timeout)
        if index is None:  # another rank of a parallel build: its shards are written, rank 0 does the rest
            return None
    else:
        if not index.is_trained:
            print(f"  {modality}: training {key} on {n_train:,} of {n:,} vectors (k-means; no progress until it "
                  "ends) ...", flush=True)
            started = time.perf_counter()
            _train(index, store, modality, n_train, rng)
            print(f"  {modality}: trained in {time.perf_counter() - started:.1f}s", flush=True)
        bar = tqdm(total=n, desc=f"  {modality}: add", unit="vec", unit_scale=True, dynamic_ncols=True)
        target, on_gpu = _to_gpu_for_add(index)
        _add_range(target, store, modality, 0, n, chunk_rows, bar)
        index = faiss.index_gpu_to_cpu(target) if on_gpu else target
        bar.close()
    build_seconds = time.perf_counter() - t0

    query_modality = "text" if modality == "image" and "text" in store.manifest["modalities"] else modality
    q_ids = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    queries = store.rows(query_modality, q_ids)
    exclude = q_ids if query_modality == modality else None
    truth_scores, _ = exact_neighbours(store, modality, queries, min(k, n - 1), exclude)
    params, factor, recall, qps = tune_search(index, store, modality, queries, truth_scores, target_recall, exclude,
                                              rerank)
    k = truth_scores.shape[1]
    if recall < target_recall:
        print(f"  {modality}: warning: recall@{k} {recall:.3f} is below the target {target_recall} even at the "
              f"largest search setting; give --max-memory room for a less compressed index or pass --index-key")
    _write_index(index, path)
    _save_npy(f"{folder}/{modality}.queries.npy", q_ids)
    if n_shards > 1:
        cleanup_shards(folder, modality, n_shards)
    reranked = f", {factor}·k candidates re-ranked exactly" if factor > 1 else ""
    print(f"  {modality}: {key}, {index.ntotal:,} vectors, {params or 'exact'}{reranked}: recall@{k} "
          f"{recall:.3f} at {qps:,.0f} QPS (built in {build_seconds:.1f}s)")
    return {"file": f"{modality}.index", "index_key": key, "ntotal": int(index.ntotal), "search_params": params,
            "rerank": factor,
            "measured": {"k": k, "recall": round(recall, 6), "queries": len(q_ids),
                         "qps": round(qps, 1), "query_modality": query_modality,
                         "query_ids": f"{modality}.queries.npy", "excludes_self": exclude is not None},
            "on_disk": n_shards > 1, "build_seconds": round(build_seconds, 2)}


def is_store(uri: str) -> bool:
    """True for an embedding store folder. A folder whose manifest.json is broken (truncated, hand-edited, of
    another kind) or that holds an unfinished store is an error naming it, never re-ingested as if it were a
    folder of precomputed embeddings (a store has their layout)."""
    manifest = manifest_uri(uri)
    fs, path = fsspec.core.url_to_fs(manifest)
    if fs.exists(path):
        read_manifest(manifest, STORE)  # a ManifestError names the file and the field
        return True
    _, folder = fsspec.core.url_to_fs(uri)
    if fs.isdir(folder.rstrip("/") + "/shards") and fs.isdir(folder.rstrip("/") + "/img_emb"):
        raise SourceError(f"{uri}: an embedding store whose manifest.json was never written (its embedding did not "
                          f"finish): rerun the same `react-index embed ... --out {uri}` to finish it, then build")
    return False


def check_build_options(max_memory, target_recall: float, k: int, shards: int, queries: int) -> int:
    """Refuse option values that cannot build a meaningful index; returns the budget in bytes."""
    budget = parse_memory(max_memory)
    for option, value in (("--recall-at", k), ("--shards", shards), ("--queries", queries)):
        if value < 1:
            what = "held-out queries tune the search parameters and measure recall" if option == "--queries" else \
                "it is a count"
            raise UserError(f"{option} must be at least 1, got {value} ({what})")
    if not 0 < target_recall <= 1:
        raise UserError(f"--target-recall must be in (0, 1], got {target_recall}")
    return budget


BUILD_RECORD = "build.json"  # beside the index manifest: the store state and options it was built from


def _build_record(store: Store, options: dict) -> dict:
    return {"store": {"uri": store.uri, "id": store.manifest["id"], "rows": store.n}, "options": options}


def _describe_change(before: dict, now: dict) -> list[str]:
    changes = []
    if before["store"]["id"] != now["store"]["id"] or before["store"]["rows"] != now["store"]["rows"]:
        changes.append(f"the store (built from {before['store']['uri']}, manifest {before['store']['id'][:19]}…, "
                       f"{before['store']['rows']:,} rows; now {now['store']['uri']}, manifest "
                       f"{now['store']['id'][:19]}…, {now['store']['rows']:,} rows)")
    for name, value in now["options"].items():
        old = before["options"].get(name, "(not recorded)")
        if old != value:
            changes.append(f"--{name.replace('_', '-')} (built with {old}, now {value})")
    return changes


def _reuse(out: str, store: Store, options: dict, force: bool) -> dict | None:
    """The finished index in `out` when it was built from this store state with these options; None when there is
    none (or `force`). Any other finished index is refused, naming what changed."""
    fs, path = fsspec.core.url_to_fs(manifest_uri(out))
    if force or not fs.exists(path):
        return None
    manifest = read_manifest(manifest_uri(out), INDEX)
    record_uri = out.rstrip("/") + "/" + BUILD_RECORD
    rfs, rpath = fsspec.core.url_to_fs(record_uri)
    fix = "pass --force to rebuild it, or choose another --out"
    if not rfs.exists(rpath):
        raise UserError(f"{out} already holds an index that this build did not make (no {BUILD_RECORD}: adopted, "
                        f"or built by an older react-index), so it cannot tell whether it matches: {fix}")
    with rfs.open(rpath, "rb") as f:
        before = json.loads(f.read())
    lineage_id = manifest["lineage"][0]["id"] if manifest["lineage"] else None
    if lineage_id != before["store"]["id"]:
        raise UserError(f"{out}: the index was changed after it was built (its store is now {lineage_id}, e.g. by "
                        f"`react-index add`); rebuilding would replace it: {fix}")
    changes = _describe_change(before, _build_record(store, options))
    if changes:
        raise UserError(f"{out} already holds an index built from other inputs or options; changed: "
                        f"{'; '.join(changes)}. {fix[0].upper() + fix[1:]}")
    return manifest


def build_index(store_uri: str, out: str, *, max_memory: str | int = "4G", index_key: str | None = None,
                target_recall: float = 0.95, recall_at: int = 10, shards: int = 1, queries: int = 500, seed: int = 0,
                modalities=None, rerank: bool | int | str = "auto", wait_timeout: float = WAIT_TIMEOUT,
                force: bool = False) -> dict | None:
    """Build one faiss index per modality of the embedding store at `store_uri` into the folder `out`; returns the
    index manifest (None on the ranks other than 0 of a parallel sharded build). `react-index build` runs this.

    The index type is chosen under `max_memory` (or given as `index_key`, a faiss index_factory string), and its
    search parameters are tuned to reach `target_recall` of recall@`recall_at` against exact search on `queries`
    held-out queries. `rerank`: "auto" tunes the exact re-ranking factor with the search parameters (compressed
    indexes), "off" never re-ranks, an integer fixes it. `shards` > 1 builds IVF in shards merged into on-disk
    lists. A finished index in `out` built from the same store with the same options is reused (returned as it
    is); one built from another store state or with other options is refused unless `force`."""
    k = recall_at
    budget = check_build_options(max_memory, target_recall, k, shards, queries)
    rank = start_ranks(store_uri, out, shards, wait_timeout)  # under torchrun / srun: sharded.py
    if rank is None:
        return None
    check_rerank(rerank)  # a bad --rerank is refused before anything is built
    store = open_store(store_uri)
    options = {"max_memory": budget, "index_key": index_key, "target_recall": target_recall, "recall_at": k,
               "shards": shards, "queries": queries, "seed": seed, "rerank": rerank,
               "modality": sorted(modalities or store.manifest["modalities"])}
    reused = _reuse(out, store, options, force)
    if reused is not None:
        print(f"index -> {out} (reused: built from this store with these options; --force rebuilds)")
        return None if rank else reused
    if force and not rank:  # the old manifest goes first: a rebuild killed halfway leaves no manifest naming new files
        fs, _ = fsspec.core.url_to_fs(out)
        for name in ("manifest.json", BUILD_RECORD):
            _, path = fsspec.core.url_to_fs(out.rstrip("/") + "/" + name)
            if fs.exists(path):
                fs.rm(path)
    if store.n < 2:
        raise UserError(f"{store_uri}: the store holds {store.n} vectors; an index needs at least 2")
    modalities = list(modalities or store.manifest["modalities"])
    absent = [m for m in modalities if m not in store.manifest["modalities"]]
    if absent:
        raise UserError(f"--modality {absent[0]}: the store {store_uri} holds no {absent[0]} embeddings (it has "
                        f"{', '.join(store.manifest['modalities'])})")
    key = index_key or choose_index_key(store.n, store.dim, budget)  # refused before anything is written
    if index_key:
        _index_factory(store.dim, index_key)
    if index_key and estimate_memory(index_key, store.n, store.dim) > budget:
        print(f"react-index build: warning: --index-key {index_key} needs about "
              f"{format_bytes(estimate_memory(index_key, store.n, store.dim))} for {store.n:,} vectors, more than "
              f"--max-memory {format_bytes(budget)} (which then only sizes the training sample)")
    print(f"react-index build: {store.n:,} vectors of width {store.dim}; {describe_faiss_device()}")
    fs, out_path = fsspec.core.url_to_fs(out)
    local = isinstance(fs, LocalFileSystem)
    folder = out_path if local else tempfile.mkdtemp(prefix="react-index-")
    os.makedirs(folder, exist_ok=True)
    entries = {}
    for modality in modalities:
        entries[modality] = build_modality(store, modality, folder, key, budget, target_recall, k, shards,
                                           queries, seed, rerank, wait_timeout)
    if rank:
        print(f"react-index build: rank {rank} is done; rank 0 writes the index -> {out}")
        return None
    if not local:
        fs.put(folder.rstrip("/") + "/", out_path, recursive=True)
        shutil.rmtree(folder)
    body = {"model": store.manifest["model"], "dim": store.dim, "metric": "ip", "indexes": entries}
    write_bytes_atomic(out.rstrip("/") + "/" + BUILD_RECORD,
                       (json.dumps(_build_record(store, options), indent=2) + "\n").encode())
    manifest = write_manifest(manifest_uri(out), INDEX, body,
                              [lineage_entry(store.manifest, manifest_uri(store.uri))])
    print(f"index -> {out}")
    return manifest

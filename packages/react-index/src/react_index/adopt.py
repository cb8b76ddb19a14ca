"""`react-index adopt`: an index built by autofaiss / clip-retrieval over a precomputed folder (how LAION's public
kNN indexes were made) becomes a react-index index folder that `react-index query` uses, without rebuilding it.

    INDEX_DIR/manifest.json          react.index: the adopted file by absolute path (or relative, inside INDEX_DIR),
                                     its size and the sha256 of its first and last 64 KiB, the search parameters,
                                     and recall re-measured against exact search on the store
    INDEX_DIR/{modality}.queries.npy the store row ids of the queries that measured it
    INDEX_DIR/store/manifest.json    an in-place store over the folder (precomputed.ingest_in_place), unless --store

Row ids: those tools read a folder's parts in the order of their paths sorted as text (img_emb_0, img_emb_1,
img_emb_10, …), and the in-place store has exactly that order, so id i of the index is row i of the store. That is
checked, not assumed: stored vectors are searched and must find themselves (or an identical vector).

The index file is referenced where it is (no copy of an 800 GB file) and opened memory-mapped: faiss's
IO_FLAG_MMAP_IFC maps the codes of flat-code indexes and the inverted lists of IVF ones (only HNSW graphs and
coarse quantizers are read into memory), so searching needs RAM for the pages it touches.
"""

from __future__ import annotations

import os
import time

import faiss
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ._manifests import UserError, manifest_uri, read_json
from .build import (
    _save_npy,
    apply_params,
    check_build_options,
    check_rerank,
    exact_neighbours,
    measure_qps,
    recall_at_k,
    search,
    tune_search,
)
from .manifest import INDEX, lineage_entry, write_manifest
from .precomputed import _absolute, _reference, _same_folder, ingest_in_place
from .store import ChangedFileError, Store, check_fingerprint, file_fingerprint, open_store

SELF_CHECK_QUERIES = 200  # stored vectors searched to check that index ids name the store's rows
SELF_CHECK_MIN = 0.5  # share of them that must find themselves (a wrong part order finds ~1/parts of them)
KNOBS = ("nprobe", "efSearch", "quantizer_efSearch")  # what tuning sets


def mmap_flags() -> int:
    """faiss read flags that memory-map an index: IO_FLAG_MMAP_IFC (faiss ≥ 1.10) maps flat codes and IVF lists;
    older faiss maps IVF lists with IO_FLAG_MMAP."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", 0) or (faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)


def parse_index_param(text: str, where: str) -> dict:
    """autofaiss's `index_param` string ("nprobe=16,efSearch=32,ht=2048") → {"nprobe": 16, …}."""
    params = {}
    for item in filter(None, (p.strip() for p in str(text).split(","))):
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise UserError(f"{where}: field 'index_param' should be 'name=value,…' (e.g. 'nprobe=16,efSearch=32'), "
                            f"got {text!r}")
        params[name.strip()] = int(number) if number.is_integer() else number
    return params


def adopted_file(index_dir: str, entry: dict) -> tuple[str, int]:
    """(local path, faiss read flags) of an adopted index entry, after checking that the file is unchanged."""
    _, folder = fsspec.core.url_to_fs(index_dir)
    rel = entry["file"]
    path = rel if os.path.isabs(rel) else os.path.join(folder, rel)
    info = entry["adopted"]
    check_fingerprint(path, info["bytes"], info["ends_sha256"], f"the index folder {index_dir}",
                      "Adopt the index again (react-index adopt … --out "
                      f"{index_dir}): its row ids and measured recall may no longer hold")
    return path, mmap_flags() if entry.get("mmap") else 0


def _read_index(path: str, mmap: bool):
    try:
        return faiss.read_index(path, mmap_flags() if mmap else 0)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        hint = "; try --no-mmap" if mmap else ""
        raise UserError(f"{path}: faiss cannot read this index file ({reason}){hint}") from None


def _index_key(index, infos: dict | None) -> str:
    if infos and isinstance(infos.get("index_key"), str):
        return infos["index_key"]
    try:
        from faiss.contrib.factory_tools import reverse_index_factory

        return reverse_index_factory(index)
    except Exception:  # an index type the reverse factory does not know
        return type(faiss.downcast_index(index)).__name__


def _adopt_store(embeddings: str, store_uri: str | None, out: str, model: dict, images_root: str | None) -> Store:
    """The store whose rows the index ids name: a given one (checked), else an in-place store at OUT/store."""
    if store_uri is None:
        store_uri = out.rstrip("/") + "/store"
        fs, path = fsspec.core.url_to_fs(store_uri)
        if isinstance(fs, LocalFileSystem):
            store_uri = os.path.abspath(path)
        ingest_in_place(embeddings, store_uri, model, images_root)
        return open_store(store_uri)
    store = open_store(store_uri)
    m = store.manifest
    where = f"--store {store_uri}"
    if m.get("shard_order") != "path-text" or len(m["inputs"]) != 1 or not _same_folder(m["inputs"][0], embeddings):
        raise UserError(f"{where}: not a store of {embeddings} in the order autofaiss / clip-retrieval read it "
                        f"(shard order {m.get('shard_order', 'input')!r}, inputs {m['inputs'][:2]}); leave out "
                        "--store to make an in-place store of the folder")
    dropped = m["counts"]["skipped"].get("nan_embedding", 0)
    if dropped:
        raise UserError(f"{where}: dropped {dropped:,} NaN rows of {embeddings} when it was copied, so its row ids "
                        "are not the index's; leave out --store to make an in-place store of the folder (it keeps "
                        "every row)")
    return store


def self_check(index, store: Store, modality: str, rng) -> float:
    """Share of stored vectors that the index finds among their own 100 nearest (or finds an identical vector):
    close to 1 when index id i is store row i, about 1/parts when the parts were read in another order."""
    n = min(SELF_CHECK_QUERIES, store.n)
    ids = np.sort(rng.choice(store.n, size=n, replace=False))
    vectors = store.rows(modality, ids)
    k = min(100, store.n)
    found = index.search(vectors, k)[1]
    hits = (found == ids[:, None]).any(axis=1)
    valid = found >= 0
    rows = store.rows(modality, np.where(valid, found, 0).ravel()).reshape(n, k, -1)
    own = np.einsum("qd,qd->q", vectors, vectors)
    same = valid & (np.einsum("qkd,qd->qk", rows, vectors) >= own[:, None] - 1e-3)  # a duplicate of itself
    return float((hits | same.any(axis=1)).mean())


def adopt(embeddings: str, index_file: str, *, out: str, infos: str | None = None, modality: str = "image",
          store: str | None = None, model: str | dict | None = None, pretrained: str | None = None,
          images_root: str | None = None,
          search_params: str = "tune", target_recall: float = 0.95, rerank: str | int = "auto", recall_at: int = 10,
          queries: int = 500, seed: int = 0, mmap: bool = True) -> dict:
    """Adopt the faiss index `index_file` built over the precomputed folder `embeddings` into the index folder
    `out`; returns its manifest.

    `search_params`: "tune" (default) tunes nprobe / efSearch and the exact re-ranking factor to `target_recall`
    like `react-index build` (the infos' own parameters are measured too, for comparison); "infos" keeps the
    `index_param` of the autofaiss infos file `infos` as they are. Either way recall@k is re-measured against exact
    search over the store on `queries` held-out queries and recorded. `model` / `pretrained`: the open_clip model
    that made the embeddings, recorded (unknown when not given; a model record dict is accepted too); unused with
    an existing `store`. `react-index adopt` runs this."""
    k = recall_at
    t0 = time.perf_counter()
    check_build_options("1G", target_recall, k, 1, queries)
    check_rerank(rerank)
    if modality not in ("image", "text"):
        raise UserError(f"--modality must be image or text, got {modality!r}")
    if search_params not in ("tune", "infos"):
        raise UserError(f"--search-params must be 'tune' or 'infos', got {search_params!r}")
    if search_params == "infos" and not infos:
        raise UserError("--search-params infos needs --infos FILE (autofaiss's index_infos.json)")
    fs, index_path = fsspec.core.url_to_fs(index_file)
    if not isinstance(fs, LocalFileSystem):
        raise UserError(f"--index {index_file}: faiss opens index files from a local (or mounted) file system; copy "
                        "or mount it locally first")
    index_path = os.path.abspath(index_path)
    if not os.path.isfile(index_path):
        raise UserError(f"--index {index_file}: no such file")
    out_fs, out_path = fsspec.core.url_to_fs(out)
    if not isinstance(out_fs, LocalFileSystem):
        raise UserError(f"--out {out}: an adopted index references a local index file; write its folder locally")
    out = os.path.abspath(out_path)
    info_doc = read_json(infos, "index infos file") if infos else None
    infos_params = parse_index_param(info_doc.get("index_param", ""), infos) if info_doc else {}

    if not isinstance(model, dict):
        from .embed import precomputed_model

        model = precomputed_model(model, pretrained) if store is None else None
    the_store = _adopt_store(embeddings, store, out, model or {"name": "unknown", "pretrained": "unknown",
                                                                "pretrained_sha256": None}, images_root)
    if modality not in the_store.manifest["modalities"]:
        raise UserError(f"--modality {modality}: {embeddings} holds no {modality} embeddings for every part (the "
                        f"store has {', '.join(the_store.manifest['modalities'])})")
    size, ends_sha = file_fingerprint(index_path)  # before reading: what is recorded is what was measured
    index = _read_index(index_path, mmap)
    if index.d != the_store.dim:
        raise UserError(f"{index_file}: holds {index.d}-wide vectors but {embeddings} holds {the_store.dim}-wide "
                        "ones: it was built over other embeddings")
    if index.ntotal != the_store.n:
        raise UserError(f"{index_file}: holds {index.ntotal:,} vectors but the {modality} parts of {embeddings} hold "
                        f"{the_store.n:,} rows: it was built over another folder, a subset, or another modality "
                        "(--modality)")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise UserError(f"{index_file}: uses faiss metric {index.metric_type} (L2 = 1), not inner product: "
                        "react-index ranks by similarity; build it with autofaiss --metric_type ip")
    key = _index_key(index, info_doc)
    print(f"react-index adopt: {key}, {index.ntotal:,} vectors of width {index.d} from {index_path} "
          f"({'memory-mapped' if mmap else 'read into memory'}), rows of {embeddings} in text order of their paths")

    rng = np.random.default_rng(seed)
    n = the_store.n
    query_modality = "text" if modality == "image" and "text" in the_store.manifest["modalities"] else modality
    q_ids = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    q = the_store.rows(query_modality, q_ids)
    exclude = q_ids if query_modality == modality else None
    truth_scores, _ = exact_neighbours(the_store, modality, q, min(k, n - 1), exclude)
    k = truth_scores.shape[1]
    try:
        apply_params(index, infos_params)  # faiss's ParameterSpace takes autofaiss's names (efSearch, ht, …)
    except RuntimeError as e:
        raise UserError(f"{infos}: faiss cannot set index_param {info_doc.get('index_param')!r} on this index "
                        f"({str(e).strip().splitlines()[-1] if str(e).strip() else e})") from None
    found_self = self_check(index, the_store, modality, rng)  # before any tuning: a wrong order fails fast
    if found_self < SELF_CHECK_MIN:
        raise UserError(f"{index_file}: only {found_self:.0%} of {min(SELF_CHECK_QUERIES, n)} stored vectors of "
                        f"{embeddings} find themselves in it, so its ids do not name the folder's rows in the order "
                        "autofaiss and clip-retrieval read them (paths sorted as text): was it built over another "
                        "folder, or with its parts in another order?")
    given_recall = recall_at_k(the_store, modality, q, search(index, q, k, exclude), truth_scores[:, -1])
    if search_params == "tune":
        params, factor, recall, qps = tune_search(index, the_store, modality, q, truth_scores, target_recall,
                                                  exclude, rerank)
        # the infos' other parameters (e.g. the polysemous `ht`) stayed applied while tuning: keep them
        params = {**{name: v for name, v in infos_params.items() if name not in KNOBS}, **params}
    else:
        params, factor, recall = infos_params, 1, given_recall
        qps = measure_qps(index, q, k)
    if recall < target_recall:
        advice = "adopt with --search-params tune" if search_params == "infos" else \
            "the index is too compressed for it; build one with react-index build"
        print(f"  {modality}: warning: recall@{k} {recall:.3f} is below {target_recall} ({advice})")
    os.makedirs(out, exist_ok=True)
    _save_npy(f"{out}/{modality}.queries.npy", q_ids)
    entry = {"file": _reference(index_path, out), "index_key": key, "ntotal": int(index.ntotal),
             "search_params": params, "rerank": factor,
             "measured": {"k": k, "recall": round(recall, 6), "queries": len(q_ids), "qps": round(qps, 1),
                          "query_modality": query_modality, "query_ids": f"{modality}.queries.npy",
                          "excludes_self": exclude is not None},
             "on_disk": False, "mmap": bool(mmap),
             "adopted": {"bytes": size, "ends_sha256": ends_sha, "infos": _absolute(infos) if infos else None,
                         "index_param": info_doc.get("index_param") if info_doc else None,
                         "index_param_recall": round(given_recall, 6), "self_found": round(found_self, 4)}}
    if file_fingerprint(index_path) != (size, ends_sha):
        raise ChangedFileError(f"{index_path}: changed while it was being adopted; adopt it again")
    body = {"model": the_store.manifest["model"], "dim": the_store.dim, "metric": "ip", "indexes": {modality: entry}}
    manifest = write_manifest(manifest_uri(out), INDEX, body,
                              [lineage_entry(the_store.manifest, manifest_uri(the_store.uri))])
    reranked = f", {factor}·k candidates re-ranked exactly" if factor > 1 else ""
    print(f"  {modality}: {params or 'exact'}{reranked}: recall@{k} {recall:.3f} at {qps:,.0f} QPS "
          f"(index_param {info_doc.get('index_param') if info_doc else '-'}: recall@{k} {given_recall:.3f}); "
          f"{found_self:.0%} of stored vectors find themselves; {time.perf_counter() - t0:.1f}s")
    print(f"index -> {out}  (the index file stays at {index_path}; query it with react-index query --index {out})")
    return manifest

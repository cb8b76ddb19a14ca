"""`react-index add INDEX_DIR SOURCE...`: new shards into an index's store and into its indexes, no retraining.

1. The sources are embedded, or ingested when they are precomputed embeddings (embed's rules: images need the
   [clip] extra, precomputed folders do not), with the store's model, into a staging store inside the index's
   store: `STORE/adds/{tag}/` (tag: a digest of the inputs). A rerun resumes there.
2. The staged shards are appended to the store: a marker per new shard (`STORE/shards/add{tag}-{name}.json`, its
   paths pointing into the staging folder) and a new store manifest (`finalize`, shard order `appended`, lineage:
   the previous store state). Row ids of the old rows do not change; the new rows follow them.
3. Every index of the folder gets the new rows, ids continuing after the last row, encoded with its trained
   quantizer (nothing is retrained). An index in memory is read, extended and written back atomically. An on-disk
   (sharded) index keeps its lists: the new rows fill new shard indexes from its trained, emptied copy, and the old
   lists and the new shards are merged into a new `{modality}.add{tag}.ivfdata` (a full pass over the lists: disk
   for both until the old file is removed); the index file is replaced atomically and then names it.
4. The search parameters are tuned again and the recall re-measured on the grown store, as `build` does; the index
   manifest's lineage names the new store state and the previous index.

The manifests being replaced are kept as `history/manifest-{id}.json` in their folders, so every lineage URI still
resolves to a manifest with that id. Adding sources that are already in the store is a no-op that says so (some of
them: an error naming them, since their rows would be duplicated). An interrupted add (killed, preempted) is
finished by rerunning the same command.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import time

import faiss
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from . import sharded
from ._manifests import UserError, manifest_uri, write_bytes_atomic
from .build import _save_npy, _write_index, check_build_options, exact_neighbours, tune_search
from .embed import embed
from .manifest import INDEX, STORE, ManifestError, lineage_entry, read_manifest, write_manifest
from .sources import SourceError, expand_inputs, is_precomputed
from .store import UNKNOWN, finalize, index_store_uri, open_store
from .store import marker_path as store_marker_path

ENVELOPE_KEYS = ("kind", "version", "id", "created", "producer", "lineage")


def history_uri(folder: str, doc_id: str) -> str:
    """Where the manifest with id `doc_id` is kept once replaced (lineage URIs point here)."""
    return f"{folder.rstrip('/')}/history/manifest-{doc_id.split(':', 1)[-1][:16]}.json"


def _keep(folder: str, doc: dict) -> str:
    uri = history_uri(folder, doc["id"])
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):  # the id excludes `created`: the copy validates as the original
        write_bytes_atomic(uri, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
    return uri


def _norm(uri: str) -> str:
    return uri if "://" in uri else os.path.realpath(uri)


def _base_store(index_dir: str, manifest: dict, store_uri: str, current: dict) -> dict:
    """The store state the index was built from (or last added to): the store's manifest, or after an interrupted
    add its history copy (the store manifest was replaced, the index's not yet)."""
    built_from = manifest["lineage"][0]["id"]
    if current["id"] == built_from:
        return current
    kept = history_uri(store_uri, built_from)
    fs, path = fsspec.core.url_to_fs(kept)
    if fs.exists(path):
        base = read_manifest(kept, STORE)
        names = [s["name"] for s in current["shards"]]
        if names[:len(base["shards"])] == [s["name"] for s in base["shards"]]:
            print(f"react-index add: finishing an interrupted add (the store {store_uri} already lists its shards)")
            return base
    raise ManifestError(f"{store_uri}/manifest.json: field 'id' is {current['id'][:19]}…, but the index {index_dir} "
                        f"was built from store {built_from[:19]}…: the store changed since, so new rows cannot be "
                        f"numbered after the index's; rebuild the index (react-index build {store_uri} --out …)")


def _check_model(staged: dict, base: dict, store_uri: str) -> None:
    got, want = staged["model"], base["model"]
    shas = got.get("pretrained_sha256"), want.get("pretrained_sha256")
    same_weights = shas[0] == shas[1] if None not in shas else got["pretrained"] == want["pretrained"]
    if got["name"] != want["name"] or not same_weights:
        raise SourceError(f"the new shards were embedded with {got['name']} / {got['pretrained']}, but the store "
                          f"{store_uri} holds {want['name']} / {want['pretrained']} embeddings: one index searches one "
                          "model's vectors; leave --model / --pretrained out (the store's are used) or build a new "
                          "index")


def _append(store_uri: str, base: dict, staged: dict, tag: str) -> list[str]:
    """Markers for the staged shards in the store's shards/ (paths into the staging folder); returns their names.
    A base shard whose marker is missing gets it back from the manifest (finalize reads markers)."""
    for shard in base["shards"]:
        uri = f"{store_uri}/{store_marker_path(shard['name'])}"
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            write_bytes_atomic(uri, json.dumps(shard).encode())
    names = []
    for shard in staged["shards"]:
        entry = dict(shard, name=f"add{tag}-{shard['name']}")
        for field in ("metadata", "img_emb", "text_emb"):
            if field in entry and not (entry[field].startswith("/") or "://" in entry[field]):
                entry[field] = f"adds/{tag}/{entry[field]}"
        write_bytes_atomic(f"{store_uri}/{store_marker_path(entry['name'])}", json.dumps(entry).encode())
        names.append(entry["name"])
    return names


def _add_in_memory(index, path: str, store, modality: str, n_old: int, chunk_rows: int) -> None:
    bar = tqdm(total=store.n - n_old, desc=f"  {modality}: add", unit="vec", unit_scale=True, dynamic_ncols=True)
    for _, chunk in sharded.iter_range(store, modality, n_old, store.n, chunk_rows):
        index.add(chunk)  # ids continue after the last row
        bar.update(len(chunk))
    bar.close()
    _write_index(index, path)


def _add_on_disk(index, path: str, folder: str, store, modality: str, n_old: int, tag: str, budget: int,
                 chunk_rows: int):
    """New rows into new shards (from the index's trained, emptied copy), then old lists + new shards merged into a
    new .ivfdata named by the index file written in place of the old one. Returns the new index."""
    ivf = faiss.extract_index_ivf(index)
    name = f"{modality}.add{tag}"  # the shard files' prefix (sharded.py's naming)
    rows_per_shard = max(1, budget // 4 // (ivf.code_size + 8))  # one shard's lists in RAM while it is filled
    n_parts = math.ceil((store.n - n_old) / rows_per_shard)
    bounds = np.linspace(n_old, store.n, n_parts + 1).astype(np.int64)
    digest = sharded.plan_digest({"store": store.manifest["id"], "modality": modality, "rows": [n_old, store.n],
                          "shards": n_parts})
    trained = sharded.trained_path(folder, name)
    if not os.path.exists(trained):
        _write_index(sharded.empty_copy(path, on_disk=True), trained)
    bar = tqdm(total=store.n - n_old, desc=f"  {modality}: add", unit="vec", unit_scale=True, dynamic_ncols=True)
    for s in range(n_parts):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if sharded.shard_done(folder, name, s, digest):
            bar.update(hi - lo)
        else:
            sharded.fill_shard(trained, store, modality, lo, hi, chunk_rows, bar, sharded.shard_path(folder, name, s),
                               sharded.marker_path(folder, name, s), digest)
    bar.close()
    merged = faiss.read_index(trained)
    parts = [faiss.read_index(sharded.shard_path(folder, name, s), faiss.IO_FLAG_MMAP) for s in range(n_parts)]
    sharded.merge_lists(merged, [index, *parts], f"{folder}/{name}.ivfdata")
    _write_index(merged, path)
    sharded.cleanup(folder, name, n_parts)
    return merged


def _remeasure(index, store, modality: str, entry: dict, folder: str, target_recall: float, seed: int,
               rerank) -> dict:
    """Tune and measure as `build` does, on the grown store; returns the index's new manifest entry."""
    n, before = store.n, entry["measured"]
    query_modality = "text" if modality == "image" and "text" in store.manifest["modalities"] else modality
    rng = np.random.default_rng(seed)
    q_ids = np.sort(rng.choice(n, size=min(before["queries"], n), replace=False))
    queries = store.rows(query_modality, q_ids)
    exclude = q_ids if query_modality == modality else None
    truth_scores, _ = exact_neighbours(store, modality, queries, min(before["k"], n - 1), exclude)
    params, factor, recall, qps = tune_search(index, store, modality, queries, truth_scores, target_recall, exclude,
                                              rerank)
    k = truth_scores.shape[1]
    _save_npy(f"{folder}/{modality}.queries.npy", q_ids)
    print(f"  {modality}: {entry['index_key']}, {index.ntotal:,} vectors, {params or 'exact'}: recall@{k} "
          f"{recall:.3f} at {qps:,.0f} QPS (before: {before['recall']:.3f} on {entry['ntotal']:,} vectors)")
    if recall < target_recall:
        print(f"  {modality}: warning: recall@{k} {recall:.3f} is below the target {target_recall} even at the "
              "largest search setting: the quantizer was trained on the rows of the first build; if the new rows "
              "differ from them, rebuild the index (react-index build)")
    return entry | {"ntotal": int(index.ntotal), "search_params": params, "rerank": factor,
                    "measured": {"k": k, "recall": round(recall, 6), "queries": len(q_ids), "qps": round(qps, 1),
                                 "query_modality": query_modality, "query_ids": f"{modality}.queries.npy",
                                 "excludes_self": exclude is not None}}


def add(index_dir: str, sources, *, model: str | None = None, pretrained: str | None = None, batch_size: int = 256,
        workers: int | None = None, device: str | None = None, skip_bad_shards: bool = False,
        image_column: str = "image", caption_column: str = "caption", images_root: str | None = None,
        target_recall: float = 0.95, max_memory: str | int = "4G", seed: int = 0, rerank: bool | int | str = "auto",
        model_config: str | None = None) -> dict | None:
    """Add `sources` to the store of the index at `index_dir` and to its indexes, without retraining; returns the new
    index manifest (the old one when every source was already added; None on torchrun ranks other than 0 while
    embedding). `model` / `pretrained` default to the store's; the other embedding options are `embed`'s. The
    search parameters are tuned again to `target_recall`; `max_memory` bounds an on-disk index's new lists.
    `react-index add` runs this."""
    t0 = time.perf_counter()
    budget = check_build_options(max_memory, target_recall, 1, 1, 1)
    index_dir = index_dir.rstrip("/")
    fs, folder = fsspec.core.url_to_fs(index_dir)
    if not isinstance(fs, LocalFileSystem):
        raise UserError(f"{index_dir}: react-index add rewrites the index files in their folder, which must be local "
                        "(or on a shared file system): copy the index folder here, add, and copy it back")
    manifest = read_manifest(manifest_uri(index_dir), INDEX)
    if not manifest["lineage"] or manifest["lineage"][0]["kind"] != STORE:
        raise ManifestError(f"{index_dir}/manifest.json: field 'lineage' names no embedding store first, so there is "
                            "no store to add rows to; rebuild the index with react-index build")
    store_uri = index_store_uri(index_dir, manifest)
    current = open_store(store_uri)
    if current.in_place:
        raise UserError(f"{store_uri}: an in-place store over {current.manifest['in_place']['folder']}: its shards are "
                        "that folder's own files, so new shards cannot be appended to it. Ingest the folder into a "
                        "store of its own (react-index embed FOLDER --out STORE, without --in-place), build an index "
                        "from it, and add to that; or rebuild the in-place store and index over a folder holding "
                        "every part")
    base = _base_store(index_dir, manifest, store_uri, current.manifest)
    n_old = base["counts"]["samples"]

    uris = expand_inputs(list(sources))
    have = {_norm(u) for u in base["inputs"]}
    already = [u for u in uris if _norm(u) in have]
    if already and len(already) == len(uris) and base["id"] == current.manifest["id"]:
        print(f"react-index add: nothing to add: {', '.join(uris)} {'is' if len(uris) == 1 else 'are'} already in "
              f"the store {store_uri} and in the index {index_dir} (added before); the index is kept as it is")
        return manifest
    if already:
        raise SourceError(f"{', '.join(already)}: already in the store {store_uri} (its inputs); adding them again "
                          "would duplicate their rows: pass only the new sources")
    record = base["model"]
    if record["name"] == UNKNOWN and not model and not all(is_precomputed(u) for u in uris):
        raise UserError(f"{store_uri}: the store's model is unknown, so new images cannot be embedded like its rows; "
                        "pass --model and --pretrained (the model that made the store's vectors)")
    tag = hashlib.sha256(json.dumps(sorted(map(_norm, uris))).encode()).hexdigest()[:8]
    staging = f"{store_uri}/adds/{tag}"
    print(f"react-index add: {len(uris)} source(s) into the store {store_uri} (staged in {staging}), then the "
          f"index {index_dir}: {', '.join(manifest['indexes'])}")
    staged = embed(uris, staging, model=model or record["name"],
                   pretrained=record["pretrained"] if pretrained is None else pretrained, batch_size=batch_size,
                   workers=workers, device=device, skip_bad_shards=skip_bad_shards, image_column=image_column,
                   caption_column=caption_column, images_root=images_root, model_config=model_config)
    if staged is None:
        return None
    _check_model(staged, base, store_uri)
    if staged["counts"]["samples"] == 0:
        raise SourceError(f"{', '.join(uris)}: no usable sample (skipped: {staged['counts']['skipped'] or 'none'}); "
                          "nothing was added")
    if staged["dim"] != base["dim"]:
        raise SourceError(f"{', '.join(uris)}: {staged['dim']}-wide embeddings, but the store {store_uri} holds "
                          f"{base['dim']}-wide ones: one store holds one model's embeddings")
    lacking = [m for m in base["modalities"] if m not in staged["modalities"]]
    if lacking:
        raise SourceError(f"{', '.join(uris)}: no {lacking[0]} embeddings, which the store {store_uri} holds for every "
                          f"row (and its {lacking[0]} index needs)")

    kept_store = _keep(store_uri, base)
    kept_index = _keep(index_dir, manifest)
    names = _append(store_uri, base, staged, tag)
    finalize(store_uri, [s["name"] for s in base["shards"]] + names, record, base["inputs"] + uris,
             [lineage_entry(base, kept_store)], shard_order="appended")
    store = open_store(store_uri)
    print(f"  store: {n_old:,} + {store.n - n_old:,} rows (ids {n_old:,}-{store.n - 1:,}) -> {store_uri}")

    chunk_rows = max(1024, min(65_536, budget // 32 // (store.dim * 4)))
    entries = {}
    for modality, entry in manifest["indexes"].items():
        path = f"{folder}/{entry['file']}"
        on_disk = bool(entry.get("on_disk"))
        index = faiss.read_index(path, faiss.IO_FLAG_ONDISK_SAME_DIR if on_disk else 0)
        if index.ntotal == store.n:
            print(f"  {modality}: already holds the new rows (an interrupted add); measuring it")
        elif index.ntotal != n_old:
            raise ManifestError(f"{path}: holds {index.ntotal:,} vectors, but its store had {n_old:,} rows before this "
                                f"add and has {store.n:,} after: an add of other sources was interrupted; rerun that "
                                "add, or rebuild the index")
        elif on_disk:
            index = _add_on_disk(index, path, folder, store, modality, n_old, tag, budget, chunk_rows)
        else:
            _add_in_memory(index, path, store, modality, n_old, chunk_rows)
        entries[modality] = _remeasure(index, store, modality, entry, folder, target_recall, seed, rerank)
    body = {key: value for key, value in manifest.items() if key not in ENVELOPE_KEYS} | {"indexes": entries}
    new = write_manifest(manifest_uri(index_dir), INDEX, body,
                         [lineage_entry(store.manifest, manifest_uri(store_uri)),
                          lineage_entry(manifest, kept_index)])
    for modality, entry in entries.items():  # the lists the index no longer names
        if entry.get("on_disk"):
            keep = sharded.ivfdata_name(faiss.read_index(f"{folder}/{entry['file']}", faiss.IO_FLAG_ONDISK_SAME_DIR))
            for old in glob.glob(glob.escape(f"{folder}/{modality}.") + "*ivfdata"):
                if os.path.basename(old) != keep:
                    os.remove(old)
    print(f"react-index add: {store.n - n_old:,} rows added in {time.perf_counter() - t0:.1f}s; index -> {index_dir}")
    return new

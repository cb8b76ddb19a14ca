"""`react-index info`: a manifest in human form (store, index, or retrieval set)."""

from __future__ import annotations

import fsspec

from ._manifests import RETRIEVAL, ManifestError, manifest_uri, read_json, retrieval_paths
from .manifest import INDEX, STORE, read_manifest, read_retrieval_manifest


def _model(m: dict) -> str:
    return f"{m['name']} / {m['pretrained'] or 'random init'}"


def describe(path: str) -> str:
    """A store, an index or a retrieval set (a folder, a manifest, or a .parquet) in human form: model, counts,
    skipped samples, index keys, tuned parameters, measured recall, lineage. `react-index info` prints it."""
    path = path.rstrip("/")
    if path.endswith((".parquet", ".parquet.json")):
        doc = read_retrieval_manifest(path)
    else:
        fs, local = fsspec.core.url_to_fs(path)
        if not path.endswith(".json") and fs.isfile(local):
            raise ManifestError(f"{path}: not something react-index describes; pass a store or index folder, a "
                                "manifest (.json) or a retrieval set (.parquet)")
        uri = manifest_uri(path)
        kind = read_json(uri).get("kind")
        doc = read_retrieval_manifest(retrieval_paths(uri)[0]) if kind == RETRIEVAL else \
            read_manifest(uri, kind if kind in (STORE, INDEX) else STORE)
    lines = [f"{doc['kind']} v{doc['version']}  {doc['id']}",
             f"  written {doc['created']} by {doc['producer']['name']} {doc['producer']['version']}"]
    if doc["kind"] == STORE:
        lines += [f"  model      {_model(doc['model'])}, dim {doc['dim']}, {doc['dtype']}",
                  f"  samples    {doc['counts']['samples']:,} in {len(doc['shards'])} shard(s); "
                  f"modalities {', '.join(doc['modalities'])}",
                  f"  skipped    {doc['counts']['skipped'] or 'none'}",
                  f"  inputs     {len(doc['inputs'])}: {', '.join(doc['inputs'][:3])}"
                  + (" …" if len(doc["inputs"]) > 3 else "")]
        if "in_place" in doc:  # a manifest over a precomputed folder's own parts (precomputed.ingest_in_place)
            check = doc["in_place"]["check"]
            lines.append(f"  in place   the parts of {doc['in_place']['folder']}, not copied; "
                         f"{check['rows_sampled']:,} sampled rows unit-norm within {check['max_norm_error']:.1e}, "
                         f"{check['nonfinite_rows']} NaN row(s) among them")
    elif doc["kind"] == INDEX:
        lines.append(f"  model      {_model(doc['model'])}, dim {doc['dim']}, metric {doc['metric']}")
        for modality, e in doc["indexes"].items():
            m = e["measured"]
            lines.append(f"  {modality:<10} {e['index_key']}, {e['ntotal']:,} vectors, "
                         f"params {e['search_params'] or '-'}"
                         + (f", {e['rerank']}·k candidates re-ranked exactly" if e.get("rerank", 1) > 1 else "")
                         + f"; recall@{m['k']} {m['recall']:.3f} "
                         f"at {m['qps']:,.0f} QPS ({m['queries']} queries)")
            if "adopted" in e:  # `react-index adopt`: another tool's index file, used where it is
                a = e["adopted"]
                lines.append(f"  {'':<10} adopted {e['file']} ({'memory-mapped' if e.get('mmap') else 'in memory'}); "
                             f"its index_param {a['index_param'] or '-'}: recall@{m['k']} "
                             f"{a['index_param_recall']:.3f}; {a['self_found']:.0%} of stored vectors find themselves")
    else:
        counts = doc["counts_per_class"]
        lines += [f"  model      {_model(doc['model'])}; mode {doc['mode']}, k {doc['k']}",
                  f"  rows       {doc['rows']:,} over {len(doc['classes'])} classes, {doc['unique_samples']:,} unique",
                  f"  per class  min {min(counts, default=0)}, max {max(counts, default=0)}"]
        from .survival import summary_lines

        lines += summary_lines(doc)  # after `react-index download` / `attach`: failures and survival per class
    lines += [f"  made from  {e['kind']} {e['id'][:19]}… at {e['uri']}" for e in doc["lineage"]]
    return "\n".join(lines)

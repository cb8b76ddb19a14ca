"""`react-index query`: a target domain → the most relevant corpus samples per class → a retrieval set.

Modes: `t2i` text prompts against the image index (REACT's default), `t2t` against the text index,
`i2i` example images against the image index, `caption` the samples whose captions name the class or a synonym
(captions.py: whole words, plurals) ranked by exact similarity of the class's prompt-ensemble embedding to their
image (Neural Priming's filter) or caption embedding (`caption_rank`), K per class, and `fusion`, which runs t2i
and t2t (and i2i when examples are given; or the modes `fuse` names, caption among them) and merges them by
reciprocal-rank fusion: a sample's score in a class is Σ over modes of 1 / (60 + its rank in that mode's list
for the class).

Selection, per class: K nearest per query (`per="template"`, REACT) or K nearest to the class's
prompt-ensemble embedding (`per="class"`); a sample found by several queries is kept once with its
best score and the templates that found it; optional score threshold and near-duplicate removal;
then across classes either `keep-all` (REACT: a sample may serve several classes) or `best-class`;
an optional total budget keeps the top `budget // classes` of every class.
Memory grows with the number of candidates and selected samples, never with the corpus.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from ._manifests import RETRIEVAL_COLUMNS, UserError, manifest_uri, require, write_parquet_atomic
from .domain import DomainError, TargetClass, load_synonyms, load_templates, prompt_classes, prompts, with_synonyms
from .manifest import INDEX, ManifestError, lineage_entry, read_manifest, write_retrieval_manifest
from .rerank import CANDIDATES_PER_SEARCH, search_reranked
from .sources import IMAGE_EXTS
from .store import UNKNOWN, Store, index_store_uri, open_store

CLIP_INSTALL = "pip install 'react-index[clip]'"

MODES = ("t2i", "t2t", "i2i", "caption", "fusion")
MODE_INDEX = {"t2i": "image", "i2i": "image", "t2t": "text"}  # caption mode reads the store's vectors, no index
CAPTION_RANKS = ("image", "text")
RRF_K = 60
JOIN_COLUMNS = ["key", "caption", "image_uri", "image_offset", "image_length", "url", "source", "source_row"]
ROW_SCHEMA = pa.schema([*RETRIEVAL_COLUMNS, pa.field("source", pa.string()), pa.field("source_row", pa.int64())])


@dataclass(frozen=True)
class Selection:
    """Which retrieved rows a retrieval set keeps (the options of `react-index query`): the `k` nearest samples
    per query, `per` "template" (each class × template prompt, REACT) or "class" (the class's prompt ensemble);
    `cross_class` "keep-all" (a sample may serve several classes) or "best-class"; optionally drop a sample whose
    cosine similarity to a better one of its class exceeds `near_duplicates`, rows scoring below `min_score`, and
    keep the top `budget` / classes rows per class."""

    k: int = 125
    per: str = "template"  # "template" (K per template per class, REACT) or "class" (K per class, ensemble query)
    cross_class: str = "keep-all"  # or "best-class"
    near_duplicates: float | None = None  # drop a sample whose cosine to a better one in its class exceeds this
    min_score: float | None = None
    budget: int | None = None  # total rows; each class keeps its top budget // classes

    def __post_init__(self):
        if self.per not in ("template", "class"):
            raise UserError(f"--per must be 'template' or 'class', got {self.per!r}")
        if self.cross_class not in ("keep-all", "best-class"):
            raise UserError(f"--cross-class must be 'keep-all' or 'best-class', got {self.cross_class!r}")
        if self.k < 1:
            raise UserError(f"--k must be at least 1 (neighbours per query), got {self.k}")
        if self.budget is not None and self.budget < 1:
            raise UserError(f"--budget must be at least 1 (total rows of the set; leave it out for no budget), "
                            f"got {self.budget}")
        if self.near_duplicates is not None and not 0 < self.near_duplicates <= 1:
            raise UserError(f"--near-duplicates is a cosine similarity in (0, 1] (e.g. 0.95), got "
                            f"{self.near_duplicates}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise UserError(f"--min-score must be a number, got {self.min_score}")


@dataclass
class Queries:
    """Query vectors, the class each belongs to, and a label (template or example name)."""

    classes: np.ndarray
    labels: list[str]
    vectors: np.ndarray

    def ensembled(self, n_classes: int) -> Queries:
        """One query per class: the mean of its normalised queries, renormalised."""
        sums = np.zeros((n_classes, self.vectors.shape[1]), np.float32)
        np.add.at(sums, self.classes, self.vectors)
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        present = np.unique(self.classes)
        return Queries(present, ["ensemble"] * len(present), sums[present])


def open_index(index_dir: str, modalities=None, *, manifest: dict | None = None):
    """(index manifest, store, {modality: faiss index with its tuned search parameters applied}), loading only
    the indexes of `modalities` (default: all). The store must be the one the index was built from (same id):
    row ids mean nothing against another."""
    index_dir = index_dir.rstrip("/")
    manifest = manifest or read_manifest(manifest_uri(index_dir), INDEX)
    store_uri = index_store_uri(index_dir, manifest)
    store = open_store(store_uri)
    if manifest["lineage"] and store.manifest["id"] != manifest["lineage"][0]["id"]:
        raise ManifestError(f"{store_uri}/manifest.json: field 'id' is {store.manifest['id'][:19]}…, but the index "
                            f"{index_dir} was built from store {manifest['lineage'][0]['id'][:19]}…: the store changed "
                            "since (its rows may be in another order), so the index's row ids would name the wrong "
                            f"samples; rebuild the index (react-index build {store_uri} --out …)")
    indexes = {}
    fs, path = fsspec.core.url_to_fs(index_dir)
    local = isinstance(fs, LocalFileSystem)
    for modality, entry in manifest["indexes"].items():
        if modalities is not None and modality not in modalities:
            continue
        if "adopted" in entry:  # an index file adopted in place (adopt.py): checked unchanged, memory-mapped
            from .adopt import adopted_file

            file, flags = adopted_file(index_dir, entry)
        else:
            file = f"{path}/{entry['file']}" if local else \
                fsspec.open_local(f"simplecache::{index_dir}/{entry['file']}")
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR if entry.get("on_disk") else 0
        try:
            index = faiss.read_index(file, flags)
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
            raise ManifestError(f"{index_dir}/{entry['file']}: faiss cannot read this index file ({reason}); "
                                "rebuild the index with react-index build") from None
        if index.ntotal != store.n:
            raise ManifestError(f"{index_dir}/{entry['file']}: holds {index.ntotal:,} vectors but its store "
                                f"{store_uri} has {store.n:,} rows; rebuild the index with react-index build")
        for name, value in entry["search_params"].items():
            faiss.ParameterSpace().set_index_parameter(index, name, value)
        indexes[modality] = index
    return manifest, store, indexes


def text_queries(classes: list[TargetClass], templates: list[str], encoder) -> Queries:
    items = prompts(classes, templates)
    return Queries(np.array([i for i, _, _ in items]), [t for _, t, _ in items],
                   encoder.texts([text for _, _, text in items]))


def embedding_queries(path: str, classes: list[TargetClass], templates: list[str]) -> Queries:
    """Ready query vectors: (classes, d) or (classes, templates, d) float array in a .npy file."""
    try:
        with fsspec.open(path, "rb") as f:
            x = np.load(f, allow_pickle=False).astype(np.float32)
    except FileNotFoundError:
        raise DomainError(f"{path}: no such file (--query-embeddings)") from None
    except (ValueError, TypeError, EOFError) as e:
        raise DomainError(f"{path}: --query-embeddings needs a float .npy array ({type(e).__name__}: {e})") from None
    if x.ndim >= 2 and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DomainError(f"{path}: --query-embeddings holds NaN or infinite values (first at index "
                          f"{tuple(int(i) for i in bad)}); such queries would retrieve arbitrary rows")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[0] != len(classes):
        raise DomainError(f"{path}: query embeddings of shape {x.shape}; expected ({len(classes)}, d) or "
                          f"({len(classes)}, templates, d) for {len(classes)} classes")
    labels = templates if templates and len(templates) == x.shape[1] else [f"query {j}" for j in range(x.shape[1])]
    x = x.reshape(-1, x.shape[-1])
    return Queries(np.repeat(np.arange(len(classes)), len(labels)), labels * len(classes),
                   x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def example_queries(examples: str, classes: list[TargetClass], encoder) -> Queries:
    """Example images in `examples/{class name}/…` for i2i."""
    fs, root = fsspec.core.url_to_fs(examples)
    cls, labels, data, names = [], [], [], []
    for i, c in enumerate(classes):
        folder = f"{root.rstrip('/')}/{c.name}"
        files = sorted(f for f in fs.find(folder) if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS) \
            if fs.isdir(folder) else []
        for f in files:
            cls.append(i)
            labels.append("example:" + f.rsplit("/", 1)[-1])
            data.append(fs.cat_file(f))
            names.append(f)
    if not data:
        raise DomainError(f"{examples}: no example images; put them in {examples}/<class name>/*.jpg")
    return Queries(np.array(cls), labels, encoder.images(data, names))


def probe_enough_lists(index, k: int) -> int | None:
    """An IVF index scans only `nprobe` inverted lists per query; for a large k (REACT retrieves thousands per
    prompt) those lists may hold fewer than k vectors, and faiss pads the answer with -1. Probe lists holding
    about 2k vectors on average, never fewer than the tuned nprobe. Returns the new nprobe, None if unchanged."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index: Flat is exact, HNSW searches max(efSearch, k)
        return None
    needed = min(ivf.nlist, math.ceil(2 * k * ivf.nlist / max(1, ivf.ntotal)))
    if needed <= ivf.nprobe:
        return None
    ivf.nprobe = needed
    return needed


def search(index, queries: Queries, k: int, batch: int = 1024, store: Store | None = None, modality: str | None = None,
           factor: int = 1):
    """Candidates (class, sample id, score, query index) of the k nearest neighbours of every query. With
    `factor` r > 1, each query takes r·k candidates from the index and keeps the k best by their exact score
    with the store's vectors (rerank.py): the scores returned are then exact. Queries go in batches small
    enough that batch × r·k candidates stay bounded (REACT's k is 125–1,000)."""
    width = k * max(1, factor)
    widened = probe_enough_lists(index, width)
    if widened:
        print(f"  k={k}: probing {widened} inverted lists per query (the tuned nprobe reaches fewer than "
              f"2·{width} vectors)")
    batch = max(1, min(batch, CANDIDATES_PER_SEARCH // width))
    cls, ids, scores, qidx = [], [], [], []
    non_finite = 0
    for lo in tqdm(range(0, len(queries.vectors), batch), desc="search", unit="batch", dynamic_ncols=True):
        d, i = search_reranked(index, store, modality, queries.vectors[lo:lo + batch], k, factor)
        # a NaN/inf vector in the corpus (an in-place store keeps rows its norm sample did not see) would score inf
        # and come first for every query: such a candidate is never a neighbour, so it is dropped and counted
        finite = np.isfinite(d)
        non_finite += int(((i >= 0) & ~finite).sum())
        ok = (i >= 0) & finite
        rows = np.nonzero(ok)[0]
        cls.append(queries.classes[lo + rows])
        ids.append(i[ok])
        scores.append(d[ok])
        qidx.append(lo + rows)
    if non_finite:
        print(f"  warning: {non_finite:,} candidates with a non-finite score dropped (NaN/inf vectors in the corpus)")
    return tuple(np.concatenate(a) if a else np.zeros(0) for a in (cls, ids, scores, qidx))


def _group_order(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The order of np.lexsort((-score, group)) — by group, then score descending, ties in input order — from
    one stable sort of a packed int64 key when the groups fit 31 bits and the scores are float32 (≈10× faster
    than lexsort for REACT's 10M candidates), else from two stable sorts."""
    group = np.asarray(group, np.int64)
    score = np.asarray(score)
    if not len(group):
        return np.zeros(0, np.int64)
    if score.dtype == np.float32 and group.min() >= 0 and group.max() < 2**31:
        bits = ((-score) + np.float32(0)).view(np.uint32)  # + 0: −0.0 becomes 0.0, as lexsort sees them
        bits = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))  # float order as unsigned integer order
        return np.argsort((group << 32) | bits.astype(np.int64), kind="stable")
    by_score = np.argsort(-score, kind="stable")
    return by_score[np.argsort(group[by_score], kind="stable")]


def _best_per_group(group: np.ndarray, score: np.ndarray, order: np.ndarray | None = None):
    """Unique groups, the position of each group's best-scoring candidate (`order`: _group_order's, if known)."""
    order = _group_order(group, score) if order is None else order
    first = np.concatenate([[True], group[order][1:] != group[order][:-1]]) if len(order) else np.zeros(0, bool)
    return group[order][first], order[first]


def _rank_in_class(cls: np.ndarray, score: np.ndarray) -> np.ndarray:
    order = _group_order(cls, score)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(cls[order])) + 1])
    sizes = np.diff(np.concatenate([starts, [len(order)]]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, sizes)
    return rank


def combine(candidates: list[tuple], n_samples: int, sorted_modes: list | None = None):
    """Dedup within classes and fuse modes: (class, sample, score) per unique (class, sample). `sorted_modes`, a
    list, receives each mode's (class·n_samples + sample, _group_order) for _labels_by_row to reuse."""
    per_mode = []
    for cls, ids, scores, _ in candidates:
        g = cls.astype(np.int64) * n_samples + ids
        order = _group_order(g, scores)
        if sorted_modes is not None:
            sorted_modes.append((g, order))
        groups, best = _best_per_group(g, scores, order)
        per_mode.append((groups, scores[best]))
    if len(per_mode) == 1:
        groups, score = per_mode[0]
    else:  # reciprocal-rank fusion
        contrib_g, contrib_s = [], []
        for groups, scores in per_mode:
            contrib_g.append(groups)
            contrib_s.append(1.0 / (RRF_K + 1 + _rank_in_class(groups // n_samples, scores)))
        allg, alls = np.concatenate(contrib_g), np.concatenate(contrib_s)
        groups, inverse = np.unique(allg, return_inverse=True)
        score = np.zeros(len(groups))
        np.add.at(score, inverse, alls)
    return groups // n_samples, groups % n_samples, score.astype(np.float32)


def drop_near_duplicates(cls, ids, score, store: Store, modality: str, threshold: float) -> np.ndarray:
    """Keep-mask: within each class, drop samples more similar than `threshold` to a better-scoring kept one."""
    keep = np.ones(len(ids), bool)
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        members = members[np.argsort(-score[members], kind="stable")]
        vectors = store.rows(modality, ids[members])
        kept: list[int] = []
        for j in range(len(members)):
            if kept and float((vectors[kept] @ vectors[j]).max()) > threshold:
                keep[members[j]] = False
            else:
                kept.append(j)
    return keep


def select(cls, ids, score, selection: Selection, n_classes: int, store: Store, modality: str) -> np.ndarray:
    """Indices of the kept (class, sample) rows, ordered by class then score."""
    keep = np.ones(len(ids), bool)
    if selection.min_score is not None:
        keep &= score >= selection.min_score
    if selection.near_duplicates is not None:
        idx = np.flatnonzero(keep)
        keep[idx] = drop_near_duplicates(cls[idx], ids[idx], score[idx], store, modality, selection.near_duplicates)
    if selection.cross_class == "best-class":
        idx = np.flatnonzero(keep)
        _, best = _best_per_group(ids[idx], score[idx] - 1e-9 * cls[idx])  # ties go to the lower class index
        keep[:] = False
        keep[idx[best]] = True
    idx = np.flatnonzero(keep)
    idx = idx[_group_order(cls[idx], score[idx])]
    if selection.budget is not None:
        quota = np.full(n_classes, selection.budget // n_classes)
        quota[: selection.budget % n_classes] += 1
        idx = idx[_rank_in_class(cls[idx], score[idx]) < quota[cls[idx]]]
        idx = idx[_group_order(cls[idx], score[idx])]
    return idx


def join_metadata(store: Store, sample_ids: np.ndarray) -> pa.Table:
    """Metadata rows of the sorted unique `sample_ids`, reading only the shards (and columns) needed."""
    offsets = store.offsets()
    parts = []
    for s in np.unique(np.searchsorted(offsets, sample_ids, side="right") - 1):
        local = sample_ids[(sample_ids >= offsets[s]) & (sample_ids < offsets[s + 1])] - offsets[s]
        parts.append(store.metadata(int(s), columns=JOIN_COLUMNS, rows=local))  # in-place stores map only these
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in JOIN_COLUMNS})


def _labels_by_row(candidates, queries_by_mode, rows_g: np.ndarray, n_samples: int,
                   sorted_modes: list | None = None) -> pa.ListArray:
    """The distinct templates (or example names) that found each selected (class, sample) `rows_g` (unique
    class·n_samples + sample), best first: each label ranked by the best score it found the row with (ties:
    the earlier candidate). Vectorised: a list array built from offsets into sorted candidates.

    `sorted_modes` (from `combine`): with one mode whose queries ask each (class, label) once, every
    (row, label) pair is found at most once, so the candidates already sorted by (row, score) are the lists."""
    vocab: dict[str, int] = {}
    codes_by_mode = [np.fromiter((vocab.setdefault(label, len(vocab)) for label in q.labels), np.int64,
                                 len(q.labels)) for q in queries_by_mode]
    names = pa.array(list(vocab), pa.string())
    n_labels = max(1, len(vocab))
    if sorted_modes and len(candidates) == 1:
        (_, _, _, qidx), queries, codes = candidates[0], queries_by_mode[0], codes_by_mode[0]
        asked = queries.classes.astype(np.int64) * n_labels + codes
        g, order = sorted_modes[0]
        starts = np.flatnonzero(np.concatenate([[True], g[order][1:] != g[order][:-1]])) if len(g) else \
            np.zeros(0, np.int64)
        groups = g[order[starts]]
        at = np.minimum(np.searchsorted(groups, rows_g), max(0, len(groups) - 1))
        if len(np.unique(asked)) == len(asked) and (not len(rows_g) or (groups[at] == rows_g).all()):
            lengths = np.diff(np.concatenate([starts, [len(g)]]))[at] if len(rows_g) else np.zeros(0, np.int64)
            offsets = np.zeros(len(rows_g) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            idx = np.repeat(starts[at] - offsets[:-1], lengths) + np.arange(offsets[-1]) if len(rows_g) else \
                np.zeros(0, np.int64)
            values = names.take(pa.array(codes[qidx.astype(np.int64)[order[idx]]]))
            return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)
    g, code, score = [], [], []
    for (cls, ids, scores, qidx), codes in zip(candidates, codes_by_mode, strict=True):
        g.append(cls.astype(np.int64) * n_samples + ids.astype(np.int64))
        code.append(codes[qidx.astype(np.int64)])
        score.append(scores)
    g, code, score = np.concatenate(g), np.concatenate(code), np.concatenate(score)
    by_g = np.argsort(rows_g, kind="stable")
    at = np.minimum(np.searchsorted(rows_g, g, sorter=by_g), max(0, len(rows_g) - 1))
    wanted = rows_g[by_g[at]] == g if len(rows_g) else np.zeros(len(g), bool)
    where = np.flatnonzero(wanted)  # candidate positions, ascending: ties keep the earlier candidate
    row, code, score = by_g[at[where]], code[where], score[where]
    key = row * n_labels + code  # one (row, label) pair
    order = _group_order(key, score)  # by pair, best score first, then the earlier candidate
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    best = np.sort(order[first])  # each pair's best candidate (position in `where`), in candidate order
    best = best[_group_order(row[best], score[best])]  # per row: best score first, ties by position
    counts = np.bincount(row[best], minlength=len(rows_g))
    offsets = np.zeros(len(rows_g) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), names.take(pa.array(code[best])))


def set_nprobe(index, nprobe: int, where: str) -> None:
    """Probe `nprobe` inverted lists per query instead of the tuned value; refused on an index without lists."""
    if nprobe < 1:
        raise UserError(f"--nprobe must be a positive integer, got {nprobe}")
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        raise UserError(f"--nprobe: {where} is not an IVF index (it has no inverted lists to probe)") from None
    ivf.nprobe = min(nprobe, ivf.nlist)


def caption_queries(text: Queries, store: Store, classes: list[TargetClass], k: int, rank: str):
    """Caption mode: (the per-class queries, candidates (class, sample, score, query index)). Each class's
    candidates are the samples whose caption names it or a synonym (captions.py); the k best of them by exact inner
    product of the class's prompt-ensemble embedding with the sample's `rank` ("image" or "text") vector."""
    from .caption_rank import rank_candidates
    from .captions import caption_candidates

    if rank not in store.manifest["modalities"]:
        raise UserError(f"--rank {rank}: the store has no {rank} embeddings (it has "
                        f"{', '.join(store.manifest['modalities'])})")
    ensemble = text.ensembled(len(classes))
    vectors = np.zeros((len(classes), ensemble.vectors.shape[1]), np.float32)
    vectors[ensemble.classes] = ensemble.vectors
    rows = caption_candidates(store, classes)
    cls, ids, score = rank_candidates(store, vectors, rows, k, modality=rank)
    q = Queries(ensemble.classes, ["caption"] * len(ensemble.classes), ensemble.vectors)
    matched = sum(len(r) > 0 for r in rows)
    print(f"  caption: {sum(len(r) for r in rows):,} caption matches for {matched} of {len(classes)} classes; "
          f"top {k} per class by {rank} similarity")
    return q, (cls, ids, score, np.searchsorted(ensemble.classes, cls))


def rerank_override(rerank: int | str | None, recorded: int = 1) -> int:
    """The re-ranking factor a query uses: the index's `recorded` one (None / "auto"), 1 ("off"), or r ≥ 1."""
    if rerank is None or rerank == "auto":
        return max(1, int(recorded))
    if rerank == "off":
        return 1
    try:
        factor = int(rerank)
    except (TypeError, ValueError):
        factor = 0
    if factor < 1:
        raise UserError(f"--rerank must be 'auto' (as the index was tuned), 'off' or a whole number r ≥ 1 (r·k "
                        f"candidates re-scored per query), got {rerank!r}")
    return factor


def retrieve(index_dir: str, classes: list[TargetClass] | str, *, out: str, templates: list[str] | str | None = None,
             mode: str = "t2i", selection: Selection | None = None, query_embeddings: str | None = None,
             examples: str | None = None, model: str | None = None, pretrained: str | None = None,
             device: str | None = None, export_urls: str | None = None, rerank: int | str | None = None,
             model_config: str | None = None, synonyms: str | None = None, prompt_names: str = "as-given",
             frequency: str | None = None, caption_rank: str = "image", fuse: list[str] | None = None,
             nprobe: int | None = None) -> dict:
    """Run the domain's queries against the index in `index_dir` and write the retrieval set `out` (a .parquet,
    its manifest beside it as `out.json`); returns the manifest. `react-index query` runs this.

    `classes`: `load_classes(...)`, or what it reads (a file or a built-in set name); `templates`:
    `load_templates(...)` (prompts with {c}), or what it reads; None: openai_imagenet (none with
    `query_embeddings`); `mode`: t2i, t2t, i2i
    or fusion; `selection`: how many rows per query and which to keep (Selection); `query_embeddings`: a .npy of
    ready query vectors instead of encoding prompts (no torch); `examples`: i2i / fusion example images in
    EXAMPLES/<class name>/; `export_urls`: also write img2dataset's input list there. `rerank`:
    None / "auto" re-ranks as the index's manifest says (its `rerank` factor), "off" never, an integer r
    re-scores r·k candidates per query. `model` / `pretrained` override the index's encoder; `model_config`: an
    open_clip model config JSON (or folder) registered first; `device`: None picks CUDA when present.
    `synonyms`: a synonyms file adding names to the classes (prompted, and matched by caption mode);
    `prompt_names` "most-frequent" with a `frequency` file (react-index frequency) prompts each class by its most
    frequent name only (REAL-Prompt); `caption_rank`: what caption mode ranks a class's matches by, "image"
    (the sample's image embedding, Neural Priming) or "text" (its caption embedding); `fuse`: the modes `fusion`
    merges (default t2i, t2t, and i2i with examples). `nprobe`: inverted lists probed per query on IVF indexes,
    instead of the value `build` tuned (for queries unlike the ones it tuned with, e.g. text queries of an image-only
    store; recorded in the manifest)."""
    selection = Selection() if selection is None else selection
    if isinstance(classes, str):
        from .domain import load_classes

        classes = load_classes(classes)
    if synonyms:
        classes = with_synonyms(classes, load_synonyms(synonyms), synonyms)
    named = prompt_classes(classes, prompt_names, frequency)  # the names prompts use (REAL-Prompt: one per class)
    if caption_rank not in CAPTION_RANKS:
        raise UserError(f"--rank {caption_rank!r} is unknown; choose from {', '.join(CAPTION_RANKS)}")
    if isinstance(templates, str):
        templates = load_templates(templates)
    rerank_override(rerank)  # a bad value is refused before any work
    if model_config:
        require("open_clip", CLIP_INSTALL).add_model_config(model_config)
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} is unknown; choose from {', '.join(MODES)}")
    if mode == "i2i" and not examples:
        raise UserError("--mode i2i needs --examples DIR: example images in DIR/<class name>/*.jpg")
    if examples and mode not in ("i2i", "fusion"):
        raise UserError(f"--examples is used by --mode i2i and fusion only, not {mode}; drop it or change --mode")
    if fuse and mode != "fusion":
        raise UserError(f"--fuse lists the modes --mode fusion merges; it means nothing with --mode {mode}")
    if mode == "fusion":
        modes = list(fuse) if fuse else ["t2i", "t2t"] + (["i2i"] if examples else [])
        wrong = [m for m in modes if m not in MODES or m == "fusion"]
        if wrong or len(modes) < 2 or len(set(modes)) < len(modes):
            raise UserError(f"--fuse {','.join(modes)}: name two or more distinct modes of t2i, t2t, i2i, caption")
        if "i2i" in modes and not examples:
            raise UserError("--fuse with i2i needs --examples DIR: example images in DIR/<class name>/*.jpg")
    else:
        modes = [mode]
    manifest = read_manifest(manifest_uri(index_dir), INDEX)
    missing = sorted({MODE_INDEX[m] for m in modes if m in MODE_INDEX} - set(manifest["indexes"]))
    if missing:
        raise UserError(f"{index_dir}: --mode {mode} needs the {' and '.join(missing)} index, which it lacks "
                        f"(it has {', '.join(manifest['indexes'])}); build one with react-index build --modality")
    templates = templates if templates is not None else ([] if query_embeddings else load_templates(None))
    encoder = None
    if not query_embeddings or "i2i" in modes:
        m = manifest["model"]
        name, weights = model or m["name"], pretrained or m["pretrained"]
        if UNKNOWN in (name, weights):
            raise UserError(f"{index_dir}: nobody named the model that made this index's embeddings (recorded as "
                            f"{m['name']} / {m['pretrained']}), so no encoder can be chosen for the queries: pass "
                            "the model that made them with --model NAME --pretrained TAG|FILE, or ready query "
                            "vectors with --query-embeddings FILE.npy")
        avoid = "pass ready query vectors with --query-embeddings FILE.npy (no torch needed)" \
            if "i2i" not in modes else ""
        print("react-index: importing torch and open_clip ...", flush=True)  # seconds of silence otherwise
        clip_embed = require(".clip_embed", CLIP_INSTALL, avoid, package="react_index")  # the [clip] extra
        encoder = clip_embed.QueryEncoder(name, weights or None, device)
    manifest, store, indexes = open_index(index_dir, {MODE_INDEX[m] for m in modes if m in MODE_INDEX},
                                          manifest=manifest)
    text = None
    if any(m in ("t2i", "t2t", "caption") for m in modes):
        text = embedding_queries(query_embeddings, classes, templates) if query_embeddings else \
            text_queries(named, templates, encoder)
    candidates, queries_by_mode, factors = [], [], {}
    for m in modes:
        if m == "caption":  # candidates by caption text, ranked by exact similarity, K per class
            q, found = caption_queries(text, store, classes, selection.k, caption_rank)
            candidates.append(found)
            queries_by_mode.append(q)
            continue
        q = example_queries(examples, classes, encoder) if m == "i2i" else text
        if selection.per == "class":
            q = q.ensembled(len(classes))
        if q.vectors.shape[1] != manifest["dim"]:
            made_by = query_embeddings if m != "i2i" and query_embeddings else \
                f"the model {model or manifest['model']['name']}"
            raise DomainError(f"query vectors from {made_by} have width {q.vectors.shape[1]}, but the index "
                              f"{index_dir} holds width {manifest['dim']}: queries must come from the model that "
                              "embedded the corpus")
        modality = MODE_INDEX[m]
        if nprobe is not None:
            set_nprobe(indexes[modality], nprobe, f"{index_dir} ({modality})")
        factors[modality] = rerank_override(rerank, manifest["indexes"][modality].get("rerank", 1))
        candidates.append(search(indexes[modality], q, selection.k, store=store, modality=modality,
                                 factor=factors[modality]))
        queries_by_mode.append(q)
    sorted_modes = []
    cls, ids, score = combine(candidates, store.n, sorted_modes)
    keep = select(cls, ids, score, selection, len(classes), store, MODE_INDEX.get(modes[0], caption_rank))
    cls, ids, score = cls[keep], ids[keep], score[keep]

    unique = np.unique(ids)
    meta = join_metadata(store, unique)
    at = pa.array(np.searchsorted(unique, ids))
    rows = meta.take(at)
    locatable = np.asarray(rows.column("image_uri").is_valid()) | np.asarray(rows.column("url").is_valid())
    skipped = int((~locatable).sum())
    cls, ids, score, rows = cls[locatable], ids[locatable], score[locatable], rows.filter(pa.array(locatable))
    if not len(cls):  # an empty set would "succeed" and train on nothing: say why instead
        why = [f"{skipped:,} selected samples have no image locator (images inside parquet inputs)"] if skipped else []
        if "caption" in modes:
            why.append("no caption names any class or synonym (react-index frequency shows the counts; add "
                       "--synonyms, or use another --mode)")
        if selection.min_score is not None:
            why.append(f"--min-score {selection.min_score:g} may drop every row")
        raise UserError(f"{index_dir}: the query selected no rows for any of the {len(classes)} classes"
                        + (f": {'; '.join(why)}" if why else "") + f"; nothing was written to {out}")
    table = pa.table({
        "class_name": pa.array([classes[c].name for c in cls], pa.string()),
        "class_index": pa.array(cls, pa.int32()),
        "templates": _labels_by_row(candidates, queries_by_mode, cls.astype(np.int64) * store.n + ids, store.n,
                                    sorted_modes),
        "rank": pa.array(_rank_in_class(cls, score) if len(cls) else [], pa.int32()),
        "score": pa.array(score, pa.float32()),
        "sample_id": pa.array(ids, pa.int64()),
        **{c: rows.column(c) for c in JOIN_COLUMNS},
    }, schema=ROW_SCHEMA)
    write_parquet_atomic(out, table)
    counts = np.bincount(cls, minlength=len(classes)).tolist()
    extra = {"prompt_names": prompt_names} | ({"frequency": frequency} if frequency else {}) \
        | ({"caption_rank": caption_rank} if "caption" in modes else {}) \
        | ({"fused": modes} if len(modes) > 1 else {}) | ({"nprobe": nprobe} if nprobe is not None else {})
    body = {"model": manifest["model"], "mode": mode, "k": selection.k,
            "selection": asdict(selection) | {"dedup": "within-class", "skipped_no_locator": skipped,
                                              "rerank": factors} | extra,
            "classes": [c.name for c in classes], "templates": templates, "counts_per_class": counts,
            "unique_samples": len(np.unique(ids))}
    sidecar = write_retrieval_manifest(out, body, [lineage_entry(manifest, manifest_uri(index_dir))])
    if export_urls:  # img2dataset's input: url, caption, sample_id, class_name, one row per distinct URL
        from .attach import IMG2DATASET, export_url_list

        n = export_url_list(table, export_urls)
        print(f"{n:,} distinct URLs -> {export_urls}; download them with\n  "
              + IMG2DATASET.format(urls=export_urls, out="DOWNLOAD_DIR")
              + f"\nthen: react-index attach {out} DOWNLOAD_DIR --out NEW.parquet")
    print(summary(sidecar, out, skipped))
    return sidecar


def summary(sidecar: dict, out: str, skipped: int = 0) -> str:
    counts = np.array(sidecar["counts_per_class"])
    lines = [f"retrieval set -> {out}  (manifest {out}.json)",
             f"  {len(counts)} classes, {sidecar['rows']:,} rows, {sidecar['unique_samples']:,} unique samples; "
             f"per class min {counts.min()}, median {int(np.median(counts))}, max {counts.max()}"]
    if skipped:
        lines.append(f"  {skipped:,} rows skipped: their samples have neither a file/tar locator nor a url "
                     "(images stored inside parquet inputs)")
    empty = [sidecar["classes"][i] for i in np.flatnonzero(counts == 0)]
    if empty:
        lines.append(f"  no rows for {len(empty)} class(es): {', '.join(empty[:10])}")
    return "\n".join(lines)

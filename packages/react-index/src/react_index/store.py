"""The embedding store: one output shard per input shard, in the clip-retrieval / LAION layout.

    STORE/img_emb/img_emb_{name}.npy     float16, L2-normalised, one row per kept sample
    STORE/text_emb/text_emb_{name}.npy
    STORE/metadata/metadata_{name}.parquet
    STORE/shards/{name}.json             written last: the shard is complete (resume marker)
    STORE/manifest.json                  react.embedding-store, written when every shard is done

Row i of the store is row i of the shards concatenated in manifest order.

An **in-place** store (`precomputed.ingest_in_place`) is only a manifest over a clip-retrieval / LAION folder's own
parts: its shard paths name them (relative to the store when inside it, else absolute URIs), each with its size and
a checksum of its first and last 64 KiB, checked when the store is opened; its metadata is mapped onto the store's
columns on read.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ._manifests import UserError, local_atomic_path, manifest_uri, write_bytes_atomic, write_parquet_atomic
from .manifest import STORE, read_manifest, write_manifest

log = logging.getLogger("react_index")

UNKNOWN = "unknown"  # a model record's name / pretrained when nobody said which model made the embeddings
MODALITY_DIRS = {"image": ("img_emb", "img_emb"), "text": ("text_emb", "text_emb")}

METADATA_SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("source", pa.string()), ("source_row", pa.int64()),
    ("image_uri", pa.string()), ("image_offset", pa.int64()), ("image_length", pa.int64()),
    ("url", pa.string()), ("json", pa.string()),
])


def _join(root: str, rel: str) -> str:
    """A manifest path: relative to the store's folder, unless it is absolute (an in-place store's parts outside
    it: a local absolute path or a full fsspec URI)."""
    if rel.startswith("/") or "://" in rel:
        return rel
    return root.rstrip("/") + "/" + rel


ENDS_BYTES = 65536  # an in-place file's checksum covers its first and last 64 KiB (npy header, parquet footer)


def file_fingerprint(uri: str) -> tuple[int, str]:
    """(size in bytes, sha256 of the first and last ENDS_BYTES) of a file: cheap to check on every open, and it
    catches a file that was rewritten, truncated, extended or replaced (an edit in the middle only if the size
    changes)."""
    import hashlib

    fs, path = fsspec.core.url_to_fs(uri)
    size = int(fs.size(path))
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        digest.update(f.read(min(size, ENDS_BYTES)))
        tail = min(ENDS_BYTES, size - min(size, ENDS_BYTES))
        if tail:
            f.seek(size - tail)
            digest.update(f.read(tail))
    return size, "sha256:" + digest.hexdigest()


class ChangedFileError(UserError):
    """A file an in-place store or an adopted index references changed since it was recorded."""


def check_fingerprint(uri: str, size: int, ends_sha256: str, owner: str, fix: str) -> None:
    """Refuse a referenced file that is missing or differs from its recorded size / checksum, naming it."""
    try:
        got_size, got_sha = file_fingerprint(uri)
    except FileNotFoundError:
        raise ChangedFileError(f"{uri}: missing; {owner} references it in place. {fix}") from None
    if got_size != size:
        what = f"it holds {got_size:,} bytes, {size:,} when recorded"
    elif got_sha != ends_sha256:
        what = f"its first or last {ENDS_BYTES // 1024} KiB differ from when it was recorded"
    else:
        return
    raise ChangedFileError(f"{uri}: changed since {owner} recorded it ({what}), so its rows may no longer be the "
                           f"ones the row ids name. {fix}")


def emb_path(modality: str, name: str) -> str:
    folder, prefix = MODALITY_DIRS[modality]
    return f"{folder}/{prefix}_{name}.npy"


def marker_path(name: str) -> str:
    return f"shards/{name}.json"


def shard_done(store: str, name: str) -> bool:
    """True when the shard was written; a shard recorded as unreadable is retried on the next run."""
    fs, path = fsspec.core.url_to_fs(_join(store, marker_path(name)))
    return fs.exists(path) and "unreadable_shard" not in read_marker(store, name)["skipped"]


def normalize_float16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float16)


# numpy parses a .npy header with ast.literal_eval, which CPython 3.11 cannot run in two threads at once: it fails
# now and then with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). Headers are
# read from thread pools here (checking a folder's parts in place, verifying a store), so parsing takes turns.
NPY_HEADER_LOCK = threading.Lock()


def _npy_header(f, uri: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an open .npy file; a file that is not one is an error naming it."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        with NPY_HEADER_LOCK:
            return read_header(f)
    except ValueError as e:
        raise UserError(f"{uri}: not a readable .npy file ({e})") from None


def iter_npy(uri: str, chunk_rows: int = 65536):
    """(first row, chunk) of a 2-d .npy file, read sequentially: never the whole array, never a memory map."""
    with fsspec.open(uri, "rb") as f:
        shape, fortran, dtype = _npy_header(f, uri)
        if fortran or len(shape) != 2:
            raise UserError(f"{uri}: expected a C-ordered 2-d array, got shape {shape}")
        rows, width = shape
        for lo in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - lo)
            data = f.read(n * width * dtype.itemsize)
            if len(data) != n * width * dtype.itemsize:
                raise UserError(f"{uri}: file ends early (truncated .npy)")
            yield lo, np.frombuffer(data, dtype=dtype).reshape(n, width)


def npy_shape(uri: str) -> tuple[int, ...]:
    with fsspec.open(uri, "rb") as f:
        return _npy_header(f, uri)[0]


def _write_float16(uri: str, chunks, shape: tuple[int, int], normalize: bool) -> np.ndarray:
    """Write float16 rows from (first row, chunk) pieces atomically, holding one chunk at a time (L2-normalised
    first with `normalize`); returns the mask of rows holding a NaN or an infinity."""
    bad = np.zeros(shape[0], bool)

    def fill(out):
        for lo, chunk in chunks:
            rows = normalize_float16(chunk) if normalize else np.asarray(chunk, np.float16)
            out[lo:lo + len(rows)] = rows
            bad[lo:lo + len(rows)] = ~np.isfinite(rows).all(axis=1)

    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        with local_atomic_path(path) as tmp:  # a killed writer's temp file is removed by the next run
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            fill(out)
            out.flush()
            del out
    else:
        out = np.empty(shape, np.float16)
        fill(out)
        buf = io.BytesIO()
        np.save(buf, out, allow_pickle=False)
        write_bytes_atomic(uri, buf.getvalue())
    return bad


def save_normalized(uri: str, chunks, shape: tuple[int, int]) -> np.ndarray:
    """Write float16 L2-normalised rows from (first row, chunk) pieces, atomically, holding one chunk at a time.
    Returns the mask of rows that are not finite (NaN / inf in the input)."""
    return _write_float16(uri, chunks, shape, normalize=True)


def _keep_rows(uri: str, keep: np.ndarray) -> None:
    """Rewrite a stored float16 .npy with only the rows where `keep` is true."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        old = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        with fs.open(path, "rb") as f:
            old = np.load(io.BytesIO(f.read()), allow_pickle=False)
    ids = np.flatnonzero(keep)
    chunks = ((lo, np.asarray(old[ids[lo:lo + 65536]])) for lo in range(0, len(ids), 65536))
    _write_float16(uri, chunks, (len(ids), old.shape[1]), normalize=False)


def metadata_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in METADATA_SCHEMA.names} for r in rows], METADATA_SCHEMA)


def write_shard(store: str, name: str, source: str, embeddings: dict, metadata: pa.Table,
                skipped: dict[str, int]) -> dict:
    """Write one shard's files (each atomically), then its marker; returns the marker (a manifest shard entry).

    `embeddings` maps a modality to an array, or to an .npy URI read chunk by chunk (for large precomputed files).
    A row whose vector in any modality holds a NaN or an infinity could never be retrieved: it is dropped from
    every modality and from the metadata, and counted as skipped (`nan_embedding`).
    """
    n = metadata.num_rows
    shapes = {m: tuple(npy_shape(a) if isinstance(a, str) else a.shape) for m, a in embeddings.items()}
    for modality, shape in shapes.items():
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(f"shard {name}: {modality} embeddings of shape {shape} for {n} metadata rows")
    if len({shape[1] for shape in shapes.values()}) > 1:
        raise ValueError(f"shard {name}: embedding widths differ between modalities: {shapes}")
    bad = np.zeros(n, bool)
    for modality, array in embeddings.items():
        chunks = iter_npy(array) if isinstance(array, str) else \
            ((lo, array[lo:lo + 65536]) for lo in range(0, len(array), 65536))
        bad |= save_normalized(_join(store, emb_path(modality, name)), chunks, shapes[modality])
    skipped = dict(skipped)
    if bad.any():
        for modality in embeddings:
            _keep_rows(_join(store, emb_path(modality, name)), ~bad)
        metadata = metadata.filter(pa.array(~bad))
        skipped["nan_embedding"] = skipped.get("nan_embedding", 0) + int(bad.sum())
        files = ", ".join(a for a in embeddings.values() if isinstance(a, str)) or source
        rows = np.flatnonzero(bad)
        log.warning("%s: %d row(s) hold NaN/inf embeddings and are skipped (rows %s%s); counted as nan_embedding",
                    files, len(rows), ", ".join(map(str, rows[:10])), ", …" if len(rows) > 10 else "")
    entry = {"name": name, "source": source, "samples": metadata.num_rows,
             "metadata": f"metadata/metadata_{name}.parquet", "skipped": dict(sorted(skipped.items())),
             "dim": int(next(iter(shapes.values()))[1]) if shapes else 0}
    for modality in embeddings:
        entry[MODALITY_DIRS[modality][0]] = emb_path(modality, name)
    write_parquet_atomic(_join(store, entry["metadata"]), metadata)
    write_bytes_atomic(_join(store, marker_path(name)), json.dumps(entry).encode())
    return entry


def read_marker(store: str, name: str) -> dict:
    with fsspec.open(_join(store, marker_path(name)), "rb") as f:
        return json.loads(f.read())


SHARD_ORDERS = {
    "input": "the inputs as given, brace patterns and globs expanded",
    "path-text": "the img_emb/*.npy paths sorted as text, as embedding-reader, autofaiss and clip-retrieval read a "
                 "folder (img_emb_10 before img_emb_2)",
    "appended": "the shards of the store state in lineage (in its order), then those `react-index add` appended (each "
                "add's inputs as given)",
}


def finalize(store: str, names: list[str], model: dict, inputs: list[str], lineage=(),
             shard_order: str = "input") -> dict:
    """Write the store manifest from the shard markers, in the order given (`shard_order` says which rule made it:
    row i of the store is row i of the shards concatenated in that order)."""
    if shard_order not in SHARD_ORDERS:
        raise ValueError(f"unknown shard order {shard_order!r}")
    shards = [read_marker(store, n) for n in names]
    modalities = [m for m, (folder, _) in MODALITY_DIRS.items() if shards and all(folder in s for s in shards)]
    dims = {s["dim"] for s in shards if s["samples"]}
    if len(dims) > 1:
        widths = ", ".join(f"{s['name']}: {s['dim']}" for s in shards if s["samples"])
        raise UserError(f"{store}: shards disagree on the embedding width ({widths}); one store holds one model's "
                        "embeddings: embed or ingest the odd shards into another store")
    skipped = {}
    for s in shards:
        for reason, count in s["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    body = {"model": model, "dim": dims.pop() if dims else 0, "dtype": "float16", "normalized": True,
            "modalities": modalities, "shard_order": shard_order, "shards": shards,
            "counts": {"samples": sum(s["samples"] for s in shards), "skipped": dict(sorted(skipped.items()))},
            "inputs": list(inputs)}
    if any("files" in s for s in shards):  # shards appended to an in-place store (`add`): it stays in place
        fs, path = fsspec.core.url_to_fs(manifest_uri(store))
        if fs.exists(path):
            before = read_manifest(manifest_uri(store), STORE)
            if "in_place" in before:
                body["in_place"] = before["in_place"]
    return write_manifest(manifest_uri(store), STORE, body, lineage)


@dataclass
class Store:
    """An opened embedding store: vectors memory-mapped shard by shard."""

    uri: str
    manifest: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return self.manifest["counts"]["samples"]

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    def offsets(self) -> np.ndarray:
        """Row offset of each shard (and the total at the end)."""
        return np.concatenate([[0], np.cumsum([s["samples"] for s in self.manifest["shards"]])]).astype(np.int64)

    @property
    def in_place(self) -> bool:
        """True for a store that references a precomputed folder's own files (see precomputed.ingest_in_place);
        its shards with `files` are read in place (shards `add` appended may be copies)."""
        return "in_place" in self.manifest

    def path(self, rel: str) -> str:
        """The URI of a path recorded in the manifest (relative to the store, or absolute)."""
        return _join(self.uri, rel)

    def verify(self, workers: int = 8) -> None:
        """Check every file an in-place store references against its recorded size and checksum (a no-op for a
        store that holds its own files); a changed or missing file is a ChangedFileError naming it."""
        from concurrent.futures import ThreadPoolExecutor

        files = [f for s in self.manifest["shards"] for f in s.get("files", [])]
        if not files:
            return
        folder = self.manifest.get("in_place", {}).get("folder", "the folder")
        fix = (f"Write the store again over the folder as it is now (react-index embed {folder} --out {self.uri} "
               "--in-place), then rebuild or re-adopt its indexes")
        owner = f"the in-place store {self.uri}"
        with ThreadPoolExecutor(min(workers, len(files))) as pool:  # network file systems: overlap the round trips
            list(pool.map(lambda f: check_fingerprint(self.path(f["file"]), f["bytes"], f["ends_sha256"], owner,
                                                      fix), files))

    def shard_vectors(self, modality: str, i: int) -> np.ndarray:
        key = (modality, i)
        if key not in self._cache:
            shard = self.manifest["shards"][i]
            rel = shard.get(MODALITY_DIRS[modality][0])
            if rel is None:
                raise UserError(f"{self.uri}: the store holds no {modality} embeddings (it has "
                                f"{', '.join(self.manifest['modalities']) or 'none'})")
            uri = self.path(rel)
            fs, path = fsspec.core.url_to_fs(uri)
            if isinstance(fs, LocalFileSystem):
                with NPY_HEADER_LOCK:
                    self._cache[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                with fs.open(path, "rb") as f:
                    data = f.read()
                with NPY_HEADER_LOCK:
                    self._cache[key] = np.load(io.BytesIO(data), allow_pickle=False)
        return self._cache[key]

    def iter_chunks(self, modality: str, chunk_rows: int = 65536):
        """(first row, float32 chunk) over the whole store, in row order.

        Local shards are read chunk by chunk with plain reads rather than through a memory map, so a
        pass over a store larger than RAM does not leave the whole store resident in this process.
        """
        start = 0
        for i in range(len(self.manifest["shards"])):
            vectors = self.shard_vectors(modality, i)
            for lo in range(0, len(vectors), chunk_rows):
                hi = min(len(vectors), lo + chunk_rows)
                if isinstance(vectors, np.memmap):
                    raw = np.fromfile(vectors.filename, dtype=vectors.dtype, count=(hi - lo) * vectors.shape[1],
                                      offset=vectors.offset + lo * vectors.shape[1] * vectors.itemsize)
                    chunk = raw.reshape(hi - lo, vectors.shape[1]).astype(np.float32)
                else:
                    chunk = np.asarray(vectors[lo:hi], dtype=np.float32)
                yield start + lo, chunk
            start += len(vectors)

    def rows(self, modality: str, ids: np.ndarray) -> np.ndarray:
        """float32 vectors of arbitrary rows (any order)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > 50_000:  # many rows: one sequential pass beats random reads, and keeps RSS low
            out = np.empty((len(ids), self.dim), dtype=np.float32)
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]
            for start, chunk in self.iter_chunks(modality):
                lo, hi = np.searchsorted(sorted_ids, [start, start + len(chunk)])
                out[order[lo:hi]] = chunk[sorted_ids[lo:hi] - start]
            return out
        offsets = self.offsets()
        shard_of = np.searchsorted(offsets, ids, side="right") - 1
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for i in np.unique(shard_of):
            sel = shard_of == i
            out[sel] = self.shard_vectors(modality, int(i))[ids[sel] - offsets[i]]
        return out

    def metadata(self, i: int, columns=None, rows=None) -> pa.Table:
        """Shard i's metadata in METADATA_SCHEMA's columns (`columns`: only these), all rows or only `rows`
        (positions within the shard, in the order given). An in-place store's clip-retrieval metadata is mapped
        on read, as ingest maps it."""
        shard = self.manifest["shards"][i]
        uri = self.path(shard["metadata"])
        if "files" in shard:  # a part read in place: its own clip-retrieval columns
            from .precomputed import read_mapped_metadata

            if "locator" not in self._cache:
                from .precomputed import ImageLocator

                self._cache["locator"] = ImageLocator(self.manifest.get("in_place", {}).get("images_root"))
            return read_mapped_metadata(uri, shard["name"], self._cache["locator"], columns, rows)
        with fsspec.open(uri, "rb") as f:
            table = pq.read_table(f, columns=columns)
        return table if rows is None else table.take(pa.array(np.asarray(rows, dtype=np.int64)))


def index_store_uri(index_dir: str, manifest: dict) -> str:
    """Where the store an index was built from is now: the folder its lineage records, or — when nothing is there
    and the index folder holds a `store/` of its own — that one. The recorded path can be stale without anything
    being wrong: `react-index build … --out index` records `index/store` relative to the directory it ran in, and
    a moved or copied index folder carries its store along. Callers check the store's id against the lineage, so
    the fallback can never pair an index with another store's rows."""
    own = f"{index_dir.rstrip('/')}/store"
    if not manifest["lineage"]:
        return own
    recorded = manifest["lineage"][0]["uri"].rsplit("/", 1)[0]
    if recorded != own and not _exists(manifest_uri(recorded)) and _exists(manifest_uri(own)):
        return own
    return recorded


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


def open_store(uri: str, *, verify: bool = True) -> Store:
    """Open the store at `uri`. An in-place store's files are checked against their recorded sizes and checksums
    first (`verify`): a changed file is refused by name, never read as if it held the rows the ids name."""
    store = Store(uri.rstrip("/"), read_manifest(manifest_uri(uri), STORE))
    if verify:
        store.verify()
    return store

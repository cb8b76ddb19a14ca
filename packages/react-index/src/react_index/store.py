"""The embedding store: one output shard per input shard, in the clip-retrieval / LAION layout.

    STORE/img_emb/img_emb_{name}.npy     float16, L2-normalised, one row per kept sample
    STORE/text_emb/text_emb_{name}.npy
    STORE/metadata/metadata_{name}.parquet
    STORE/shards/{name}.json             written last: the shard is complete (resume marker)
    STORE/manifest.json                  react.embedding-store, written when every shard is done

Row i of the store is row i of the shards concatenated in manifest order.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ._manifests import write_bytes_atomic
from .manifest import STORE, read_manifest, write_manifest

MODALITY_DIRS = {"image": ("img_emb", "img_emb"), "text": ("text_emb", "text_emb")}

METADATA_SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("source", pa.string()), ("source_row", pa.int64()),
    ("image_uri", pa.string()), ("image_offset", pa.int64()), ("image_length", pa.int64()),
    ("url", pa.string()), ("json", pa.string()),
])


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


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
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float16)


def iter_npy(uri: str, chunk_rows: int = 65536):
    """(first row, chunk) of a 2-d .npy file, read sequentially: never the whole array, never a memory map."""
    with fsspec.open(uri, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or len(shape) != 2:
            raise ValueError(f"{uri}: expected a C-ordered 2-d array, got shape {shape}")
        rows, width = shape
        for lo in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - lo)
            data = f.read(n * width * dtype.itemsize)
            if len(data) != n * width * dtype.itemsize:
                raise ValueError(f"{uri}: file ends early (truncated .npy)")
            yield lo, np.frombuffer(data, dtype=dtype).reshape(n, width)


def npy_shape(uri: str) -> tuple[int, ...]:
    with fsspec.open(uri, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read_header(f)[0]


def save_normalized(uri: str, chunks, shape: tuple[int, int], ) -> None:
    """Write float16 L2-normalised rows from (first row, chunk) pieces, atomically, holding one chunk at a time."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        for lo, chunk in chunks:
            out[lo:lo + len(chunk)] = normalize_float16(chunk)
        out.flush()
        del out
        os.replace(tmp, path)
    else:
        out = np.empty(shape, np.float16)
        for lo, chunk in chunks:
            out[lo:lo + len(chunk)] = normalize_float16(chunk)
        buf = io.BytesIO()
        np.save(buf, out, allow_pickle=False)
        write_bytes_atomic(uri, buf.getvalue())


def metadata_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in METADATA_SCHEMA.names} for r in rows], METADATA_SCHEMA)


def write_shard(store: str, name: str, source: str, embeddings: dict, metadata: pa.Table,
                skipped: dict[str, int]) -> dict:
    """Write one shard's files (each atomically), then its marker; returns the marker (a manifest shard entry).

    `embeddings` maps a modality to an array, or to an .npy URI read chunk by chunk (for large precomputed files).
    """
    n = metadata.num_rows
    entry = {"name": name, "source": source, "samples": n, "metadata": f"metadata/metadata_{name}.parquet",
             "skipped": dict(sorted(skipped.items())), "dim": 0}
    for modality, array in embeddings.items():
        shape = npy_shape(array) if isinstance(array, str) else array.shape
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(f"shard {name}: {modality} embeddings of shape {tuple(shape)} for {n} metadata rows")
        entry["dim"] = int(shape[1])
        entry[f"{MODALITY_DIRS[modality][0]}"] = emb_path(modality, name)
        chunks = iter_npy(array) if isinstance(array, str) else \
            ((lo, array[lo:lo + 65536]) for lo in range(0, len(array), 65536))
        save_normalized(_join(store, emb_path(modality, name)), chunks, tuple(shape))
    buf = io.BytesIO()
    pq.write_table(metadata, buf)
    write_bytes_atomic(_join(store, entry["metadata"]), buf.getvalue())
    write_bytes_atomic(_join(store, marker_path(name)), json.dumps(entry).encode())
    return entry


def read_marker(store: str, name: str) -> dict:
    with fsspec.open(_join(store, marker_path(name)), "rb") as f:
        return json.loads(f.read())


def finalize(store: str, names: list[str], model: dict, inputs: list[str], lineage=()) -> dict:
    """Write the store manifest from the shard markers, in input order."""
    shards = [read_marker(store, n) for n in names]
    modalities = [m for m, (folder, _) in MODALITY_DIRS.items() if shards and all(folder in s for s in shards)]
    dims = {s["dim"] for s in shards if s["samples"]}
    if len(dims) > 1:
        raise ValueError(f"{store}: shards disagree on the embedding width: {sorted(dims)}")
    skipped = {}
    for s in shards:
        for reason, count in s["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    body = {"model": model, "dim": dims.pop() if dims else 0, "dtype": "float16", "normalized": True,
            "modalities": modalities, "shards": shards,
            "counts": {"samples": sum(s["samples"] for s in shards), "skipped": dict(sorted(skipped.items()))},
            "inputs": list(inputs)}
    return write_manifest(_join(store, "manifest.json"), STORE, body, lineage)


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

    def shard_vectors(self, modality: str, i: int) -> np.ndarray:
        key = (modality, i)
        if key not in self._cache:
            shard = self.manifest["shards"][i]
            rel = shard.get(MODALITY_DIRS[modality][0])
            if rel is None:
                raise ValueError(f"{self.uri}: the store holds no {modality} embeddings")
            uri = _join(self.uri, rel)
            fs, path = fsspec.core.url_to_fs(uri)
            if isinstance(fs, LocalFileSystem):
                self._cache[key] = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                with fs.open(path, "rb") as f:
                    self._cache[key] = np.load(io.BytesIO(f.read()), allow_pickle=False)
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

    def metadata(self, i: int, columns=None) -> pa.Table:
        with fsspec.open(_join(self.uri, self.manifest["shards"][i]["metadata"]), "rb") as f:
            return pq.read_table(f, columns=columns)


def open_store(uri: str) -> Store:
    return Store(uri.rstrip("/"), read_manifest(_join(uri, "manifest.json"), STORE))

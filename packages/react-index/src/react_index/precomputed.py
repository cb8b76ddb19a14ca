"""Ingest precomputed embeddings in the clip-retrieval / LAION layout into a store, without torch.

    SRC/img_emb/img_emb_{i}.npy   SRC/text_emb/text_emb_{i}.npy (optional)   SRC/metadata/metadata_{i}.parquet

Parts are taken in the order of their paths sorted as text (img_emb_10 before img_emb_2): the order in which
embedding-reader, and so autofaiss and clip-retrieval, read the folder, so row i of the store is row i of an
index those tools build on the same folder. Vectors are re-normalised and stored as float16; a row holding a
NaN or an infinity is dropped and counted (`nan_embedding`). Metadata columns are mapped onto the store's
(`caption`, `url`, `key`). `image_path` is a locator only when it names a file that exists (absolute, or
relative to `images_root`); otherwise it was written on someone else's machine and the row is known by its
url alone. The original `image_path` is kept in the `json` column. Shards already ingested are skipped.

`ingest_in_place` makes a store of the folder without copying it: when every part is float16 and its sampled rows
are unit-norm, the store manifest references the parts and their metadata where they are (with sizes and
checksums, checked on open) and the metadata is mapped onto the store's columns on read. Every row is kept, so row
i stays row i of the folder (and of any index another tool built on it): a NaN row found by the sample is counted,
not dropped (faiss never returns a NaN-scored row); a row of any other norm, an infinite one included, refuses the
folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from ._manifests import manifest_uri, read_json
from .manifest import STORE, write_manifest
from .sources import IMAGE_EXTS, SourceError
from .store import (
    METADATA_SCHEMA,
    _npy_header,
    file_fingerprint,
    finalize,
    metadata_table,
    npy_shape,
    read_marker,
    shard_done,
    write_shard,
)

log = logging.getLogger("react_index")

_PART = re.compile(r"img_emb_(\w+)\.npy")
META_COLUMNS = ("caption", "url", "key", "image_path")


def precomputed_shards(src: str) -> list[str]:
    """The shard suffixes `i` of SRC/img_emb/img_emb_{i}.npy, in the order of their paths sorted as text."""
    fs, path = fsspec.core.url_to_fs(src)
    folder = path.rstrip("/") + "/img_emb"
    npys = sorted(p for p in fs.find(folder) if p.endswith(".npy"))
    parts = [p for p in npys if p.rsplit("/", 1)[0] == folder and _PART.fullmatch(p.rsplit("/", 1)[-1])]
    others = sorted(set(npys) - set(parts))
    if others:  # embedding-reader (autofaiss, clip-retrieval) would read these too, and number rows differently
        raise SourceError(f"{src}/img_emb: holds .npy files not named img_emb_{{i}}.npy ({', '.join(others[:3])}"
                          f"{' …' if len(others) > 3 else ''}); move them out so row ids match other tools'")
    if not parts:
        raise SourceError(f"{src}/img_emb: no img_emb_*.npy files")
    return [_PART.fullmatch(p.rsplit("/", 1)[-1]).group(1) for p in sorted(parts)]


class ImageLocator:
    """clip-retrieval's `image_path` → the image file it names, or None when no such file is here."""

    def __init__(self, images_root: str | None = None):
        if images_root and "://" not in images_root:
            images_root = os.path.abspath(images_root)
        self.root = images_root.rstrip("/") if images_root else None
        self._names: dict[str, set[str]] = {}

    def clear(self) -> None:
        self._names.clear()

    def __call__(self, image_path: str | None) -> str | None:
        if not image_path:
            return None
        if "://" in image_path or image_path.startswith("/"):
            candidate = image_path
        elif self.root:
            candidate = f"{self.root}/{image_path}"
        else:  # relative to someone else's download
            return None
        parent, _, base = candidate.rpartition("/")
        names = self._listing(parent)
        if base in names:
            return candidate
        # img2dataset keys name the image without its extension (00000/000000004 -> 00000/000000004.jpg)
        return next((f"{candidate}.{ext}" for ext in IMAGE_EXTS if f"{base}.{ext}" in names), None)

    def _listing(self, parent: str) -> set[str]:
        """File names in `parent`: one listing per folder instead of one existence check per row."""
        if parent not in self._names:
            fs, path = fsspec.core.url_to_fs(parent or "/")
            try:
                entries = fs.ls(path, detail=True)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                entries = []
            self._names[parent] = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file"}
        return self._names[parent]


def _read_metadata(meta_uri: str, name: str, wanted=META_COLUMNS) -> pa.Table:
    try:
        with fsspec.open(meta_uri, "rb") as f:
            pf = pq.ParquetFile(f)
            columns = [c for c in wanted if c in pf.schema_arrow.names]
            return pf.read(columns=columns)
    except FileNotFoundError:
        raise SourceError(f"{meta_uri}: missing; every img_emb_{name}.npy needs its metadata parquet") from None
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"{meta_uri}: not a readable parquet file ({e})") from None


def map_metadata(meta: pa.Table, name: str, meta_uri: str, locate: ImageLocator, positions=None) -> pa.Table:
    """clip-retrieval metadata rows → the store's METADATA_SCHEMA (`positions`: each row's row in its part)."""
    cols = meta.column_names
    n = meta.num_rows
    positions = range(n) if positions is None else [int(p) for p in positions]
    column = {c: meta.column(c).to_pylist() if c in cols else [None] * n for c in META_COLUMNS}
    return metadata_table([{"key": str(column["key"][j]) if column["key"][j] is not None else f"{name}_{i:09d}",
                            "caption": column["caption"][j], "url": column["url"][j],
                            "image_uri": locate(column["image_path"][j]),
                            "json": json.dumps({"image_path": column["image_path"][j]})
                            if column["image_path"][j] is not None else None,
                            "source": meta_uri, "source_row": i} for j, i in enumerate(positions)])


# the clip-retrieval columns each store column is made from (the rest come from where the row is)
_MAPPED_FROM = {"key": ("key",), "caption": ("caption",), "url": ("url",), "image_uri": ("image_path",),
                "json": ("image_path",)}


def read_mapped_metadata(meta_uri: str, name: str, locate: ImageLocator, columns=None, rows=None) -> pa.Table:
    """An in-place part's metadata as the store's columns, read on demand: only the source columns `columns`
    need, and only `rows` (positions in the part) when given. `image_path` follows ingest's rule."""
    columns = list(columns or METADATA_SCHEMA.names)
    unknown = [c for c in columns if c not in METADATA_SCHEMA.names]
    if unknown:
        raise KeyError(f"no metadata column {unknown[0]!r} (the store has {', '.join(METADATA_SCHEMA.names)})")
    wanted = sorted({src for c in columns for src in _MAPPED_FROM.get(c, ())})
    meta = _read_metadata(meta_uri, name, wanted)
    positions = None
    if rows is not None:
        positions = np.asarray(rows, dtype=np.int64)
        meta = meta.take(pa.array(positions))
    locate.clear()  # one folder listing per image folder of this read, not kept across the whole corpus
    return map_metadata(meta, name, meta_uri, locate, positions).select(columns)


def _same_folder(a: str, b: str) -> bool:
    fs_a, path_a = fsspec.core.url_to_fs(a)
    fs_b, path_b = fsspec.core.url_to_fs(b)
    if isinstance(fs_a, LocalFileSystem) and isinstance(fs_b, LocalFileSystem):
        return os.path.realpath(path_a) == os.path.realpath(path_b)
    return a.rstrip("/") == b.rstrip("/")


def ingest_precomputed(src: str, out: str, model: dict, images_root: str | None = None) -> dict:
    """Copy a clip-retrieval layout into a store at `out`; returns the store manifest."""
    src = src.rstrip("/")
    if _same_folder(src, out):
        raise SourceError(f"--out {out} is the folder of precomputed embeddings itself: copying would overwrite the "
                          "parts it reads; pass --in-place to make the folder a store without copying, or another "
                          "--out")
    names = precomputed_shards(src)
    fs, _ = fsspec.core.url_to_fs(src)
    locate = ImageLocator(images_root)
    width: tuple[str, int] | None = None  # (a file, its width): every file must match it
    for name in tqdm(names, desc="ingest", unit="shard"):
        if shard_done(out, name):
            marker = read_marker(out, name)
            if marker["samples"] and width is None:
                width = (f"{out}/{marker.get('img_emb')}", marker["dim"])
            continue
        embeddings = {"image": f"{src}/img_emb/img_emb_{name}.npy"}
        text_uri = f"{src}/text_emb/text_emb_{name}.npy"
        if fs.exists(fsspec.core.url_to_fs(text_uri)[1]):
            embeddings["text"] = text_uri
        meta_uri = f"{src}/metadata/metadata_{name}.parquet"
        meta = _read_metadata(meta_uri, name)
        for modality, uri in embeddings.items():
            shape = npy_shape(uri)
            if len(shape) != 2 or shape[0] != meta.num_rows:
                raise SourceError(f"{src}: shard {name}: {modality} embeddings have shape {shape} but "
                                  f"{meta_uri} has {meta.num_rows} rows")
            if width is None:
                width = (uri, shape[1])
            elif shape[1] != width[1]:
                raise SourceError(f"{uri} holds {shape[1]}-wide embeddings but {width[0]} holds {width[1]}-wide "
                                  "ones: image and text embeddings of one store come from one CLIP model")
        locate.clear()
        write_shard(out, name, meta_uri, embeddings, map_metadata(meta, name, meta_uri, locate), {})
    return finalize(out, names, model, [src], shard_order="path-text")


# --- in place ----------------------------------------------------------------------------------------------------

SAMPLE_BLOCKS = 4  # contiguous blocks read from every part: its first rows, its last rows and two between
SAMPLE_ROWS = 256  # rows per block: 1,024 rows (1 MiB at width 512) per part, a few seeks
NORM_TOLERANCE = 1e-2  # |norm - 1| allowed (float16 rounding of a unit vector stays below 1e-3)


class NotInPlace(SourceError):
    """The folder cannot be a store in place (the message says why); copying it into a store still works."""


def _reference(uri: str, out: str) -> str:
    """How a store at `out` names the file `uri`: relative when it lies inside the store, else absolute."""
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        path, root = os.path.abspath(path), os.path.abspath(fsspec.core.url_to_fs(out)[1])
        return os.path.relpath(path, root) if path.startswith(root.rstrip("/") + "/") else path
    root = out.rstrip("/") + "/"
    return uri[len(root):] if uri.startswith(root) else uri


def _absolute(uri: str) -> str:
    fs, path = fsspec.core.url_to_fs(uri)
    return os.path.abspath(path) if isinstance(fs, LocalFileSystem) else uri.rstrip("/")


def _check_part(uri: str, rows_expected: int, why_copy: str) -> dict:
    """Header, size and a norm sample of one .npy part that is to be read in place; returns what was seen."""
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, uri)
        offset = f.tell()
        if fortran or len(shape) != 2:
            raise NotInPlace(f"{uri}: expected a C-ordered 2-d array, got shape {shape}{' (Fortran order)' * fortran}")
        rows, width = shape
        if dtype != np.float16:
            raise NotInPlace(f"{uri}: holds {dtype} vectors; a store reads float16 parts in place as they are. "
                             f"{why_copy}")
        if rows != rows_expected:
            raise NotInPlace(f"{uri}: holds {rows} rows but its metadata has {rows_expected}")
        row_bytes = width * dtype.itemsize
        size = int(fs.size(path))
        if size != offset + rows * row_bytes:
            raise NotInPlace(f"{uri}: {size:,} bytes, but its header promises {offset + rows * row_bytes:,} "
                             "(truncated or extended .npy)")
        starts = sorted({int(s) for s in np.linspace(0, max(0, rows - SAMPLE_ROWS), SAMPLE_BLOCKS)}) if rows else []
        sampled, nonfinite, worst = set(), [], (0.0, -1, 1.0)
        for start in starts:
            n = min(SAMPLE_ROWS, rows - start)
            f.seek(offset + start * row_bytes)
            x = np.frombuffer(f.read(n * row_bytes), dtype=dtype).reshape(n, width).astype(np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                norms = np.linalg.norm(x, axis=1)
            nan = np.isnan(norms)
            nonfinite += [start + int(r) for r in np.flatnonzero(nan)]
            error = np.where(nan, 0.0, np.abs(norms - 1))
            j = int(np.argmax(error)) if n else 0
            if n and error[j] > worst[0]:
                worst = (float(error[j]), start + j, float(norms[j]))
            sampled.update(range(start, start + n))
    sampled = len(sampled)
    if worst[0] > NORM_TOLERANCE:
        raise NotInPlace(f"{uri}: row {worst[1]} has L2 norm {worst[2]:.4g}; a store reads parts in place only when "
                         f"their rows are unit-norm (|norm - 1| <= {NORM_TOLERANCE} on {sampled:,} sampled rows of "
                         f"every part). {why_copy}")
    return {"rows": rows, "width": width, "sampled": sampled, "nonfinite": sorted(set(nonfinite)),
            "max_norm_error": worst[0]}


def _metadata_rows(meta_uri: str, name: str) -> int:
    try:
        with fsspec.open(meta_uri, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows  # the footer only
    except FileNotFoundError:
        raise SourceError(f"{meta_uri}: missing; every img_emb_{name}.npy needs its metadata parquet") from None
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"{meta_uri}: not a readable parquet file ({e})") from None


def _refuse_existing_copy(out: str) -> None:
    """An in-place manifest must not be written over a store that holds its own files."""
    fs, path = fsspec.core.url_to_fs(out)
    if fs.exists(manifest_uri(path)):
        doc = read_json(manifest_uri(out))
        if doc.get("kind") == STORE and "in_place" not in doc:
            raise SourceError(f"{out}: holds a store with its own copy of the embeddings; write the in-place store "
                              "to another --out")
    if fs.isdir(path.rstrip("/") + "/shards"):
        raise SourceError(f"{out}: holds an unfinished copied store (shards/); write the in-place store to another "
                          "--out")


def ingest_in_place(src: str, out: str, model: dict, images_root: str | None = None, workers: int = 8) -> dict:
    """Make `out` a store over the precomputed folder `src` without copying it; returns the store manifest.

    Every part must be float16 with unit-norm rows (checked on a sample of every part) and match its metadata's
    row count; otherwise NotInPlace says why (copying with `ingest_precomputed` re-normalises and converts). The
    manifest records each referenced file's size and the checksum of its first and last 64 KiB."""
    t0 = time.perf_counter()
    src = src.rstrip("/")
    names = precomputed_shards(src)
    _refuse_existing_copy(out)
    fs, _ = fsspec.core.url_to_fs(src)
    why_copy = (f"Drop --in-place to copy the folder into the store instead (re-normalised, as float16), or fix "
                f"the folder: {src}")

    def part(name: str) -> dict:
        meta_uri = f"{src}/metadata/metadata_{name}.parquet"
        n = _metadata_rows(meta_uri, name)
        files = {"img_emb": f"{src}/img_emb/img_emb_{name}.npy", "metadata": meta_uri}
        text_uri = f"{src}/text_emb/text_emb_{name}.npy"
        if fs.exists(fsspec.core.url_to_fs(text_uri)[1]):
            files["text_emb"] = text_uri
        seen = {k: _check_part(uri, n, why_copy) for k, uri in files.items() if k != "metadata"}
        widths = {seen[k]["width"] for k in seen}
        if len(widths) > 1:
            raise SourceError(f"{files['text_emb']} holds {seen['text_emb']['width']}-wide embeddings but "
                              f"{files['img_emb']} holds {seen['img_emb']['width']}-wide ones: image and text "
                              "embeddings of one store come from one CLIP model")
        entry = {"name": name, "source": _absolute(meta_uri), "samples": n,
                 "metadata": _reference(meta_uri, out), "dim": widths.pop(), "skipped": {}}
        entry |= {k: _reference(uri, out) for k, uri in files.items() if k != "metadata"}
        entry["files"] = []
        for k in ("img_emb", "text_emb", "metadata"):
            if k in files:
                size, sha = file_fingerprint(files[k])
                entry["files"].append({"file": entry[k], "bytes": size, "ends_sha256": sha})
        return {"entry": entry, "seen": seen, "files": files}

    with ThreadPoolExecutor(max(1, min(workers, len(names)))) as pool:
        parts = list(tqdm(pool.map(part, names), total=len(names), desc="check in place", unit="part"))
    shards = [p["entry"] for p in parts]
    dims = {s["dim"] for s in shards if s["samples"]}
    if len(dims) > 1:
        first = {}
        for p in parts:
            first.setdefault(p["entry"]["dim"], p["files"]["img_emb"])
        a, b = list(first.items())[:2]
        raise SourceError(f"{b[1]} holds {b[0]}-wide embeddings but {a[1]} holds {a[0]}-wide ones: one store holds "
                          "one model's embeddings")
    modalities = [m for m, key in (("image", "img_emb"), ("text", "text_emb")) if all(key in s for s in shards)]
    for s in shards:  # a modality some parts lack is not a modality of the store
        if "text" not in modalities and "text_emb" in s:
            dropped = s.pop("text_emb")
            s["files"] = [f for f in s["files"] if f["file"] != dropped]
    nonfinite = [(p["files"][k], rows) for p in parts for k, seen in p["seen"].items()
                 if (rows := seen["nonfinite"]) and (k == "img_emb" or "text" in modalities)]
    if nonfinite:
        log.warning("%d sampled row(s) hold NaN embeddings (%s); they are kept, so that row ids stay the folder's, "
                    "and faiss never returns them (a NaN score ranks nowhere). A copy (without --in-place) drops "
                    "them, but renumbers every later row", sum(len(r) for _, r in nonfinite),
                    "; ".join(f"{uri} rows {', '.join(map(str, rows[:5]))}" for uri, rows in nonfinite[:3]))
    sampled = sum(seen["sampled"] for p in parts for seen in p["seen"].values())
    check = {"rows_sampled": sampled, "nonfinite_rows": sum(len(r) for _, r in nonfinite),
             "max_norm_error": round(max((seen["max_norm_error"] for p in parts for seen in p["seen"].values()),
                                         default=0.0), 6)}
    root = images_root
    if root and "://" not in root:
        root = os.path.abspath(root)
    body = {"model": model, "dim": dims.pop() if dims else 0, "dtype": "float16", "normalized": True,
            "modalities": modalities, "shard_order": "path-text", "shards": shards,
            "counts": {"samples": sum(s["samples"] for s in shards), "skipped": {}}, "inputs": [src],
            "in_place": {"folder": _absolute(src), "images_root": root, "check": check}}
    manifest = write_manifest(manifest_uri(out), STORE, body)
    print(f"in place: {body['counts']['samples']:,} rows in {len(shards)} part(s) of {src}, referenced, not copied "
          f"({sampled:,} sampled rows unit-norm within {check['max_norm_error']:.1e}; "
          f"{time.perf_counter() - t0:.1f}s)")
    return manifest

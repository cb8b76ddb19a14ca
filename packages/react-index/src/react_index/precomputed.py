"""Ingest precomputed embeddings in the clip-retrieval / LAION layout into a store, without torch.

    SRC/img_emb/img_emb_{i}.npy   SRC/text_emb/text_emb_{i}.npy (optional)   SRC/metadata/metadata_{i}.parquet

Parts are taken in the order of their paths sorted as text (img_emb_10 before img_emb_2): the order in which
embedding-reader, and so autofaiss and clip-retrieval, read the folder, so row i of the store is row i of an
index those tools build on the same folder. Vectors are re-normalised and stored as float16; a row holding a
NaN or an infinity is dropped and counted (`nan_embedding`). Metadata columns are mapped onto the store's
(`caption`, `url`, `key`). `image_path` is a locator only when it names a file that exists (absolute, or
relative to `images_root`); otherwise it was written on someone else's machine and the row is known by its
url alone. The original `image_path` is kept in the `json` column. Shards already ingested are skipped.
"""

from __future__ import annotations

import json
import os
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .sources import IMAGE_EXTS, SourceError
from .store import finalize, metadata_table, npy_shape, read_marker, shard_done, write_shard

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


def _read_metadata(meta_uri: str, name: str) -> pa.Table:
    try:
        with fsspec.open(meta_uri, "rb") as f:
            pf = pq.ParquetFile(f)
            columns = [c for c in META_COLUMNS if c in pf.schema_arrow.names]
            return pf.read(columns=columns)
    except FileNotFoundError:
        raise SourceError(f"{meta_uri}: missing; every img_emb_{name}.npy needs its metadata parquet") from None
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"{meta_uri}: not a readable parquet file ({e})") from None


def ingest_precomputed(src: str, out: str, model: dict, images_root: str | None = None) -> dict:
    """Copy a clip-retrieval layout into a store at `out`; returns the store manifest."""
    src = src.rstrip("/")
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
        cols = meta.column_names
        column = {c: meta.column(c).to_pylist() if c in cols else [None] * meta.num_rows for c in META_COLUMNS}
        locate.clear()
        rows = [{"key": str(column["key"][i]) if column["key"][i] is not None else f"{name}_{i:09d}",
                 "caption": column["caption"][i], "url": column["url"][i],
                 "image_uri": locate(column["image_path"][i]),
                 "json": json.dumps({"image_path": column["image_path"][i]})
                 if column["image_path"][i] is not None else None,
                 "source": meta_uri, "source_row": i} for i in range(meta.num_rows)]
        write_shard(out, name, meta_uri, embeddings, metadata_table(rows), {})
    return finalize(out, names, model, [src], shard_order="path-text")

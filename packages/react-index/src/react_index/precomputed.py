"""Ingest precomputed embeddings in the clip-retrieval / LAION layout into a store, without torch.

    SRC/img_emb/img_emb_{i}.npy   SRC/text_emb/text_emb_{i}.npy (optional)   SRC/metadata/metadata_{i}.parquet

Vectors are re-normalised and stored as float16; metadata columns are mapped onto the store's
(`caption`, `url`, `key`, and `image_path` as the image locator). Shards already ingested are skipped.
"""

from __future__ import annotations

import re

import fsspec
import pyarrow.parquet as pq
from tqdm import tqdm

from .sources import SourceError
from .store import finalize, metadata_table, npy_shape, shard_done, write_shard


def precomputed_shards(src: str) -> list[str]:
    """The shard suffixes `i` present in SRC/img_emb, in numeric order."""
    fs, path = fsspec.core.url_to_fs(src)
    found = []
    for p in fs.ls(path.rstrip("/") + "/img_emb", detail=False):
        m = re.fullmatch(r"img_emb_(\w+)\.npy", p.rsplit("/", 1)[-1])
        if m:
            found.append(m.group(1))
    if not found:
        raise SourceError(f"{src}/img_emb: no img_emb_*.npy files")
    return sorted(found, key=lambda s: (int(s) if s.isdigit() else float("inf"), s))


def ingest_precomputed(src: str, out: str, model: dict) -> dict:
    """Copy a clip-retrieval layout into a store at `out`; returns the store manifest."""
    src = src.rstrip("/")
    names = precomputed_shards(src)
    fs, _ = fsspec.core.url_to_fs(src)
    for name in tqdm(names, desc="ingest", unit="shard"):
        if shard_done(out, name):
            continue
        embeddings = {"image": f"{src}/img_emb/img_emb_{name}.npy"}
        text_uri = f"{src}/text_emb/text_emb_{name}.npy"
        if fs.exists(fsspec.core.url_to_fs(text_uri)[1]):
            embeddings["text"] = text_uri
        meta_uri = f"{src}/metadata/metadata_{name}.parquet"
        try:
            with fsspec.open(meta_uri, "rb") as f:
                meta = pq.read_table(f)
        except FileNotFoundError:
            raise SourceError(f"{meta_uri}: missing; every img_emb_{name}.npy needs its metadata parquet") from None
        for modality, uri in embeddings.items():
            shape = npy_shape(uri)
            if len(shape) != 2 or shape[0] != meta.num_rows:
                raise SourceError(f"{src}: shard {name}: {modality} embeddings have shape {shape} but "
                                  f"{meta_uri} has {meta.num_rows} rows")
        cols = meta.column_names
        column = {c: meta.column(c).to_pylist() if c in cols else [None] * meta.num_rows
                  for c in ("caption", "url", "key", "image_path")}
        rows = [{"key": column["key"][i] if column["key"][i] is not None else f"{name}_{i:09d}",
                 "caption": column["caption"][i], "url": column["url"][i], "image_uri": column["image_path"][i],
                 "source": meta_uri, "source_row": i} for i in range(meta.num_rows)]
        write_shard(out, name, meta_uri, embeddings, metadata_table(rows), {})
    return finalize(out, names, model, [src])

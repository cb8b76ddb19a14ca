"""`react-index materialize`: copy a retrieval set's images into new webdataset shards, and point a new
retrieval set at them — for training far from the original corpus.

Each distinct sample becomes `{sample_id:012d}.{jpg|png|webp|…}` + `.txt` (caption) + `.json` (its
retrieval fields) in `OUT/{00000..}.tar`; member names are built from the sample id, never from
keys found in the corpus, so no name can escape the shard. Shards are written atomically and a
rerun keeps finished ones. Images are read with ranged reads (tar members), whole-file reads, or,
with `--download`, from their URL.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ._imagerows import MissingImage, UrlOnlyRow, read_image_bytes
from ._manifests import UserError, write_bytes_atomic, write_parquet_atomic
from .manifest import lineage_entry, read_retrieval_manifest, write_retrieval_manifest

MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in MAGIC if data.startswith(magic)), "img")


def read_image(row: dict, download: bool = False) -> bytes:
    """The image bytes a retrieval row points at (a tar member by ranged read, a file, or with `download` its URL)."""
    if row["image_uri"] is not None:
        try:
            return read_image_bytes(row["image_uri"], row["image_offset"], row["image_length"])
        except MissingImage as e:
            raise UserError(f"sample {row['sample_id']}: its image is not where the retrieval set says ({e}); "
                            "the corpus moved or changed since the set was made") from None
    if download and row["url"]:
        with fsspec.open(row["url"], "rb") as f:
            return f.read()
    raise UrlOnlyRow(f"sample {row['sample_id']} is known only by its URL ({row['url']}); pass --download, or "
                     "download the set with img2dataset (react-index query --export-urls) first")


def _write_shard(path: str, samples: list[tuple[dict, bytes]]) -> dict[int, tuple[int, int]]:
    """Write one tar; returns sample id -> (offset, length) of its image member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for row, data in samples:
            stem = f"{row['sample_id']:012d}"
            meta = {k: row[k] for k in ("sample_id", "key", "caption", "url", "image_uri", "class_name", "score")}
            members = [(f"{stem}.{image_extension(data)}", data), (f"{stem}.txt", (row["caption"] or "").encode()),
                       (f"{stem}.json", json.dumps(meta, default=str).encode())]
            for name, payload in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
    write_bytes_atomic(path, buf.getvalue())
    return _image_members(buf.getvalue())


def _image_members(data: bytes) -> dict[int, tuple[int, int]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            stem, _, ext = m.name.partition(".")
            if ext not in ("txt", "json"):
                out[int(stem)] = (m.offset_data, m.size)
    return out


def materialize(retrieval: str, out_dir: str, *, samples_per_shard: int = 1000, download: bool = False) -> dict:
    """Copy the images of `retrieval` into `out_dir` shards; returns the new retrieval set's manifest. With
    `download`, URL-only rows are fetched: that is `react-index download` (download.py) with its defaults.
    `react-index materialize` runs this."""
    if download:
        from .download import DownloadOptions
        from .download import download as fetch

        return fetch(retrieval, out_dir, options=DownloadOptions(samples_per_shard=samples_per_shard))
    doc = read_retrieval_manifest(retrieval)
    table = pq.read_table(doc["rows_uri"])
    out_dir = out_dir.rstrip("/")
    ids = np.asarray(table.column("sample_id"))
    unique, first = np.unique(ids, return_index=True)
    rows = table.take(pa.array(first)).to_pylist()
    located: dict[int, tuple[str, int, int]] = {}
    fs, path = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(path, exist_ok=True)
    for s, lo in enumerate(tqdm(range(0, len(rows), samples_per_shard), desc="materialize", unit="shard")):
        shard = f"{out_dir}/{s:05d}.tar"
        _, shard_path = fsspec.core.url_to_fs(shard)
        if fs.exists(shard_path):  # resume: a finished shard is kept as it is
            members = _image_members(fs.cat_file(shard_path))
        else:
            members = _write_shard(shard, [(r, read_image(r, download)) for r in rows[lo:lo + samples_per_shard]])
        located.update({sid: (shard, off, n) for sid, (off, n) in members.items()})
    where = [located[i] for i in ids.tolist()]
    new = table.set_column(table.schema.get_field_index("image_uri"), "image_uri",
                           pa.array([w[0] for w in where], pa.string()))
    for name, j in (("image_offset", 1), ("image_length", 2)):
        new = new.set_column(new.schema.get_field_index(name), name, pa.array([w[j] for w in where], pa.int64()))
    rows_uri = f"{out_dir}/{os.path.basename(doc['rows_uri'])}"
    write_parquet_atomic(rows_uri, new)
    body = {k: doc[k] for k in ("model", "mode", "k", "selection", "classes", "templates", "counts_per_class",
                                "unique_samples")}
    manifest = write_retrieval_manifest(rows_uri, body, [lineage_entry(doc, doc["rows_uri"] + ".json")])
    print(f"materialized {len(unique):,} samples into {-(-len(rows) // samples_per_shard)} shard(s) -> {out_dir}\n"
          f"retrieval set -> {rows_uri}")
    return manifest

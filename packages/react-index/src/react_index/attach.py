"""img2dataset interop: the URL list it downloads (`react-index query --export-urls`) and `react-index attach`,
which maps its webdataset output back to the retrieval rows, so the set becomes trainable.

The exported list has one row per distinct URL: `url`, `caption`, `sample_id` and `class_name` (of the URL's
first row: the lowest class index, best rank, when a URL was retrieved for several classes). img2dataset copies
`sample_id` into each sample's `.json` with `--save_additional_columns '["sample_id","class_name"]'`.

`attach` reads every `*.tar` of the download folder (member offsets by tarfile: img2dataset writes plain,
uncompressed tars, so a ranged read of a member returns the image), and matches each retrieval row to a sample
by its `sample_id`, else by its URL (so rows of samples sharing a URL all find it). Failures come from
img2dataset's per-shard `{shard}.parquet` (`status`, `error_message` per input URL), mapped to the same reasons
`react-index download` counts (`http_404`, `timeout`, `refused`, `not_an_image`, …); with only the
`{shard}_stats.json` files, the totals come from their `status_dict` and per class the rows are `not_downloaded`.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections import Counter

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ._imagerows import CorruptImage, MissingImage, decode_rgb, read_image_bytes
from ._manifests import UserError, write_parquet_atomic
from .download import transient
from .manifest import lineage_entry, read_retrieval_manifest, write_retrieval_manifest
from .survival import DEFAULT_MIN_SURVIVAL, failures_per_class, summary_lines, survival

EXPORT_COLUMNS = ["url", "caption", "sample_id", "class_name"]
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
IMG2DATASET = ("img2dataset --url_list {urls} --input_format parquet --url_col url --caption_col caption "
               "--save_additional_columns '[\"sample_id\",\"class_name\"]' --output_format webdataset "
               "--output_folder {out} --image_size 384 --resize_mode keep_ratio")
# img2dataset's error messages (str() of urllib / cv2 exceptions) → the reasons `react-index download` counts
MESSAGES = [
    ("timed out", "timeout"), ("timeout", "timeout"), ("connection refused", "refused"), ("errno 111", "refused"),
    ("connection reset", "reset"), ("remote end closed", "reset"), ("incompleteread", "truncated"),
    ("incomplete read", "truncated"), ("name or service not known", "dns"), ("nodename nor servname", "dns"),
    ("name resolution", "dns"), ("getaddrinfo", "dns"), ("image decoding error", "not_an_image"),
    ("cannot identify", "not_an_image"), ("image area too large", "too_large"), ("image too small", "too_small"),
    ("aspect ratio too large", "bad_aspect_ratio"), ("x-robots-tag", "disallowed"), ("unknown url type", "bad_url"),
    ("no host given", "bad_url"), ("redirect", "too_many_redirects"), ("certificate", "ssl"), ("ssl", "ssl"),
]


def export_url_list(table: pa.Table, uri: str) -> int:
    """Write img2dataset's input: one row per distinct URL of `table` (the first row's sample and class)."""
    has_url = pc.fill_null(pc.not_equal(table.column("url"), ""), False)
    urls = table.filter(has_url).select(EXPORT_COLUMNS)
    _, first = np.unique(np.asarray(urls.column("url").to_pylist(), dtype=object), return_index=True)
    out = urls.take(pa.array(np.sort(first), pa.int64()))
    write_parquet_atomic(uri, out)
    return out.num_rows


def reason_of(message: str | None, status: str | None = None) -> str:
    """The failure reason of one img2dataset error message (e.g. "HTTP Error 404: Not Found" → http_404)."""
    text = (message or "").lower()
    code = re.search(r"http error (\d{3})", text)
    if code:
        return f"http_{code.group(1)}"
    for needle, reason in MESSAGES:
        if needle in text:
            return reason
    return "resize_error" if status == "failed_to_resize" else "other"


def _uri(fs, path: str) -> str:
    return os.path.abspath(path) if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def scan(download_dir: str):
    """(by sample id and by URL: (tar uri, offset, length); failure reason by sample id and by URL; totals from
    `_stats.json` when there is no per-shard parquet; number of tars; samples read)."""
    fs, root = fsspec.core.url_to_fs(download_dir.rstrip("/"))
    if not fs.isdir(root):
        raise UserError(f"{download_dir}: no such folder (img2dataset's --output_folder)")
    tars = sorted(fs.glob(f"{root}/*.tar"))
    by_sid, by_url, samples = {}, {}, 0
    for tar_path in tars:
        uri = _uri(fs, tar_path)
        with fs.open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            images, metas = {}, {}
            for m in tar:
                if not m.isfile():
                    continue
                stem, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                if ext.lower() in IMAGE_EXTS:
                    images[stem] = (m.offset_data, m.size)
                elif ext == "json":
                    try:
                        metas[stem] = json.loads(tar.extractfile(m).read())
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        metas[stem] = {}
        for stem, (off, size) in images.items():
            samples += 1
            meta = metas.get(stem) or {}
            where = (uri, off, size)
            sid = meta.get("sample_id")
            if isinstance(sid, int) and not isinstance(sid, bool):
                by_sid.setdefault(sid, where)
            if meta.get("url"):
                by_url.setdefault(meta["url"], where)
    failed_sid, failed_url = {}, {}
    statuses = 0
    for path in sorted(fs.glob(f"{root}/*.parquet")):
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            if not {"status", "url"} <= set(names):
                continue  # not one of img2dataset's shard files (e.g. a retrieval set written here)
            statuses += 1
            cols = [c for c in ("url", "status", "error_message", "sample_id") if c in names]
            t = pf.read(columns=cols)
        bad = t.filter(pc.not_equal(t.column("status"), "success"))
        sids = bad.column("sample_id").to_pylist() if "sample_id" in cols else [None] * bad.num_rows
        messages = bad.column("error_message").to_pylist() if "error_message" in cols else [None] * bad.num_rows
        for url, status, message, sid in zip(bad.column("url").to_pylist(), bad.column("status").to_pylist(),
                                             messages, sids, strict=True):
            reason = reason_of(message, status)
            if sid is not None:
                failed_sid[sid] = reason
            if url:
                failed_url[url] = reason
    totals = Counter()
    if not statuses:
        for path in fs.glob(f"{root}/*_stats.json"):
            with fs.open(path, "rb") as f:
                stats = json.loads(f.read())
            for message, n in (stats.get("status_dict") or {}).items():
                if message != "success":
                    totals[reason_of(message)] += int(n)
    if not tars and not statuses and not totals:
        raise UserError(f"{download_dir}: no img2dataset output here (expected 00000.tar, 00000.parquet, … from "
                        "img2dataset --output_format webdataset)")
    return by_sid, by_url, failed_sid, failed_url, totals, len(tars), samples


def attach(retrieval: str, download_dir: str, *, out: str, min_survival: float = DEFAULT_MIN_SURVIVAL,
           verify: bool = False) -> dict:
    """Write `out` (+ sidecar): the rows of `retrieval` whose images img2dataset downloaded into `download_dir`,
    pointing at their tar members; rows already holding bytes are kept as they are; returns the new manifest.
    Classes keeping less than `min_survival` of their rows are warned about; `verify` decodes every attached image
    (corrupt ones are dropped). `react-index attach` runs this."""
    if not 0 <= min_survival <= 1:
        raise UserError(f"--min-survival is a share in [0, 1], got {min_survival}")
    doc = read_retrieval_manifest(retrieval)
    if fsspec.core.url_to_fs(out)[1] == fsspec.core.url_to_fs(doc["rows_uri"])[1]:
        raise UserError(f"--out {out} would overwrite the input set {doc['rows_uri']}; choose another file")
    with fsspec.open(doc["rows_uri"], "rb") as f:
        table = pq.read_table(f)
    by_sid, by_url, failed_sid, failed_url, totals, n_tars, n_samples = scan(download_dir)
    ids = table.column("sample_id").to_pylist()
    urls = table.column("url").to_pylist()
    has_bytes = np.asarray(pc.is_valid(table.column("image_uri")))
    where: list[tuple | None] = []
    reasons: list[str | None] = []
    checked: dict[tuple, str | None] = {}
    for sid, url, own in zip(ids, urls, has_bytes.tolist(), strict=True):
        if own:
            where.append(None)
            reasons.append(None)
            continue
        found = by_sid.get(sid) or (by_url.get(url) if url else None)
        if found is not None and verify:
            if found not in checked:
                checked[found] = _check(found)
            if checked[found]:
                reasons.append(checked[found])
                where.append(None)
                continue
        where.append(found)
        reasons.append(None if found else failed_sid.get(sid) or failed_url.get(url) or "not_downloaded")
    kept = has_bytes | np.array([w is not None for w in where], bool)
    new = table.filter(pa.array(kept))
    located = [w for w, k, own in zip(where, kept.tolist(), has_bytes.tolist(), strict=True) if k]
    own_kept = has_bytes[kept]
    for j, name in enumerate(("image_uri", "image_offset", "image_length")):
        old = new.column(name).to_pylist()
        values = [o if own else w[j] for o, w, own in zip(old, located, own_kept.tolist(), strict=True)]
        new = new.set_column(new.schema.get_field_index(name), name,
                             pa.array(values, pa.string() if j == 0 else pa.int64()))
    classes = doc["classes"]
    class_index = np.asarray(table.column("class_index"), np.int64)
    ids_np = np.asarray(ids, np.int64)
    if new.num_rows == 0:
        lost = Counter(r for r in reasons if r)
        raise UserError(f"no row of {doc['rows_uri']} matches a sample in {download_dir} ({n_samples:,} samples in "
                        f"{n_tars} tar(s); rows lost: {dict(lost.most_common(8))}); was it downloaded from this "
                        "set's --export-urls list, with --save_additional_columns '[\"sample_id\"]'?")
    sv = survival(classes, class_index, ids_np, kept, min_survival)
    reason_names = sorted({r for r in reasons if r})
    code = np.array([reason_names.index(r) if r else -1 for r in reasons], np.int64)
    # distinct samples: a sample is downloaded when any of its rows found an image
    order = np.argsort(ids_np, kind="stable")
    uniq, start = np.unique(ids_np[order], return_index=True)
    first = order[start]
    sample_kept_u = np.logical_or.reduceat(kept[order], start) if len(order) else np.zeros(0, bool)
    url_only_u = ~has_bytes[first]
    failed_u = url_only_u & ~sample_kept_u
    sample_reason = {}
    for sid, r in zip(ids, reasons, strict=True):
        if r and sid not in sample_reason:
            sample_reason[sid] = r
    failures = Counter(sample_reason[s] for s in uniq[failed_u].tolist() if s in sample_reason)
    if totals:  # no per-shard parquet: the totals img2dataset counted (per URL); the rest were not attempted
        failures = totals + Counter({"not_downloaded": max(0, int(failed_u.sum()) - sum(totals.values()))})
    record = {"tool": "img2dataset",
              "samples": {"requested": int(url_only_u.sum()), "downloaded": int((url_only_u & sample_kept_u).sum()),
                          "copied": int((~url_only_u).sum()), "failed": int(failed_u.sum()),
                          "retryable": sum(n for r, n in failures.items() if transient(r))},
              "failures": dict(sorted(failures.items())),
              "failures_per_class": failures_per_class(class_index, code, reason_names, len(classes)),
              "options": {"download_dir": download_dir, "tars": n_tars, "samples_in_tars": n_samples,
                          "verified": verify}}
    write_parquet_atomic(out, new)
    body = {k: doc[k] for k in ("model", "mode", "k", "selection", "classes", "templates")}
    body |= {"counts_per_class": sv["rows_after"], "unique_samples": len(np.unique(ids_np[kept])),
             "download": record, "survival": sv}
    manifest = write_retrieval_manifest(out, body, [lineage_entry(doc, doc["rows_uri"] + ".json")])
    matched = len({w for w in where if w is not None})
    print("\n".join([f"attached {matched:,} of {n_samples:,} downloaded samples in {n_tars} tar(s) of {download_dir}",
                     f"retrieval set -> {out}  ({manifest['rows']:,} rows, {manifest['unique_samples']:,} samples)",
                     *summary_lines(manifest)]))
    return manifest | {"rows_uri": out}


def _check(where: tuple) -> str | None:
    """None if the member decodes, else the reason it is dropped."""
    try:
        decode_rgb(read_image_bytes(*where), where[0])
    except MissingImage:
        return "missing_image"
    except CorruptImage:
        return "corrupt_image"
    return None

"""Inputs: expand URI patterns, recognise each input's format, and read raw samples from it.

Formats: webdataset / img2dataset tar shards, image folders with same-named .txt captions,
parquet files with an image column (bytes or path) and a caption column, and precomputed
embeddings in the clip-retrieval / LAION layout. Everything goes through fsspec.
A raw sample is a dict: key, caption, image (bytes), image_uri, image_offset, image_length, url, json.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ._manifests import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
FOLDER_SHARD_FILES = 10_000  # an image folder is split into input shards of this many images
_BRACE = re.compile(r"\{([^{}]*)\}")


class SourceError(UserError):
    """An input cannot be found or read (the message names it and what to do)."""


def expand_braces(pattern: str) -> list[str]:
    """`a/{00000..00002}.tar` -> a/00000.tar a/00001.tar a/00002.tar; `{x,y}` lists too; groups combine."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    elif "," in body:
        options = body.split(",")
    else:  # not a brace expression: keep it literally
        options = ["{" + body + "}"]
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [head + o + rest for o in options for rest in expand_braces(tail)]


def expand_inputs(patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Brace-expand, then glob-expand each pattern; a pattern that matches nothing is an error."""
    out = []
    for pattern in patterns:
        for uri in expand_braces(str(pattern)):
            if any(c in uri for c in "*?["):
                fs, _ = fsspec.core.url_to_fs(uri)
                matches = sorted(fs.glob(uri))
                protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
                out += [protocol + p if protocol and not p.startswith(protocol) else p for p in matches]
                if not matches:
                    raise SourceError(f"{uri}: no input matches this pattern")
            else:
                fs, path = fsspec.core.url_to_fs(uri)
                if not fs.exists(path):
                    hint = " (quote brace patterns so your shell does not expand them)" if "{" in pattern else ""
                    raise SourceError(f"{uri}: no such file or folder{hint}")
                out.append(uri)
    return out


@dataclass(frozen=True)
class InputShard:
    """One unit of work: its output is one store shard named `name`."""

    uri: str
    kind: str  # "tar" | "folder" | "parquet"
    name: str
    part: tuple[int, int] | None = None  # for folders: [start, stop) in the sorted image list
    samples: int | None = None  # known up front (folders, parquet, img2dataset shards): the progress bar's total


def _stem(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]


def is_precomputed(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.isdir(path) and fs.isdir(path.rstrip("/") + "/img_emb")


def _folder_images(uri: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    files = sorted(fs.find(path))
    return [protocol + f if protocol else f for f in files if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS]


def webdataset_folder(uri: str) -> list[str]:
    """The tar shards directly in a folder laid out as img2dataset / webdataset output (`00000.tar` beside
    img2dataset's `00000.parquet` and `00000_stats.json` status files, which are not inputs), sorted; [] for a
    folder holding no tar."""
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    tars = sorted(p for p in fs.ls(path, detail=False) if p.lower().endswith(".tar"))
    return [protocol + p if protocol and not p.startswith(protocol) else p for p in tars]


def _tar_samples_known(uri: str) -> int | None:
    """The samples img2dataset wrote into a tar (its `{shard}_stats.json` "successes"), else None."""
    stats = uri[: -len(".tar")] + "_stats.json"
    try:
        with fsspec.open(stats, "rb") as f:
            n = json.loads(f.read()).get("successes")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None


def _parquet_rows(uri: str) -> int | None:
    try:
        with fsspec.open(uri, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None  # an unreadable file is reported, by name, when it is read


def discover(uris: list[str]) -> list[InputShard]:
    """Recognise each (expanded) input; output names are unique (a clash gets the input's position). A folder of
    tar shards (img2dataset's output) stands for its tars."""
    shards = []
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        lower = path.lower()
        if lower.endswith(".tar"):
            shards.append(InputShard(uri, "tar", _stem(uri), samples=_tar_samples_known(uri)))
        elif lower.endswith(".parquet"):
            shards.append(InputShard(uri, "parquet", _stem(uri), samples=_parquet_rows(uri)))
        elif fs.isdir(path):
            if is_precomputed(uri):
                raise SourceError(f"{uri}: precomputed embeddings cannot be mixed with other inputs; "
                                  "ingest them on their own")
            tars = webdataset_folder(uri)
            if tars:  # img2dataset / webdataset output: its shards, not its status parquet files
                shards += [InputShard(t, "tar", _stem(t), samples=_tar_samples_known(t)) for t in tars]
                continue
            n = len(_folder_images(uri))
            if n == 0:
                raise SourceError(f"{uri}: folder holds no images ({', '.join(IMAGE_EXTS)})")
            parts = [(lo, min(n, lo + FOLDER_SHARD_FILES)) for lo in range(0, n, FOLDER_SHARD_FILES)]
            for j, part in enumerate(parts):
                name = _stem(uri) if len(parts) == 1 else f"{_stem(uri)}-{j:05d}"
                shards.append(InputShard(uri, "folder", name, part, samples=part[1] - part[0]))
        else:
            raise SourceError(f"{uri}: unknown input format; expected a .tar shard, a .parquet file, an image "
                              "folder, or a folder of precomputed embeddings (img_emb/, text_emb/, metadata/)")
    counts = {}
    for s in shards:
        counts[s.name] = counts.get(s.name, 0) + 1
    return [s if counts[s.name] == 1 else InputShard(s.uri, s.kind, f"{i:05d}-{s.name}", s.part, s.samples)
            for i, s in enumerate(shards)]


def read_samples(shard: InputShard, image_column: str = "image", caption_column: str = "caption",
                 ) -> Iterator[dict]:
    """Raw samples of one input shard, in order. Raises SourceError if the shard itself is unreadable."""
    reader = {"tar": _tar_samples, "folder": _folder_samples, "parquet": _parquet_samples}[shard.kind]
    try:
        yield from reader(shard, image_column, caption_column)
    except (tarfile.TarError, OSError, EOFError, pa.ArrowException) as e:
        raise SourceError(f"{shard.uri}: unreadable {shard.kind} input ({type(e).__name__}: {e})") from e


def _url_from_json(text: str | None) -> str | None:
    if not text:
        return None
    try:
        url = json.loads(text).get("url")
    except (ValueError, AttributeError):
        return None
    return url if isinstance(url, str) else None


def _tar_samples(shard: InputShard, *_columns) -> Iterator[dict]:
    """Stream a tar; members of one sample share a key (the path up to the first dot of the basename)."""
    fs, path = fsspec.core.url_to_fs(shard.uri)
    size = fs.size(path)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        sample = None
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, ext = base.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if sample is None or sample["key"] != key:
                if sample is not None:
                    yield _finish(sample)
                sample = {"key": key, "image_uri": shard.uri}
            data = tar.extractfile(member).read()
            ext = ext.lower()
            if ext in IMAGE_EXTS and "image" not in sample:
                sample.update(image=data, image_offset=member.offset_data, image_length=member.size)
            elif ext == "txt":
                sample["caption"] = data.decode("utf-8", "replace")
            elif ext == "json":
                sample["json"] = data.decode("utf-8", "replace")
        if tar.offset + 2 * tarfile.BLOCKSIZE > size:
            # tarfile takes a header cut short for the end of the archive; a whole tar ends in zero blocks
            raise tarfile.ReadError(f"truncated: the archive ends at byte {size} without its end-of-archive blocks")
        if sample is not None:
            yield _finish(sample)


def _finish(sample: dict) -> dict:
    sample.setdefault("url", _url_from_json(sample.get("json")))
    for field in ("image", "caption", "image_offset", "image_length", "json", "source_row"):
        sample.setdefault(field, None)
    return sample


def _folder_samples(shard: InputShard, *_columns) -> Iterator[dict]:
    images = _folder_images(shard.uri)[slice(*shard.part)]
    root = shard.uri.rstrip("/")
    for image_uri in images:
        caption_uri = image_uri.rsplit(".", 1)[0] + ".txt"
        with fsspec.open(image_uri, "rb") as f:
            data = f.read()
        try:
            with fsspec.open(caption_uri, "rb") as f:
                caption = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            caption = None
        key = image_uri[len(root) + 1:].rsplit(".", 1)[0] if image_uri.startswith(root + "/") else _stem(image_uri)
        yield _finish({"key": key, "caption": caption, "image": data, "image_uri": image_uri})


def _parquet_samples(shard: InputShard, image_column: str, caption_column: str) -> Iterator[dict]:
    with fsspec.open(shard.uri, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        for column in (image_column, caption_column):
            if column not in names:
                raise SourceError(f"{shard.uri}: column '{column}' not found (columns: {', '.join(names)}); "
                                  "name the right ones with --image-column / --caption-column")
        extra = [c for c in ("key", "url") if c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=1024, columns=[image_column, caption_column, *extra]):
            cols = {c: batch.column(c).to_pylist() for c in batch.schema.names}
            for i in range(batch.num_rows):
                image = cols[image_column][i]
                sample = {"key": str(cols["key"][i]) if "key" in cols else f"{row:09d}", "source_row": row,
                          "caption": cols[caption_column][i], "url": cols["url"][i] if "url" in cols else None}
                if isinstance(image, str):  # a path or URI to the image file
                    try:
                        with fsspec.open(image, "rb") as img:
                            sample.update(image=img.read(), image_uri=image)
                    except FileNotFoundError:
                        sample.update(image=None, image_uri=image)
                else:
                    sample.update(image=image, image_uri=None)
                yield _finish(sample)
                row += 1

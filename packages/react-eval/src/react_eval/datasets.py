"""Evaluation datasets, all through fsspec: classification (image folder, CLIP_benchmark wds, csv/parquet),
retrieval (Karpathy json or a simple json/csv of image + captions) and detection (COCO json + images).

Images are referenced, not loaded: ("file", uri) or ("tar", shard uri, offset, length), decoded later in
DataLoader workers. Every dataset has a checksum of its file listing and annotations, recorded in results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

import fsspec
import pyarrow.parquet as pq

from .domain import class_names, read_entries

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")


class DatasetError(ValueError):
    """A dataset that cannot be read as the task needs."""


@dataclass
class Classification:
    name: str
    uri: str
    images: list  # image refs
    labels: list[int]
    classnames: list[str]
    templates: list[str] | None = None  # the dataset's own, if it ships them
    checksum: str = ""


@dataclass
class Retrieval:
    name: str
    uri: str
    images: list
    captions: list[list[str]]  # captions[i]: every caption of image i
    checksum: str = ""


@dataclass
class Detection:
    name: str
    uri: str
    coco: dict  # the COCO annotation json
    image_root: str
    proposals: dict[int, list] | None = None  # image id -> [[x, y, w, h], ...]
    split: dict = field(default_factory=dict)  # {"base": [...], "novel": [...]} category names
    checksum: str = ""


def _fs(uri: str):
    return fsspec.core.url_to_fs(uri)


def _protocol(uri: str) -> str:
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


def _checksum(parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode() + b"\0")
    return "sha256:" + h.hexdigest()


def read_image(ref) -> bytes:
    if ref[0] == "tar":
        fs, path = _fs(ref[1])
        return fs.cat_file(path, start=ref[2], end=ref[2] + ref[3])
    with fsspec.open(ref[1], "rb") as f:
        return f.read()


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def load_classification(uri: str, classnames: str | None = None) -> Classification:
    """An image folder (class subfolders + classnames.txt), a CLIP_benchmark wds folder (test/nshards.txt),
    or a csv/parquet of (path, label)."""
    uri = uri.rstrip("/")
    fs, path = _fs(uri)
    if not fs.exists(path):
        raise DatasetError(f"{uri}: no such dataset")
    if uri.endswith((".csv", ".parquet")):
        return _table_classification(uri, classnames)
    if fs.exists(f"{path}/test/nshards.txt"):
        return _wds_classification(uri)
    return _folder_classification(uri, classnames)


def _class_list(uri: str, given: str | None, fallback: list[str] | None = None) -> list[str]:
    if given:
        return class_names(given)
    fs, path = _fs(uri)
    if fs.exists(f"{path}/classnames.txt"):
        return class_names(f"{uri}/classnames.txt")
    if fallback:
        return fallback
    raise DatasetError(f"{uri}: no classnames.txt; pass --classnames FILE or a built-in name (e.g. imagenet1k)")


def _own_templates(uri: str) -> list[str] | None:
    fs, path = _fs(uri)
    for name in ("zeroshot_classification_templates.txt", "templates.txt"):
        if fs.exists(f"{path}/{name}"):
            return [t for _, t in read_entries(f"{uri}/{name}")]
    return None


def _folder_classification(uri, classnames):
    fs, path = _fs(uri)
    proto = _protocol(uri)
    dirs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if fs.isdir(p))
    if not dirs:
        raise DatasetError(f"{uri}: expected one subfolder of images per class")
    names = _class_list(uri, classnames, [d.replace("_", " ") for d in dirs])
    if len(names) != len(dirs):
        raise DatasetError(f"{uri}: {len(dirs)} class folders but {len(names)} class names")
    images, labels, listing = [], [], []
    for label, d in enumerate(dirs):  # class index = position of the folder in sorted order (ImageFolder's rule)
        for f, info in sorted(fs.find(f"{path}/{d}", detail=True).items()):
            if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
                images.append(("file", proto + f))
                labels.append(label)
                listing.append((f[len(path):], info.get("size")))
    return Classification(_name(uri), uri, images, labels, names, _own_templates(uri),
                          _checksum([*listing, *names]))


def _wds_classification(uri):
    n = int(read_entries(f"{uri}/test/nshards.txt")[0][1])
    images, labels, listing = [], [], []
    for s in range(n):
        shard = f"{uri}/test/{s}.tar"
        with fsspec.open(shard, "rb") as f:
            data = f.read()
        listing.append((s, len(data), hashlib.sha256(data).hexdigest()))
        refs, cls = {}, {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.rpartition(".")
                if ext.lower() in IMAGE_EXTS:
                    refs[key] = ("tar", shard, m.offset_data, m.size)
                elif ext == "cls":
                    cls[key] = int(tar.extractfile(m).read().decode().strip())
        for key in refs:
            if key not in cls:
                raise DatasetError(f"{shard}: sample {key} has an image but no .cls label")
            images.append(refs[key])
            labels.append(cls[key])
    names = _class_list(uri, None)
    return Classification("wds/" + _name(uri), uri, images, labels, names, _own_templates(uri),
                          _checksum([*listing, *names]))


def _table_classification(uri, classnames):
    if uri.endswith(".parquet"):
        with fsspec.open(uri, "rb") as f:
            rows = pq.read_table(f).to_pylist()
    else:
        with fsspec.open(uri, "rt") as f:
            rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{uri}: expected columns 'path' and 'label'")
    folder = uri.rsplit("/", 1)[0]
    names = _class_list(folder, classnames)
    labels = [int(r["label"]) if str(r["label"]).lstrip("-").isdigit() else names.index(r["label"]) for r in rows]
    images = [("file", r["path"] if "://" in r["path"] or r["path"].startswith("/") else f"{folder}/{r['path']}")
              for r in rows]
    return Classification(_name(uri), uri, images, labels, names, _own_templates(folder),
                          _checksum([*(json.dumps(r, default=str) for r in rows), *names]))


def load_retrieval(uri: str) -> Retrieval:
    """Karpathy-format json (images[].filename + sentences[].raw, the `test` split if there is one), a json
    list of {"image", "captions"}, or a csv of (image, caption) rows."""
    folder = uri.rsplit("/", 1)[0]
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        text = f.read()
    if uri.endswith(".csv"):
        grouped: dict[str, list[str]] = {}
        for r in csv.DictReader(io.StringIO(text)):
            grouped.setdefault(r["image"], []).append(r["caption"])
        pairs = list(grouped.items())
    else:
        data = json.loads(text)
        if isinstance(data, dict) and "images" in data:
            entries = data["images"]
            if any(e.get("split") == "test" for e in entries):
                entries = [e for e in entries if e.get("split") == "test"]
            pairs = [("/".join(p for p in (e.get("filepath", ""), e["filename"]) if p),
                      [s["raw"] for s in e["sentences"]]) for e in entries]
        elif isinstance(data, list):
            pairs = [(e["image"], list(e["captions"])) for e in data]
        else:
            raise DatasetError(f"{uri}: expected Karpathy json ({{'images': [...]}}) or a list of "
                               "{'image', 'captions'}")
    images = [("file", p if "://" in p or p.startswith("/") else f"{folder}/{p}") for p, _ in pairs]
    return Retrieval(_name(folder), uri, images, [c for _, c in pairs], _checksum([text]))


def load_detection(uri: str, images: str | None = None, proposals: str | None = None,
                   split: str | None = None) -> Detection:
    """A COCO annotation json; images in `images` (default: an `images/` folder beside the json)."""
    folder = uri.rsplit("/", 1)[0]
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        text = f.read()
    coco = json.loads(text)
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DatasetError(f"{uri}: not a COCO annotation file (no '{key}')")
    props = None
    if proposals:
        with fsspec.open(proposals, "rt") as f:
            raw = json.load(f)
        props = {}
        for p in raw if isinstance(raw, list) else [{"image_id": int(k), "bbox": b} for k, v in raw.items()
                                                    for b in v]:
            props.setdefault(int(p["image_id"]), []).append(p["bbox"])
    split_doc = {}
    split_uri = split or f"{folder}/split.json"
    fs, split_path = _fs(split_uri)
    if fs.exists(split_path):
        with fsspec.open(split_uri, "rt") as f:
            split_doc = json.load(f)
    return Detection(_name(folder), uri, coco, (images or f"{folder}/images").rstrip("/"), props, split_doc,
                     _checksum([text, json.dumps(split_doc, sort_keys=True)]))

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
import math
import re
import tarfile
from dataclasses import dataclass, field

import fsspec
import pyarrow.parquet as pq

from ._imagerows import read_image_bytes
from ._manifests import UserError
from .domain import class_names, read_entries

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")

# How a classification set's labels were tied to its class names (recorded in results as details.labels).
LABEL_RULES = {
    "by_name": "class folders matched to the names in {source} by name",
    "folder_number": "class folders named 0..N-1: label = folder number, named from {source} in file order",
    "sorted_folders": "class folders numbered in sorted order (ImageFolder's rule) and named from {source} in file "
                      "order; the folder names do not match the class names, so check that {source} lists the "
                      "classes in the folders' sorted order",
    "folder_names": "class names are the folder names (sorted), no class-name file",
    "cls_files": "labels from the .cls files, named from {source} in file order",
    "label_index": "label column holds class indices into {source}",
    "label_name": "label column holds class names, matched to {source} by name",
}


class DatasetError(UserError):
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
    label_rule: str = ""  # a key of LABEL_RULES
    label_source: str = ""  # where the class names came from

    @property
    def label_note(self) -> str:
        return LABEL_RULES[self.label_rule].format(source=self.label_source) if self.label_rule else ""


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
    """The bytes of an image ref; raises MissingImage (naming the file) when they are not there."""
    if ref[0] == "tar":
        return read_image_bytes(ref[1], ref[2], ref[3])
    return read_image_bytes(ref[1])


def ref_name(ref) -> str:
    """Where an image ref points, for messages: the file, or the tar shard and member offset."""
    return ref[1] if ref[0] == "file" else f"{ref[1]} (member at byte {ref[2]})"


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


def _class_list(uri: str, given: str | None, fallback: list[str] | None = None) -> tuple[list[str], str]:
    """(class names, where they came from: the file or built-in set, or "" for the fallback)."""
    if given:
        return class_names(given), given
    fs, path = _fs(uri)
    if fs.exists(f"{path}/classnames.txt"):
        return class_names(f"{uri}/classnames.txt"), f"{uri}/classnames.txt"
    if fallback:
        return fallback, ""
    raise DatasetError(f"{uri}: no classnames.txt; pass --classnames FILE or a built-in name (e.g. imagenet1k)")


def _own_templates(uri: str) -> list[str] | None:
    fs, path = _fs(uri)
    for name in ("zeroshot_classification_templates.txt", "templates.txt"):
        if fs.exists(f"{path}/{name}"):
            return [t for _, t in read_entries(f"{uri}/{name}")]
    return None


def name_key(name: str) -> str:
    """A class or folder name compared without case and without `_` / `-` / space differences."""
    return " ".join(re.split(r"[\s_\-]+", str(name).strip().casefold())).strip()


def _align_folders(uri: str, dirs: list[str], names: list[str], source: str) -> tuple[list[int], str]:
    """(label of each sorted class folder, rule). Folders whose names match the class names (case and `_`/`-`/
    space aside) are aligned by name; folders named 0..N-1 by number; otherwise ImageFolder's sorted-order rule,
    refused when some folder matches a class name that rule would give to another folder."""
    keys, dir_keys = [name_key(n) for n in names], [name_key(d) for d in dirs]
    position = {k: i for i, k in enumerate(keys)}
    if len(position) == len(keys) and set(dir_keys) == set(keys):
        return [position[k] for k in dir_keys], "by_name"
    if all(d.isdigit() for d in dirs) and sorted(int(d) for d in dirs) == list(range(len(dirs))):
        return [int(d) for d in dirs], "folder_number"
    conflicts = [(d, names[i], names[position[k]]) for i, (d, k) in enumerate(zip(dirs, dir_keys, strict=True))
                 if k in position and position[k] != i]
    if conflicts:
        shown = "; ".join(f"folder '{d}' would be named '{got}' (it matches '{own}')" for d, got, own in conflicts[:5])
        raise DatasetError(
            f"{uri}: the class folders do not line up with {source}: {shown}"
            f"{f' and {len(conflicts) - 5} more' if len(conflicts) > 5 else ''}. Folders are matched to class names "
            "by name only when every folder matches one; rename the folders to the class names (case, '_', '-' and "
            f"spaces aside), or list the names in {source} in the folders' sorted order")
    return list(range(len(dirs))), "sorted_folders"


def _folder_classification(uri, classnames):
    fs, path = _fs(uri)
    proto = _protocol(uri)
    dirs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if fs.isdir(p))
    if not dirs:
        raise DatasetError(f"{uri}: expected one subfolder of images per class")
    files = {d: [(f, info) for f, info in sorted(fs.find(f"{path}/{d}", detail=True).items())
                 if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS] for d in dirs}
    empty = [d for d in dirs if not files[d]]
    if empty:
        raise DatasetError(
            f"{uri}: class folder(s) with no images ({', '.join(IMAGE_EXTS)}): {', '.join(empty[:10])}"
            f"{' …' if len(empty) > 10 else ''}; a class with no samples makes per-class metrics meaningless: add "
            "its images, or remove the folder (and its line in the class-name file)")
    names, source = _class_list(uri, classnames, [d.replace("_", " ") for d in dirs])
    if len(names) != len(dirs):
        raise DatasetError(f"{uri}: {len(dirs)} class folders but {len(names)} class names in {source}")
    label_of, rule = _align_folders(uri, dirs, names, source) if source else (list(range(len(dirs))), "folder_names")
    images, labels, listing = [], [], []
    for d, label in zip(dirs, label_of, strict=True):
        for f, info in files[d]:
            images.append(("file", proto + f))
            labels.append(label)
            listing.append((f[len(path):], info.get("size")))
    mapping = [f"{d}={label}" for d, label in zip(dirs, label_of, strict=True)]
    return Classification(_name(uri), uri, images, labels, names, _own_templates(uri),
                          _checksum([*listing, *names, *mapping]), rule, source)


def _wds_classification(uri):
    """CLIP_benchmark's wds layout. The shards are not read here: each shard's tar headers are walked by seeking
    (512 bytes per member, the image bytes skipped) for the members' offsets and sizes, and only the small `.cls`
    members are read. The images are read once, when they are evaluated. The checksum is the dataset's fingerprint
    from that listing: see `_wds_fingerprint`."""
    fs, path = _fs(uri)
    n = int(read_entries(f"{uri}/test/nshards.txt")[0][1])
    images, labels, listing = [], [], []
    names, source = _class_list(uri, None)
    for s in range(n):
        shard = f"{uri}/test/{s}.tar"
        if not fs.exists(f"{path}/test/{s}.tar"):
            raise DatasetError(f"{shard}: no such shard (test/nshards.txt says {n})")
        refs, cls, members = {}, {}, []
        with fs.open(f"{path}/test/{s}.tar", "rb") as f:
            try:
                with tarfile.open(fileobj=f, mode="r:") as tar:  # uncompressed only: images are read by range
                    for m in tar:
                        if not m.isfile():
                            continue
                        members.append((m.name, m.size))
                        key, _, ext = m.name.rpartition(".")
                        if ext.lower() in IMAGE_EXTS:
                            refs[key] = ("tar", shard, m.offset_data, m.size)
                        elif ext == "cls":
                            text = tar.extractfile(m).read().decode().strip()
                            if not text.isdigit() or int(text) >= len(names):
                                raise DatasetError(f"{shard}: {m.name}: label {text!r} is not a class index "
                                                   f"0..{len(names) - 1} of {source}")
                            cls[key] = int(text)
            except tarfile.TarError as e:
                raise DatasetError(f"{shard}: not an uncompressed tar file ({e}); CLIP_benchmark's wds shards are "
                                   "plain .tar (images are read by byte range)") from None
        listing.append((s, fs.size(f"{path}/test/{s}.tar"), members))
        for key in refs:
            if key not in cls:
                raise DatasetError(f"{shard}: sample {key} has an image but no .cls label")
            images.append(refs[key])
            labels.append(cls[key])
    return Classification("wds/" + _name(uri), uri, images, labels, names, _own_templates(uri),
                          _wds_fingerprint(uri, listing, labels, names), "cls_files", source)


def _wds_fingerprint(uri: str, listing: list, labels: list[int], names: list[str]) -> str:
    """A wds dataset's identity without reading its images: every shard's size and its members' names and sizes
    (in tar order), every label, the class names, and the bytes of the small files beside the shards that change
    what is evaluated (nshards.txt, classnames.txt, the template files). A shard rewritten with an image of another
    size, a sample added, removed, renamed or relabelled, a class renamed or a template edited changes it; an image
    rewritten with bytes of the very same size does not (nothing short of reading every image would see that)."""
    fs, path = _fs(uri)
    side = []
    for name in ("test/nshards.txt", "classnames.txt", "zeroshot_classification_templates.txt", "templates.txt"):
        if fs.exists(f"{path}/{name}"):
            side.append((name, hashlib.sha256(fs.cat_file(f"{path}/{name}")).hexdigest()))
    return "sha256-listing:" + _checksum([json.dumps([listing, labels, names, side])]).removeprefix("sha256:")


def _table_labels(uri: str, rows: list[dict], names: list[str], source: str) -> tuple[list[int], str]:
    """Labels of a csv/parquet: all class indices, or all class names (matched by name_key); anything else is an
    error naming the row."""
    position = {name_key(n): i for i, n in enumerate(names)}
    values = [r["label"] for r in rows]
    is_index = [(isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.strip().isdigit())
                or (isinstance(v, float) and v.is_integer()) for v in values]
    by_index = all(is_index)
    if by_index and all(name_key(v) in position for v in values) and \
            any(position[name_key(v)] != int(float(v)) for v in values):
        raise DatasetError(f"{uri}: the labels are numbers that are also class names in {source}, and they mean "
                           "different classes read as indices or as names; write the labels as class indices "
                           "(0-based, in the order of the class list) or rename the classes")
    labels = []
    for i, (r, v) in enumerate(zip(rows, values, strict=True)):
        where = f"{uri}: row {i + 1} (path {r.get('path')!r})"
        if by_index:
            label = int(float(v))
            if not 0 <= label < len(names):
                raise DatasetError(f"{where}: label {v} is not a class index 0..{len(names) - 1} of {source}")
        elif v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            raise DatasetError(f"{where}: empty label")
        elif name_key(v) in position:
            label = position[name_key(v)]
        else:
            raise DatasetError(f"{where}: label {v!r} is not a class name in {source} "
                               f"(e.g. {', '.join(repr(n) for n in names[:5])}); fix the label or the class list")
        labels.append(label)
    return labels, "label_index" if by_index else "label_name"


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
    names, source = _class_list(folder, classnames)
    labels, rule = _table_labels(uri, rows, names, source)
    images = [("file", r["path"] if "://" in r["path"] or r["path"].startswith("/") else f"{folder}/{r['path']}")
              for r in rows]
    return Classification(_name(uri), uri, images, labels, names, _own_templates(folder),
                          _checksum([*(json.dumps(r, default=str) for r in rows), *names, *labels]), rule, source)


def load_retrieval(uri: str) -> Retrieval:
    """Karpathy-format json (images[].filename + sentences[].raw, the `test` split if there is one), a json
    list of {"image", "captions"}, or a csv of (image, caption) rows."""
    folder = uri.rsplit("/", 1)[0]
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        text = f.read()
    try:
        if uri.endswith(".csv"):
            grouped: dict[str, list[str]] = {}
            for r in csv.DictReader(io.StringIO(text)):
                grouped.setdefault(r["image"], []).append(r["caption"])
            pairs = list(grouped.items())
        else:
            data = _json(uri, text, "retrieval annotation file")
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
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"{uri}: an entry lacks a field or has the wrong type ({type(e).__name__}: {e}); expected "
                           "Karpathy json (images[].filename, images[].sentences[].raw), a list of {'image', "
                           "'captions'}, or a csv with columns image,caption") from None
    if not pairs:
        raise DatasetError(f"{uri}: no images with captions")
    images = [("file", p if "://" in p or p.startswith("/") else f"{folder}/{p}") for p, _ in pairs]
    return Retrieval(_name(folder), uri, images, [c for _, c in pairs], _checksum([text]))


def _json(uri: str, text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{uri}: not valid JSON ({e}); is it a complete {what}?") from None


def _box_problem(box) -> str:
    """What is wrong with a COCO [x, y, width, height] box, or ""."""
    if not isinstance(box, list | tuple) or len(box) != 4 or \
            not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        return f"bbox {box!r} is not four finite numbers [x, y, width, height]"
    if box[2] <= 0 or box[3] <= 0:
        return f"bbox {box!r} has a width or height <= 0 (COCO boxes are [x, y, width, height])"
    return ""


def _check_coco(uri: str, coco: dict) -> None:
    """Every annotation names an image and a category of the file and has a usable box; every image has its file
    name and size. Errors name the file, the annotation id and what is wrong."""
    images, categories = {}, set()
    for i, im in enumerate(coco["images"]):
        missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if missing:
            raise DatasetError(f"{uri}: images[{i}] (id {im.get('id')}) has no {', '.join(missing)}")
        images[im["id"]] = im
    for i, c in enumerate(coco["categories"]):
        if "id" not in c or "name" not in c:
            raise DatasetError(f"{uri}: categories[{i}] needs an id and a name")
        categories.add(c["id"])
    for i, a in enumerate(coco["annotations"]):
        where = f"{uri}: annotation {a.get('id', f'#{i}')}"
        if a.get("image_id") not in images:
            raise DatasetError(f"{where}: image_id {a.get('image_id')!r} is not in the file's images")
        if a.get("category_id") not in categories:
            raise DatasetError(f"{where}: category_id {a.get('category_id')!r} is not in the file's categories")
        problem = _box_problem(a.get("bbox"))
        if problem:
            raise DatasetError(f"{where} (image {a['image_id']}): {problem}")


def load_detection(uri: str, images: str | None = None, proposals: str | None = None,
                   split: str | None = None) -> Detection:
    """A COCO annotation json; images in `images` (default: an `images/` folder beside the json)."""
    folder = uri.rsplit("/", 1)[0]
    with fsspec.open(uri, "rt", encoding="utf-8") as f:
        text = f.read()
    coco = _json(uri, text, "COCO annotation file")
    if not isinstance(coco, dict):
        raise DatasetError(f"{uri}: not a COCO annotation file (a JSON object with images, annotations, categories)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetError(f"{uri}: not a COCO annotation file (no '{key}' list)")
    _check_coco(uri, coco)
    props = None
    if proposals:
        with fsspec.open(proposals, "rt") as f:
            raw = _json(proposals, f.read(), "proposals file")
        props = {}
        images_by_id = {im["id"] for im in coco["images"]}
        entries = raw if isinstance(raw, list) else [{"image_id": k, "bbox": b} for k, v in raw.items() for b in v]
        for i, p in enumerate(entries):
            where = f"{proposals}: proposal {i}"
            try:
                iid = int(p["image_id"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{where}: no integer image_id") from None
            if iid not in images_by_id:
                raise DatasetError(f"{where}: image_id {iid} is not an image of {uri}")
            problem = _box_problem(p.get("bbox"))
            if problem:
                raise DatasetError(f"{where} (image {iid}): {problem}")
            props.setdefault(iid, []).append(p["bbox"])
    split_doc = {}
    split_uri = split or f"{folder}/split.json"
    fs, split_path = _fs(split_uri)
    if fs.exists(split_path):
        with fsspec.open(split_uri, "rt") as f:
            split_doc = json.load(f)
    return Detection(_name(folder), uri, coco, (images or f"{folder}/images").rstrip("/"), props, split_doc,
                     _checksum([text, json.dumps(split_doc, sort_keys=True)]))

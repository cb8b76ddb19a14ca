"""The manifest contract between the packages, in code: kinds, versions, field specs, ids, atomic I/O.

docs/manifests.md is the prose of this file. No package may import another, so this one file is
vendored into each package as `_manifests.py` by `nox -s vendor`; a test checks every copy is
identical to this source. Edit here, never in a copy.

A field spec is a Python type (or tuple of types), a dict of field specs (a key ending in "?"
is optional), or a one-item list (every element must match the item spec).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import time
import uuid

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class UserError(ValueError):
    """A mistake in what the user gave (a file, a row, a field, an option): the message names it and the fix.

    The three CLIs catch exactly this class (and file-not-found / permission errors) and print one line;
    anything else is a bug and keeps its traceback. Package-specific errors subclass it.
    """


class ManifestError(UserError):
    """A manifest is missing, malformed, of the wrong kind, or from a newer version."""


class MissingExtraError(UserError):
    """An optional dependency is not installed: the message says which extra to install, or what avoids it."""


def require(module: str, install: str, alternative: str = "", package: str | None = None):
    """Import `module` (relative to `package` if it starts with a dot), or raise MissingExtraError naming the pip
    command that installs what is missing, and an option that avoids needing it."""
    import importlib

    try:
        return importlib.import_module(module, package)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in ("react_index", "react_tune", "react_eval"):
            raise  # one of our own modules is missing: a broken install or a bug, keep the traceback
        hint = f", or {alternative}" if alternative else ""
        raise MissingExtraError(f"this step needs the '{e.name}' package, which is not installed: "
                                f"{install}{hint}") from None


ENVELOPE = {
    "kind": str,
    "version": int,
    "id": str,
    "created": str,
    "producer": {"name": str, "version": str},
    "lineage": [{"kind": str, "id": str, "uri": str}],
}

STORE, INDEX, RETRIEVAL, CHECKPOINT, EVAL_RESULT = (
    "react.embedding-store", "react.index", "react.retrieval", "react.checkpoint", "react.eval-result")

MODEL = {"name": str, "pretrained": str, "pretrained_sha256?": (str, type(None))}
COUNTS = dict  # reason or class -> count

SPECS = {
    STORE: {
        "model": MODEL,
        "dim": int,
        "dtype": str,
        "normalized": bool,
        "modalities": [str],
        "shard_order?": str,  # "input" or "path-text": the rule that ordered `shards` (= the store's rows)
        "shards": [{"name": str, "source": str, "samples": int, "metadata": str, "dim": int,
                    "img_emb?": str, "text_emb?": str, "skipped": COUNTS,
                    # in-place stores: each referenced file's size and the sha256 of its first + last 64 KiB
                    "files?": [{"file": str, "bytes": int, "ends_sha256": str}]}],
        "counts": {"samples": int, "skipped": COUNTS},
        "inputs": [str],
        # in-place stores (a precomputed folder's own parts, not copied): the folder, and what was checked
        "in_place?": {"folder": str, "images_root": (str, type(None)),
                      "check": {"rows_sampled": int, "nonfinite_rows": int, "max_norm_error": float}},
    },
    INDEX: {
        "model": MODEL,
        "dim": int,
        "metric": str,
        "indexes": {m + "?": {"file": str, "index_key": str, "ntotal": int, "search_params": dict,
                              "measured": {"k": int, "recall": float, "queries": int, "qps": float,
                                           "query_modality?": str, "query_ids?": str, "excludes_self?": bool},
                              "on_disk?": bool, "build_seconds?": float, "rerank?": int,
                              # `react-index adopt`: an index file made by another tool, referenced in place
                              "mmap?": bool,
                              "adopted?": {"bytes": int, "ends_sha256": str, "infos": (str, type(None)),
                                           "index_param": (str, type(None)), "index_param_recall": float,
                                           "self_found": float}}
                    for m in ("image", "text")},
    },
    RETRIEVAL: {
        "rows_file": str,
        "rows": int,
        "rows_sha256": str,
        "model": MODEL,
        "mode": str,
        "k": int,
        "selection": dict,
        "classes": [str],
        "templates": [str],
        "counts_per_class": [int],
        "unique_samples": int,
        # written by `react-index download` / `attach`: what the download kept and lost (docs/manifests.md)
        "download?": {"tool": str,
                      "samples": {"requested": int, "downloaded": int, "copied": int, "failed": int,
                                  "retryable": int},
                      "failures": COUNTS, "failures_per_class": [COUNTS], "options": dict},
        "survival?": {"rows_before": [int], "rows_after": [int], "samples_before": [int], "samples_after": [int],
                      "min_survival": float, "below": [str]},
    },
    CHECKPOINT: {
        "base_model": MODEL,
        "variant": str,
        "blocks": {"k": int, "positions": [int], "width": int, "heads": int, "mlp_ratio": float, "act": str},
        "weights": {"file": str, "sha256": str, "parameters": int},
        "training": {"steps": int, "samples_seen": int, "final_loss": (float, type(None)), "skipped": COUNTS,
                     "config": dict},
        # variant "linear-head" (REAL-Linear): a linear classifier over the frozen image features, ensembled with
        # the zero-shot classifier of `classes` x `templates`; the weights file holds `weight` and `bias`
        "head?": {"classes": [str], "templates": [str], "templates_source": str, "dim": int, "logit_scale": float,
                  "ensemble_weight": float,
                  "held_out": {"fraction": float, "seed": int, "rows": int, "samples": int, "metric": str,
                               "accuracy": {"zero_shot": float, "head": float, "ensemble": float},
                               "grid": [float], "scores": [float]},
                  "train": {"rows": int, "samples": int, "text_samples": int, "rows_per_class": [int],
                            "balance": str}},
    },
    EVAL_RESULT: {
        # CLIP_benchmark's top-level fields ...
        "dataset": str, "model": str, "pretrained": str, "task": str, "metrics": dict, "language": str,
        # ... and ours
        "model_spec": str, "dataset_uri": str, "dataset_checksum": str, "n_samples": int, "seconds": float,
        "details?": dict, "options?": dict,
    },
}
VERSIONS = {STORE: 1, INDEX: 1, RETRIEVAL: 1, CHECKPOINT: 1, EVAL_RESULT: 1}

# Retrieval rows: one per (class, sample). A row locates its image bytes by exactly one of:
# image_uri + image_offset + image_length (an uncompressed tar member: a ranged read returns the file),
# image_uri alone (a file), or url alone (not yet downloaded).
RETRIEVAL_COLUMNS = pa.schema([
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("class_index", pa.int32(), nullable=False),
    pa.field("templates", pa.list_(pa.string())),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("key", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("image_uri", pa.string()),
    pa.field("image_offset", pa.int64()),
    pa.field("image_length", pa.int64()),
    pa.field("url", pa.string()),
])


def _type_name(types) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "an object", list: "a list", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _problems(value, spec, path, strict=False):
    """Yield (field path, what was expected) for each place `value` does not match `spec`; with `strict`, a key
    the spec does not declare is a problem too (how the writers are held to docs/manifests.md)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            yield path, "an object"
            return
        for key, sub in spec.items():
            name = key.rstrip("?")
            where = f"{path}.{name}" if path else name
            if name in value:
                yield from _problems(value[name], sub, where, strict)
            elif not key.endswith("?"):
                yield where, "present (it is missing)"
        if strict:
            declared = {key.rstrip("?") for key in spec}
            for name in value:
                if name not in declared:
                    yield (f"{path}.{name}" if path else name), "declared in the spec (it is not)"
    elif isinstance(spec, list):
        if not isinstance(value, list):
            yield path, "a list"
            return
        for i, item in enumerate(value):
            yield from _problems(item, spec[0], f"{path}[{i}]", strict)
    else:
        types = spec if isinstance(spec, tuple) else (spec,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return
        if isinstance(value, bool) and bool not in types:
            yield path, _type_name(types)
        elif not isinstance(value, types):
            yield path, _type_name(types)


def check(doc, spec, where: str, strict: bool = False) -> None:
    """Raise ManifestError naming `where` and the first field of `doc` that does not match `spec`."""
    for field, expected in _problems(doc, spec, "", strict):
        got = "" if expected.startswith("present") else f", got {json.dumps(_find(doc, field))[:80]}"
        raise ManifestError(f"{where}: field '{field}' should be {expected}{got}")


def _find(doc, field):
    value = doc
    for part in field.replace("[", ".[").split("."):
        if not part:
            continue
        try:
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return value


def manifest_id(doc: dict) -> str:
    """Content id: sha256 of the canonical JSON of everything but `id` and `created`."""
    body = {k: v for k, v in doc.items() if k not in ("id", "created")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")


def resolve_model(model_name: str, pretrained: str | None) -> tuple[dict, str | None]:
    """(the manifests' model record, what to pass to open_clip as `pretrained`).

    `pretrained` is an open_clip tag or a weights file (local or fsspec URI, fetched to a local cache);
    a file's sha256 goes in the record, so a manifest names exactly which weights were used.
    """
    record = {"name": model_name, "pretrained": pretrained or "", "pretrained_sha256": None}
    if pretrained and ("/" in pretrained or pretrained.endswith(WEIGHT_FILE_SUFFIXES)):
        local = fsspec.open_local(f"simplecache::{pretrained}") if "://" in pretrained else pretrained
        fs, path = fsspec.core.url_to_fs(local)
        if not fs.exists(path):
            raise ManifestError(f"{pretrained}: weights file not found")
        record["pretrained_sha256"] = _sha256(local)
        pretrained = local
    return record, pretrained or None


def lineage_entry(doc: dict, uri: str) -> dict:
    """How a manifest refers to one it was made from."""
    return {"kind": doc["kind"], "id": doc["id"], "uri": str(uri)}


# --- atomic writes: a temporary name in the same folder, then a rename -----------------------------

TEMP_MARK = ".tmp-"


def temp_name(path: str) -> str:
    """`path.tmp-PID-RANDOM`: the writer's pid lets a later run tell a dead writer's leftovers from a live one."""
    return f"{path}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _writer_alive(tmp: str, fs, max_age_s: float) -> bool:
    pid = tmp.rsplit(TEMP_MARK, 1)[-1].split("-", 1)[0]
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem) and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:  # another machine may be writing: only old leftovers are stale
        modified = fs.modified(tmp).timestamp()
    except (NotImplementedError, FileNotFoundError, AttributeError):
        return True
    return time.time() - modified < max_age_s


def remove_stale_temps(uri: str, max_age_s: float = 86400.0) -> list[str]:
    """Delete `uri.tmp-*` files left by writers that died (killed runs); returns what was removed."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    removed = []
    for tmp in fs.glob(path + TEMP_MARK + "*"):
        if not _writer_alive(tmp, fs, max_age_s):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(tmp)
                removed.append(tmp)
    return removed


def _parent(fs, path: str) -> None:
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename into place."""
    with open_atomic(uri) as f:
        f.write(data)


@contextlib.contextmanager
def open_atomic(uri: str):
    """A binary file object that becomes `uri` only when the block finishes without an exception."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    _parent(fs, path)
    remove_stale_temps(uri)
    tmp = temp_name(path)
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


@contextlib.contextmanager
def local_atomic_path(path: str):
    """A temporary local path for writers that need a file name (faiss, numpy memmaps, safetensors);
    renamed onto `path` when the block finishes without an exception."""
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_parquet_atomic(uri: str, table: pa.Table, row_group_size: int = 65536) -> None:
    with open_atomic(uri) as f:
        pq.write_table(table, f, row_group_size=row_group_size)


# --- where manifests live ------------------------------------------------------------------------

MANIFEST_FILE = "manifest.json"  # in a store, an index or a checkpoint folder


def join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts])


def manifest_uri(folder: str) -> str:
    """The manifest of a store, index or checkpoint folder (a retrieval set's is its sidecar, see below)."""
    folder = str(folder).rstrip("/")
    return folder if folder.endswith(".json") else join(folder, MANIFEST_FILE)


def build(kind: str, body: dict, lineage, producer: dict, where: str) -> dict:
    """A complete, validated manifest (envelope + body) with its content id."""
    doc = {"kind": kind, "version": VERSIONS[kind], "id": "", "producer": producer,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "lineage": list(lineage), **body}
    check(doc, ENVELOPE | SPECS[kind], where)
    try:  # every key written must be declared in the spec (docs/manifests.md): one that is not is a bug
        check(doc, ENVELOPE | SPECS[kind], where, strict=True)
    except ManifestError as e:
        raise TypeError(f"bug: a writer produced a {kind} manifest with a key the spec does not declare: {e}") \
            from None
    doc["id"] = manifest_id(doc)
    return doc


def write_manifest(uri: str, kind: str, body: dict, lineage=(), *, producer: dict) -> dict:
    """Validate and write a manifest of `kind` atomically; returns it (with its id)."""
    doc = build(kind, body, lineage, producer, str(uri))
    write_bytes_atomic(uri, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
    return doc


def read_json(uri: str, what: str = "manifest") -> dict:
    try:
        with fsspec.open(str(uri), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(f"{uri}: no such {what} file") from None
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{uri}: not valid JSON ({e}); the file is corrupt or not a {what}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{uri}: a {what} is a JSON object, this file holds a {type(doc).__name__}")
    return doc


def validate(doc: dict, kind: str, reader: str, where: str) -> dict:
    """Check kind, version, envelope, body and id; `reader` names the package for upgrade advice."""
    got_kind = doc.get("kind")
    if got_kind is None:
        raise ManifestError(f"{where}: field 'kind' is missing: not a REACT manifest (expected '{kind}')")
    if got_kind != kind:
        raise ManifestError(f"{where}: field 'kind' is '{got_kind}', expected '{kind}'; pass a {kind} manifest")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"{where}: field 'version' should be a positive integer, got {json.dumps(version)}")
    if version > VERSIONS[kind]:
        raise ManifestError(
            f"{where}: field 'version' is {version}, but this {reader} reads '{kind}' manifests up to "
            f"version {VERSIONS[kind]}; upgrade {reader} to read it")
    check(doc, ENVELOPE | SPECS[kind], where)
    if doc["id"] != manifest_id(doc):
        raise ManifestError(
            f"{where}: field 'id' does not match the manifest's content (edited by hand or corrupt); "
            "regenerate it with the tool that wrote it")
    return doc


def read_manifest(uri: str, kind: str, *, reader: str) -> dict:
    return validate(read_json(uri), kind, reader, str(uri))


# --- retrieval manifests: rows in parquet, the manifest in a sidecar json -----------------------

def retrieval_paths(uri: str) -> tuple[str, str]:
    """(rows parquet, sidecar json) from either one: the sidecar of `x.parquet` is `x.parquet.json`."""
    uri = str(uri)
    if uri.endswith(".json"):
        return uri[: -len(".json")], uri
    return uri, uri + ".json"


def check_retrieval_schema(schema: pa.Schema, where: str) -> None:
    for want in RETRIEVAL_COLUMNS:
        if want.name not in schema.names:
            raise ManifestError(f"{where}: column '{want.name}' is missing (expected {want.type})")
        got = schema.field(want.name).type
        if got != want.type:
            raise ManifestError(f"{where}: column '{want.name}' has type {got}, expected {want.type}")


def check_retrieval_rows(batch: pa.RecordBatch | pa.Table, where: str, first_row: int = 0) -> None:
    """Every row must locate its image: a tar member (uri+offset+length), a file (uri) or a url."""
    uri, off, length = (pc.is_null(batch.column(c)) for c in ("image_uri", "image_offset", "image_length"))
    url = pc.fill_null(pc.equal(batch.column("url"), ""), True)  # True where there is no url
    problems = (
        (pc.or_(pc.not_equal(off, length), pc.and_(pc.invert(off), uri)),
         "image_offset and image_length need each other and image_uri"),
        (pc.and_(uri, url), "no image locator: set image_uri (+ offset/length for a tar member) or url"),
    )
    for bad, problem in problems:
        row = pc.index(bad, True).as_py()
        if row >= 0:
            raise ManifestError(f"{where}: row {first_row + row}: {problem}")


def _sha256(uri: str) -> str:
    h = hashlib.sha256()
    with fsspec.open(uri, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _scan_rows(rows_uri: str) -> int:
    """Check the parquet's schema and every row's locator; return the row count."""
    with fsspec.open(rows_uri, "rb") as f:
        pf = pq.ParquetFile(f)
        check_retrieval_schema(pf.schema_arrow, rows_uri)
        seen = 0
        for batch in pf.iter_batches(batch_size=65536, columns=["image_uri", "image_offset", "image_length", "url"]):
            check_retrieval_rows(batch, rows_uri, seen)
            seen += batch.num_rows
        return seen


def write_retrieval_manifest(rows_uri: str, body: dict, lineage=(), *, producer: dict) -> dict:
    """Check an already written rows parquet and write its sidecar manifest next to it."""
    rows_uri, sidecar = retrieval_paths(rows_uri)
    body = body | {"rows_file": rows_uri.rsplit("/", 1)[-1], "rows": _scan_rows(rows_uri),
                   "rows_sha256": _sha256(rows_uri)}
    return write_manifest(sidecar, RETRIEVAL, body, lineage, producer=producer)


def read_retrieval_manifest(uri: str, *, reader: str, verify_checksum: bool = True) -> dict:
    """Validate the sidecar, the rows' schema, every row's locator and (by default) the rows' checksum, so a
    parquet edited after its sidecar was written is refused; returns the sidecar plus `rows_uri`."""
    _, sidecar = retrieval_paths(uri)
    doc = read_manifest(sidecar, RETRIEVAL, reader=reader)
    rows_uri = sidecar.rsplit("/", 1)[0] + "/" + doc["rows_file"] if "/" in sidecar else doc["rows_file"]
    try:
        rows = _scan_rows(rows_uri)
    except FileNotFoundError:
        raise ManifestError(f"{sidecar}: field 'rows_file' names {rows_uri}, which does not exist") from None
    if rows != doc["rows"]:
        raise ManifestError(f"{sidecar}: field 'rows' is {doc['rows']} but {rows_uri} has {rows} rows")
    if verify_checksum and _sha256(rows_uri) != doc["rows_sha256"]:
        raise ManifestError(f"{sidecar}: field 'rows_sha256' does not match {rows_uri}: the rows were changed after "
                           "the manifest was written; write edited sets with the tool (or react_index."
                           "write_retrieval_manifest) so the sidecar matches them")
    return doc | {"rows_uri": rows_uri}

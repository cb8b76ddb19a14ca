"""Shared checks for manifest writers/readers, driven by the examples in docs/manifests.md.

The retrieval fixture here writes rows + sidecar with plain pyarrow/json/hashlib, straight from
the spec, so readers are tested against files not written by the code under test.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "manifests.md"
ENVELOPE_FIELDS = ("kind", "version", "id", "created", "producer", "lineage")


def doc_block(marker: str) -> dict:
    """The full manifest shown in the ```jsonc block of docs/manifests.md that holds `marker`."""
    blocks = [b for b in re.findall(r"```jsonc\n(.*?)```", DOCS.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"docs/manifests.md: one jsonc example holding {marker}"
    return json.loads(blocks[0])


def key_paths(value, prefix="") -> set[str]:
    """Every key path of a manifest (`a.b`, list items as `a[]`), not descending into free-form counts/params."""
    out = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if not path.endswith(("skipped", "search_params")):
                out |= key_paths(sub, path)
    elif isinstance(value, list):
        for item in value:
            out |= key_paths(item, prefix + "[]")
    return out


def doc_examples() -> dict[str, dict]:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    return {d["kind"]: d for d in map(json.loads, blocks)}


def example_body(kind: str) -> dict:
    return {k: v for k, v in copy.deepcopy(doc_examples()[kind]).items() if k not in ENVELOPE_FIELDS}


def spec_id(doc: dict) -> str:
    """The id as docs/manifests.md defines it, computed independently of the packages."""
    body = {k: v for k, v in doc.items() if k not in ("id", "created")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _rewrite(path: Path, doc: dict, fix_id: bool = True) -> None:
    if fix_id:
        doc["id"] = spec_id(doc)
    path.write_text(json.dumps(doc))


def first_field(body: dict, typ) -> str:
    return next(k for k, v in body.items() if isinstance(v, typ) and not isinstance(v, bool))


def check_round_trip_and_rejections(tmp_path, write, read, ManifestError, kind: str, package: str):
    """Round trip one kind through a package's writer/reader, then feed the reader every kind of bad file."""
    body = example_body(kind)
    lineage = [{"kind": "react.embedding-store", "id": "sha256:" + "0" * 64, "uri": "s3://b/store/manifest.json"}]
    path = tmp_path / "manifest.json"
    written = write(str(path), kind, body, lineage)
    assert written["id"] == spec_id(written)
    assert written["producer"]["name"] == package
    loaded = read(str(path), kind)
    assert loaded == written == json.loads(path.read_text())
    assert {k: loaded[k] for k in body} == body
    assert loaded["lineage"] == lineage
    # same content, same id
    assert write(str(tmp_path / "again.json"), kind, body, lineage)["id"] == written["id"]
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]

    def rejects(doc, pattern, fix_id=True):
        bad = tmp_path / "bad.json"
        _rewrite(bad, doc, fix_id)
        with pytest.raises(ManifestError, match=pattern) as err:
            read(str(bad), kind)
        assert str(bad) in str(err.value)

    rejects(written | {"version": written["version"] + 1},
            rf"field 'version' is {written['version'] + 1}, but this {package} reads '{re.escape(kind)}'"
            rf".*upgrade {package}")
    rejects(written | {"version": "1"}, "field 'version' should be a positive integer")
    rejects(written | {"kind": "react.something-else"}, r"field 'kind' is 'react.something-else', expected")
    rejects({k: v for k, v in written.items() if k != "kind"}, "field 'kind' is missing")
    missing = next(iter(body))
    rejects({k: v for k, v in written.items() if k != missing}, rf"field '{missing}' should be present")
    wrong_type = first_field(body, int) if any(isinstance(v, int) and not isinstance(v, bool) for v in body.values()) \
        else first_field(body, str)
    rejects(written | {wrong_type: [1, 2]}, rf"field '{wrong_type}' should be .*got \[1, 2\]")
    rejects(written | {"lineage": [{"kind": "x", "id": 3, "uri": "u"}]}, r"field 'lineage\[0\].id' should be a string")
    edited = copy.deepcopy(written)
    edited[missing] = copy.deepcopy(body[missing]) if not isinstance(body[missing], str) else body[missing] + "x"
    if edited[missing] == written[missing]:
        edited["producer"]["version"] = "9.9"
    rejects(edited, "field 'id' does not match", fix_id=False)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ManifestError, match="junk.json: not valid JSON"):
        read(str(tmp_path / "junk.json"), kind)
    with pytest.raises(ManifestError, match="nope.json: no such manifest file"):
        read(str(tmp_path / "nope.json"), kind)
    # writers refuse a malformed body too, before writing anything
    with pytest.raises(ManifestError, match=rf"field '{wrong_type}'"):
        write(str(tmp_path / "never.json"), kind, body | {wrong_type: [1, 2]}, lineage)
    assert not (tmp_path / "never.json").exists()


def retrieval_rows(n: int = 4, shard: str = "/data/00000.tar") -> pa.Table:
    """n rows over two classes: tar members, a file, and a URL-only row."""
    locators = [(shard, 512 + 1536 * i, 1000 + i, f"https://x.invalid/{i}.jpg") for i in range(n - 2)]
    locators += [("/data/img/extra.jpg", None, None, None), (None, None, None, "https://x.invalid/u.jpg")]
    return pa.table({
        "class_name": [("star", "ring")[i % 2] for i in range(n)],
        "class_index": pa.array([i % 2 for i in range(n)], pa.int32()),
        "templates": [["a photo of a {c}."] for _ in range(n)],
        "rank": pa.array([i // 2 for i in range(n)], pa.int32()),
        "score": pa.array([0.5 - 0.01 * i for i in range(n)], pa.float32()),
        "sample_id": pa.array(range(n), pa.int64()),
        "key": [f"{i:09d}" for i in range(n)],
        "caption": [f"caption {i}" for i in range(n)],
        "image_uri": [loc[0] for loc in locators],
        "image_offset": pa.array([loc[1] for loc in locators], pa.int64()),
        "image_length": pa.array([loc[2] for loc in locators], pa.int64()),
        "url": [loc[3] for loc in locators],
    })


def write_retrieval_fixture(folder: Path, table: pa.Table | None = None, name: str = "set.parquet",
                            **overrides) -> Path:
    """A retrieval set written from the spec alone; returns the parquet path."""
    table = retrieval_rows() if table is None else table
    folder.mkdir(parents=True, exist_ok=True)
    rows = folder / name
    pq.write_table(table, rows)
    classes = sorted(set(table.column("class_name").to_pylist()), key=table.column("class_name").to_pylist().index)
    counts = [table.column("class_name").to_pylist().count(c) for c in classes]
    doc = {
        "kind": "react.retrieval", "version": 1, "id": "", "created": "2026-11-25T00:00:00+00:00",
        "producer": {"name": "fixture", "version": "0"},
        "lineage": [{"kind": "react.index", "id": "sha256:" + "1" * 64, "uri": "/idx/manifest.json"}],
        "rows_file": name, "rows": table.num_rows,
        "rows_sha256": "sha256:" + hashlib.sha256(rows.read_bytes()).hexdigest(),
        "model": {"name": "react-tiny-vit", "pretrained": "/w.safetensors", "pretrained_sha256": None},
        "mode": "t2i", "k": 2, "selection": {"per": "template"}, "classes": classes,
        "templates": ["a photo of a {c}."], "counts_per_class": counts,
        "unique_samples": len(set(table.column("sample_id").to_pylist())),
    } | overrides
    doc["id"] = spec_id(doc)
    (folder / (name + ".json")).write_text(json.dumps(doc, indent=1))
    return rows


def check_retrieval_reader(tmp_path, read, ManifestError):
    """A package's retrieval reader accepts a spec-conforming set and refuses each kind of bad one."""
    rows = write_retrieval_fixture(tmp_path / "ok")
    for uri in (str(rows), str(rows) + ".json"):
        doc = read(uri)
        assert doc["rows"] == 4 and doc["rows_uri"] == str(rows) and doc["classes"] == ["star", "ring"]
    assert read(str(rows), verify_checksum=True)["rows_sha256"].startswith("sha256:")

    bad = write_retrieval_fixture(tmp_path / "count", rows=5)
    with pytest.raises(ManifestError, match=r"field 'rows' is 5 but .*set.parquet has 4 rows"):
        read(str(bad))
    bad = write_retrieval_fixture(tmp_path / "sha")
    pq.write_table(retrieval_rows().slice(0, 4).replace_schema_metadata({"x": "y"}), bad)
    with pytest.raises(ManifestError, match="field 'rows_sha256' does not match"):
        read(str(bad), verify_checksum=True)
    bad = write_retrieval_fixture(tmp_path / "col", retrieval_rows().drop_columns(["image_offset"]))
    with pytest.raises(ManifestError, match=r"set.parquet: column 'image_offset' is missing"):
        read(str(bad))
    table = retrieval_rows()
    table = table.set_column(table.schema.get_field_index("score"), "score", table.column("score").cast(pa.float64()))
    bad = write_retrieval_fixture(tmp_path / "type", table)
    with pytest.raises(ManifestError, match=r"column 'score' has type double, expected float"):
        read(str(bad))
    bad = write_retrieval_fixture(tmp_path / "gone")
    bad.unlink()
    with pytest.raises(ManifestError, match="field 'rows_file' names .* which does not exist"):
        read(str(bad) + ".json")
    with pytest.raises(ManifestError, match="no such manifest file"):
        read(str(tmp_path / "missing.parquet"))
    table = retrieval_rows()
    no_locator = table.set_column(table.schema.get_field_index("url"), "url",
                                  pa.array([None, None, None, None], pa.string()))
    bad = write_retrieval_fixture(tmp_path / "loc", no_locator)
    with pytest.raises(ManifestError, match="set.parquet: row 3: no image locator"):
        read(str(bad))
    half = table.set_column(table.schema.get_field_index("image_length"), "image_length",
                            pa.array([1000, None, None, None], pa.int64()))
    bad = write_retrieval_fixture(tmp_path / "half", half)
    with pytest.raises(ManifestError, match="row 1: image_offset and image_length need each other"):
        read(str(bad))

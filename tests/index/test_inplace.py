"""In-place stores (issue 12): a clip-retrieval / LAION folder of float16 unit-norm parts becomes a store by writing
only a manifest that references its parts where they are; a changed part is refused by name; a folder that cannot
be read in place is refused saying why."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from clustered import clustered, write_clip_retrieval_layout
from stores import MODEL

from react_index import _manifests
from react_index.build import build_index
from react_index.cli import main
from react_index.domain import TargetClass
from react_index.precomputed import NotInPlace, ingest_in_place, ingest_precomputed
from react_index.query import Selection, retrieve
from react_index.sources import SourceError
from react_index.store import ChangedFileError, open_store

MODEL_ARGS = ["--model", "ViT-B-32", "--pretrained", "laion400m_e32"]
PARTS, ROWS, DIM = 12, 40, 16  # 12 parts: text order (0, 1, 10, 11, 2, …) is not numeric order


def laion_folder(root: Path, image=None, text=None) -> tuple[str, np.ndarray, np.ndarray]:
    """A LAION-like folder: 12 parts of float16 unit-norm vectors, metadata with key, caption, url, image_path."""
    if image is None:
        image, text = clustered(PARTS * ROWS, DIM, n_clusters=24)
    src = write_clip_retrieval_layout(str(root / "laion"), image, text, rows_per_file=ROWS)
    images = root / "images" / "00000"
    images.mkdir(parents=True)
    for i in range(PARTS):
        meta = pq.read_table(f"{src}/metadata/metadata_{i}.parquet")
        rows = range(i * ROWS, (i + 1) * ROWS)
        meta = meta.append_column("key", pa.array([f"{j:09d}" for j in rows]))
        meta = meta.append_column("image_path", pa.array([f"00000/{j:09d}" for j in rows]))
        pq.write_table(meta, f"{src}/metadata/metadata_{i}.parquet")
    for j in range(0, PARTS * ROWS, 7):  # some rows' images were downloaded here (img2dataset names: key + .jpg)
        (images / f"{j:09d}.jpg").write_bytes(b"jpeg")
    return src, image, text


def text_order_rows(n_parts: int = PARTS, rows: int = ROWS) -> np.ndarray:
    """The folder's numeric row of each store row: parts in the order of their paths sorted as text."""
    names = sorted(f"img_emb_{i}.npy" for i in range(n_parts))
    return np.concatenate([int(n[8:-4]) * rows + np.arange(rows) for n in names])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_in_place_store_references_the_folder_and_copies_nothing(tmp_path):
    src, image, text = laion_folder(tmp_path)
    images_root = str(tmp_path / "images")
    out = CliRunner().invoke(main, ["embed", src, "--out", str(tmp_path / "store"), "--in-place", "--images-root",
                                    images_root, *MODEL_ARGS])
    assert out.exit_code == 0, out.output
    assert "referenced, not copied" in out.output
    assert _files(tmp_path / "store") == ["manifest.json"]  # no .npy, no parquet: the folder is the data

    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["shard_order"] == "path-text" and manifest["modalities"] == ["image", "text"]
    assert [s["name"] for s in manifest["shards"]] == ["0", "1", "10", "11", *map(str, range(2, 10))]
    assert manifest["in_place"]["folder"] == src and manifest["in_place"]["images_root"] == images_root
    assert manifest["in_place"]["check"]["rows_sampled"] == 2 * PARTS * ROWS  # parts this small: every row
    shard = manifest["shards"][4]
    assert shard["img_emb"] == f"{src}/img_emb/img_emb_2.npy" and shard["metadata"] == \
        f"{src}/metadata/metadata_2.parquet"
    assert [f["file"] for f in shard["files"]] == [shard["img_emb"], shard["text_emb"], shard["metadata"]]
    assert shard["files"][0]["bytes"] == Path(shard["img_emb"]).stat().st_size

    info = CliRunner().invoke(main, ["info", str(tmp_path / "store")]).output
    assert f"in place   the parts of {src}, not copied; 960 sampled rows" in info
    store = open_store(str(tmp_path / "store"))
    order = text_order_rows()
    vectors = store.shard_vectors("image", 4)
    assert isinstance(vectors, np.memmap) and vectors.filename == f"{src}/img_emb/img_emb_2.npy"  # read in place
    assert np.array_equal(np.concatenate([c for _, c in store.iter_chunks("image", 50)]),
                          image[order].astype(np.float32))
    assert np.array_equal(store.rows("text", [5, 170, 479]), text[order[[5, 170, 479]]].astype(np.float32))

    # the metadata is mapped on read exactly as a copy maps it at ingest (image_path rule included)
    ingest_precomputed(src, str(tmp_path / "copy"), MODEL, images_root)
    copy = open_store(str(tmp_path / "copy"))
    for i in range(PARTS):
        assert store.metadata(i).to_pylist() == copy.metadata(i).to_pylist()
    rows = store.metadata(4, ["caption", "key", "image_uri", "source_row"], rows=[7, 0]).to_pylist()
    assert rows == [{"caption": "caption 87", "key": "000000087", "source_row": 7, "image_uri": None},
                    {"caption": "caption 80", "key": "000000080", "source_row": 0, "image_uri": None}]
    assert store.metadata(1, ["image_uri"], rows=[2])["image_uri"].to_pylist() == [
        f"{images_root}/00000/000000042.jpg"]  # downloaded: a locator; the others are known by url
    json_col = json.loads(store.metadata(0, ["json"], rows=[3])["json"][0].as_py())
    assert json_col == {"image_path": "00000/000000003"}


def test_an_in_place_store_builds_and_queries_like_a_copy(tmp_path):
    src, _, text = laion_folder(tmp_path)
    ingest_in_place(src, str(tmp_path / "store"), MODEL)
    ingest_precomputed(src, str(tmp_path / "copy"), MODEL)
    q = tmp_path / "q.npy"
    np.save(q, text[[3, 100, 450]].astype(np.float32))
    classes = [TargetClass(c) for c in "abc"]
    sets = []
    for name in ("store", "copy"):
        build_index(str(tmp_path / name), str(tmp_path / f"index-{name}"), queries=20)
        retrieve(str(tmp_path / f"index-{name}"), classes, out=str(tmp_path / f"{name}.parquet"), templates=[],
                 mode="t2i",
                 selection=Selection(k=8), query_embeddings=str(q))
        sets.append(pq.read_table(tmp_path / f"{name}.parquet").drop_columns(["source"]).to_pylist())
    scores = [[row.pop("score") for row in rows] for rows in sets]  # the copy re-normalised: float16 rounding
    assert sets[0] == sets[1] and len(sets[0]) == 24 and np.allclose(*scores, atol=1e-3)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_changed_part_is_refused_by_name(tmp_path):
    src, _, text = laion_folder(tmp_path)
    ingest_in_place(src, str(tmp_path / "store"), MODEL)
    build_index(str(tmp_path / "store"), str(tmp_path / "index"), queries=20)
    np.save(tmp_path / "q.npy", text[:2].astype(np.float32))
    (tmp_path / "classes.txt").write_text("a\nb\n")
    query = ["query", "--index", str(tmp_path / "index"), "--classes", str(tmp_path / "classes.txt"),
             "--query-embeddings", str(tmp_path / "q.npy"), "--out", str(tmp_path / "set.parquet")]
    assert CliRunner().invoke(main, query).exit_code == 0
    pristine = {p: p.read_bytes() for p in Path(src).rglob("*") if p.is_file()}

    part = Path(src) / "img_emb" / "img_emb_3.npy"
    _flip_byte(part, 200)  # one bit of the first row: same size, other vector
    with pytest.raises(ChangedFileError, match=re.escape(f"{part}: changed since the in-place store") +
                       ".*first or last 64 KiB differ.*--in-place"):
        open_store(str(tmp_path / "store"))
    out = CliRunner().invoke(main, query)
    assert out.exit_code == 1 and f"{part}: changed since" in out.output

    part.write_bytes(pristine[part])
    meta = Path(src) / "metadata" / "metadata_10.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.set_column(0, "caption", pa.array(["edited"] * table.num_rows)), meta)  # new captions
    out = CliRunner().invoke(main, query)
    assert out.exit_code == 1 and f"{meta}: changed since" in out.output

    meta.write_bytes(pristine[meta])
    last = Path(src) / "text_emb" / "text_emb_9.npy"
    last.write_bytes(pristine[last][:-DIM * 2])  # truncated by one row
    out = CliRunner().invoke(main, ["build", str(tmp_path / "store"), "--out", str(tmp_path / "index2")])
    assert out.exit_code == 1 and f"{last}: changed since" in out.output and "bytes" in out.output
    last.unlink()
    with pytest.raises(ChangedFileError, match=re.escape(f"{last}: missing")):
        open_store(str(tmp_path / "store"))

    last.write_bytes(pristine[last])
    assert CliRunner().invoke(main, query).exit_code == 0  # as it was: accepted again


def test_a_folder_that_cannot_be_read_in_place_is_refused_saying_why(tmp_path):
    image, text = clustered(PARTS * ROWS, DIM, n_clusters=24)
    runner = CliRunner()

    src32, _, _ = laion_folder(tmp_path / "f32", image.astype(np.float32), text.astype(np.float32))
    out = runner.invoke(main, ["embed", src32, "--out", str(tmp_path / "s32"), "--in-place", *MODEL_ARGS])
    assert out.exit_code == 1 and "img_emb_0.npy: holds float32 vectors" in out.output
    assert "Drop --in-place to copy the folder into the store instead" in out.output
    assert not (tmp_path / "s32").exists()

    scaled = image.astype(np.float32)
    scaled[5 * ROWS + ROWS - 1] *= 3  # the last row of part 5: in the sample
    src_norm, _, _ = laion_folder(tmp_path / "norm", scaled.astype(np.float16), text)
    with pytest.raises(NotInPlace, match=r"img_emb_5.npy: row 39 has L2 norm (3|2\.99\d*); .*unit-norm"):
        ingest_in_place(src_norm, str(tmp_path / "snorm"), MODEL)
    inf = image.copy()
    inf[7 * ROWS] = np.inf
    src_inf, _, _ = laion_folder(tmp_path / "inf", inf, text)
    with pytest.raises(NotInPlace, match=r"img_emb_7.npy: row 0 has L2 norm inf"):
        ingest_in_place(src_inf, str(tmp_path / "sinf"), MODEL)

    # the same folders copy into stores (re-normalised, float16): the fallback the message names
    out = runner.invoke(main, ["embed", src32, "--out", str(tmp_path / "c32"), *MODEL_ARGS])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "c32" / "img_emb").iterdir()) == sorted(
        f"img_emb_{i}.npy" for i in range(PARTS))
    other = runner.invoke(main, ["embed", str(tmp_path / "f32" / "images"), "--out", str(tmp_path / "x"),
                                 "--in-place"])
    assert other.exit_code == 1 and "--in-place applies to a folder of precomputed embeddings" in other.output


def test_nan_rows_are_kept_in_place_counted_and_never_retrieved(tmp_path, caplog):
    image, text = clustered(PARTS * ROWS, DIM, n_clusters=24)
    image[2 * ROWS + 1, 3] = np.nan  # part 2, row 1: in the sample (parts this small are read whole)
    src, _, _ = laion_folder(tmp_path, image, text)
    with caplog.at_level(logging.WARNING, logger="react_index"):
        manifest = ingest_in_place(src, str(tmp_path / "store"), MODEL)
    assert manifest["counts"] == {"samples": PARTS * ROWS, "skipped": {}}  # nothing dropped: ids stay the folder's
    assert manifest["in_place"]["check"]["nonfinite_rows"] == 1
    assert "img_emb_2.npy rows 1" in caplog.text and "they are kept" in caplog.text
    nan_row = 4 * ROWS + 1  # part 2 is the 5th in text order
    store = open_store(str(tmp_path / "store"))
    assert np.isnan(store.rows("image", [nan_row])).any()
    assert store.metadata(4, ["caption"], rows=[1])["caption"].to_pylist() == [f"caption {2 * ROWS + 1}"]

    build_index(str(store.uri), str(tmp_path / "index"), queries=20, modalities=["image"])
    np.save(tmp_path / "q.npy", text[[0, 2 * ROWS + 1]].astype(np.float32))
    retrieve(str(tmp_path / "index"), [TargetClass("a"), TargetClass("b")], out=str(tmp_path / "set.parquet"),
             templates=[],
             mode="t2i", selection=Selection(k=PARTS * ROWS), query_embeddings=str(tmp_path / "q.npy"))
    rows = pq.read_table(tmp_path / "set.parquet").to_pylist()
    assert nan_row not in {r["sample_id"] for r in rows} and len(rows) == 2 * (PARTS * ROWS - 1)
    order = text_order_rows()
    assert all(r["caption"] == f"caption {order[r['sample_id']]}" for r in rows)  # every other row still aligned


def test_a_store_inside_the_folder_is_relative_and_moves_with_it(tmp_path):
    src, image, _ = laion_folder(tmp_path)
    with pytest.raises(SourceError, match="is the folder of precomputed embeddings itself.*--in-place"):
        ingest_precomputed(src, src, MODEL)  # a copy would overwrite the parts it reads
    manifest = ingest_in_place(src, src, MODEL)  # the folder becomes its own store
    assert manifest["shards"][0]["img_emb"] == "img_emb/img_emb_0.npy"
    assert manifest["shards"][0]["metadata"] == "metadata/metadata_0.parquet"
    moved = tmp_path / "moved"
    shutil.move(src, moved)
    store = open_store(str(moved))
    assert np.array_equal(store.rows("image", [0, 479]), image[text_order_rows()[[0, 479]]].astype(np.float32))
    assert store.metadata(11, ["caption"], rows=[0])["caption"].to_pylist() == [f"caption {9 * ROWS}"]
    out = CliRunner().invoke(main, ["build", str(moved), "--out", str(tmp_path / "index"), "--queries", "10"])
    assert out.exit_code == 0, out.output  # a folder with a store manifest is a store

    ingest_precomputed(str(moved), str(tmp_path / "copy"), MODEL)
    with pytest.raises(SourceError, match="holds a store with its own copy"):
        ingest_in_place(str(moved), str(tmp_path / "copy"), MODEL)


def test_docs_show_every_key_an_in_place_store_writes(tmp_path):
    from manifest_cases import doc_block, key_paths, spec_id

    src, _, _ = laion_folder(tmp_path)
    written = ingest_in_place(src, str(tmp_path / "store"), MODEL, str(tmp_path / "images"))
    example = doc_block('"in_place"')
    _manifests.validate(example, _manifests.STORE, "react-index", "docs/manifests.md in-place store example")
    assert example["id"] == spec_id(example)
    assert key_paths(written) - key_paths(example) == set()


def test_npy_headers_are_parsed_one_thread_at_a_time(tmp_path, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
    (python/cpython#106905: a sporadic SystemError seen here when checking parts in place): parsing holds a lock."""
    from react_index import store as store_module

    np.save(tmp_path / "a.npy", np.zeros((3, 4), np.float16))
    real = np.lib.format.read_array_header_1_0
    held = []

    def spy(f, *args, **kwargs):
        held.append(store_module.NPY_HEADER_LOCK.locked())
        return real(f, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "read_array_header_1_0", spy)
    with open(tmp_path / "a.npy", "rb") as f:
        assert store_module._npy_header(f, "a.npy")[0] == (3, 4)
    assert held == [True]

"""Honest answers (issue 11): react-index never returns a silently wrong result. Every user mistake is one line
naming the file or option and the fix; every bug keeps its traceback."""

import base64
import io
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from clustered import clustered, write_clip_retrieval_layout
from manifest_cases import doc_examples, key_paths, retrieval_rows, write_retrieval_fixture
from stores import MODEL, make_store

from react_index import _manifests
from react_index._imagerows import UrlOnlyRow, read_row_image
from react_index.build import build_index
from react_index.cli import main
from react_index.domain import TargetClass
from react_index.inspect_html import inspect, thumbnail
from react_index.precomputed import ingest_precomputed, precomputed_shards
from react_index.query import Selection, retrieve
from react_index.sources import SourceError
from react_index.store import open_store


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 600-row store (image + text, 16-d) with a Flat index, 3 class names and 3 ready query vectors."""
    root = tmp_path_factory.mktemp("small")
    store, _, text = make_store(root, 600, 16, 200, n_clusters=20)
    build_index(str(store), str(root / "index"), queries=20)
    np.save(root / "q.npy", text[:3].astype(np.float32))
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed writer)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _normalized(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _captions(store_dir) -> list[str]:
    store = open_store(str(store_dir))
    return [c for i in range(len(store.manifest["shards"]))
            for c in store.metadata(i, ["caption"])["caption"].to_pylist()]


# --- item 4: LAION's image_path is a locator only where the file is ---------------------------------------------

def test_laion_image_path_is_a_locator_only_where_its_file_is(tmp_path):
    image, text = clustered(4, 8, n_clusters=2)
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image, text, rows_per_file=4)
    images = tmp_path / "images" / "00000"
    images.mkdir(parents=True)
    (images / "000000001.jpg").write_bytes(b"jpeg 1")  # img2dataset's key + extension
    (images / "000000002").write_bytes(b"file 2")
    absolute = tmp_path / "elsewhere.jpg"
    absolute.write_bytes(b"file 3")
    web = tmp_path / "web"  # where the images came from
    paths = ["00000/000000000", "00000/000000001", "00000/000000002", str(absolute)]
    meta = pq.read_table(f"{src}/metadata/metadata_0.parquet").drop_columns(["url"])
    meta = meta.append_column("url", pa.array([f"file://{web}/{i}.jpg" for i in range(4)]))
    pq.write_table(meta.append_column("image_path", pa.array(paths)), f"{src}/metadata/metadata_0.parquet")
    runner = CliRunner()
    model = ["--model", "ViT-B-32", "--pretrained", "laion400m_e32"]

    out = runner.invoke(main, ["embed", src, "--out", str(tmp_path / "s1"), *model])
    assert out.exit_code == 0, out.output
    rows = pq.read_table(tmp_path / "s1" / "metadata" / "metadata_0.parquet").to_pylist()
    assert [r["image_uri"] for r in rows] == [None, None, None, str(absolute)]  # someone else's paths: metadata only
    assert [r["url"] for r in rows] == [f"file://{web}/{i}.jpg" for i in range(4)]
    assert [json.loads(r["json"])["image_path"] for r in rows] == paths  # the original stays visible

    out = runner.invoke(main, ["embed", src, "--out", str(tmp_path / "s2"), "--images-root",
                               str(tmp_path / "images"), *model])
    assert out.exit_code == 0, out.output
    rows = pq.read_table(tmp_path / "s2" / "metadata" / "metadata_0.parquet").to_pylist()
    assert [r["image_uri"] for r in rows] == [None, str(images / "000000001.jpg"), str(images / "000000002"),
                                              str(absolute)]

    # the retrieval set's rows are URL-only, so readers fetch their URL instead of failing on a foreign path
    build_index(str(tmp_path / "s1"), str(tmp_path / "index"), queries=2)
    np.save(tmp_path / "q.npy", image[:1].astype(np.float32))
    retrieve(str(tmp_path / "index"), [TargetClass("x")], out=str(tmp_path / "set.parquet"), templates=[], mode="t2i",
             selection=Selection(k=4),
             query_embeddings=str(tmp_path / "q.npy"))
    rows = sorted(pq.read_table(tmp_path / "set.parquet").to_pylist(), key=lambda r: r["sample_id"])
    assert [(r["image_uri"], r["url"]) for r in rows] == [(None, f"file://{web}/{i}.jpg") for i in range(3)] + [
        (str(absolute), f"file://{web}/3.jpg")]
    for row in rows[:3]:  # the reader react-tune trains with: "download first", not a missing file
        with pytest.raises(UrlOnlyRow, match="known only by its URL"):
            read_row_image(row)
    assert read_row_image(rows[3]) == b"file 3"


# --- item 5: the row order of a precomputed folder is the ecosystem's ------------------------------------------

def test_precomputed_rows_are_in_the_order_embedding_reader_reads_them(tmp_path):
    from embedding_reader import EmbeddingReader  # what autofaiss and clip-retrieval read folders with

    image, text = clustered(420, 8, n_clusters=12)
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image, text, rows_per_file=35)  # 12 parts
    manifest = ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    assert manifest["shard_order"] == "path-text"
    assert [s["name"] for s in manifest["shards"]] == ["0", "1", "10", "11", *map(str, range(2, 10))]

    reader = EmbeddingReader(f"{src}/img_emb", file_format="parquet_npy", metadata_folder=f"{src}/metadata",
                             meta_columns=["caption"])
    theirs, their_captions = [], []
    for vectors, meta in reader(batch_size=1_000, show_progress=False):
        theirs.append(vectors)
        their_captions += meta["caption"].tolist()
    assert _captions(tmp_path / "store") == their_captions  # row i is the same sample in both: all 420 ids agree
    ours = np.concatenate([c for _, c in open_store(str(tmp_path / "store")).iter_chunks("image")])
    assert np.abs(ours - _normalized(np.concatenate(theirs))).max() < 2e-3

    (tmp_path / "laion" / "img_emb" / "extra").mkdir()
    np.save(tmp_path / "laion" / "img_emb" / "extra" / "more.npy", image[:2])
    with pytest.raises(SourceError, match=r"img_emb: holds .npy files not named img_emb_\{i\}.npy .*more.npy"):
        precomputed_shards(src)


# --- item 6: the docs' examples show exactly what the writers write ----------------------------------------------

def _required(spec, prefix="") -> set[str]:
    out = set()
    if isinstance(spec, dict):
        for key, sub in spec.items():
            if key.endswith("?"):
                continue
            path = f"{prefix}.{key}" if prefix else key
            out |= {path} | _required(sub, path)
    elif isinstance(spec, list):
        out |= _required(spec[0], prefix + "[]")
    return out


def test_docs_examples_hold_every_key_the_writers_write(small, tmp_path):
    retrieve(str(small / "index"), [TargetClass(c) for c in "abc"], out=str(tmp_path / "set.parquet"), templates=[],
             mode="t2i",
             selection=Selection(k=5), query_embeddings=str(small / "q.npy"))
    written = {_manifests.STORE: json.loads((small / "store" / "manifest.json").read_text()),
               _manifests.INDEX: json.loads((small / "index" / "manifest.json").read_text()),
               _manifests.RETRIEVAL: json.loads((tmp_path / "set.parquet.json").read_text())}
    assert set(written[_manifests.INDEX]["indexes"]) == {"image", "text"}
    examples = doc_examples()
    for kind, doc in written.items():
        shown = key_paths(examples[kind])
        assert key_paths(doc) - shown == set(), f"docs/manifests.md's {kind} example lacks keys the writer writes"
        required = _required(_manifests.ENVELOPE | _manifests.SPECS[kind])
        assert {p for p in shown if p in required} - key_paths(doc) == set()
        assert {p for p in required if not p.startswith("lineage[].")} <= shown  # lineage may be empty ([])


# --- item 8: a model nobody named ------------------------------------------------------------------------------

def test_precomputed_embeddings_record_the_model_as_given_or_unknown(small, tmp_path, caplog):
    image, text = clustered(300, 16, n_clusters=10)
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image, text, rows_per_file=300)
    runner = CliRunner()
    with caplog.at_level(logging.WARNING, logger="react_index"):
        out = runner.invoke(main, ["build", src, "--out", str(tmp_path / "index"), "--queries", "20"])
    assert out.exit_code == 0, out.output
    store = json.loads((tmp_path / "index" / "store" / "manifest.json").read_text())
    assert store["model"] == {"name": "unknown", "pretrained": "unknown", "pretrained_sha256": None}
    assert "--model and --pretrained not given" in caplog.text

    out = runner.invoke(main, ["query", "--index", str(tmp_path / "index"), "--classes", str(small / "classes.txt"),
                               "--out", str(tmp_path / "set.parquet")])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit)
    assert "nobody named the model" in out.output and "--model NAME --pretrained TAG|FILE" in out.output
    assert "--query-embeddings FILE.npy" in out.output and not (tmp_path / "set.parquet").exists()

    out = runner.invoke(main, ["embed", src, "--out", str(tmp_path / "s2"), "--model", "ViT-L-14"])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "s2" / "manifest.json").read_text())["model"]["name"] == "ViT-L-14"
    out = runner.invoke(main, ["embed", src, "--out", str(tmp_path / "s3"), "--model", "ViT-L-14",
                               "--pretrained", "laion2b_s32b_b82k"])
    assert json.loads((tmp_path / "s3" / "manifest.json").read_text())["model"] == {
        "name": "ViT-L-14", "pretrained": "laion2b_s32b_b82k", "pretrained_sha256": None}


# --- battery ---------------------------------------------------------------------------------------------------

def test_a_store_with_a_broken_manifest_is_an_error_not_a_corpus(small, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small / "store", store)
    text = (store / "manifest.json").read_text()
    (store / "manifest.json").write_text(text[: len(text) // 2])  # truncated
    runner = CliRunner()
    out = runner.invoke(main, ["build", str(store), "--out", str(tmp_path / "idx")])
    assert out.exit_code == 1 and f"{store}/manifest.json: not valid JSON" in out.output
    assert not (tmp_path / "idx").exists()  # never re-ingested as precomputed embeddings

    (store / "manifest.json").write_text(json.dumps({"kind": "react.index", "version": 1}))
    out = runner.invoke(main, ["build", str(store), "--out", str(tmp_path / "idx")])
    assert out.exit_code == 1 and "field 'kind' is 'react.index', expected 'react.embedding-store'" in out.output

    (store / "manifest.json").unlink()  # an embed that never finished
    out = runner.invoke(main, ["build", str(store), "--out", str(tmp_path / "idx")])
    assert out.exit_code == 1 and "manifest.json was never written" in out.output
    assert not (tmp_path / "idx").exists()


def test_nan_and_inf_rows_are_skipped_and_counted_with_their_metadata(tmp_path):
    image, text = (x.astype(np.float32) for x in clustered(300, 16, n_clusters=10))
    image[3, 5] = np.nan
    text[250, 0] = np.inf
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image, text, rows_per_file=200)
    manifest = ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    assert manifest["counts"] == {"samples": 298, "skipped": {"nan_embedding": 2}}
    assert [s["skipped"] for s in manifest["shards"]] == [{"nan_embedding": 1}, {"nan_embedding": 1}]
    keep = np.ones(300, bool)
    keep[[3, 250]] = False
    assert _captions(tmp_path / "store") == [f"caption {j}" for j in np.flatnonzero(keep)]  # still aligned
    store = open_store(str(tmp_path / "store"))
    for modality, x in (("image", image), ("text", text)):
        ours = np.concatenate([c for _, c in store.iter_chunks(modality)])
        assert np.isfinite(ours).all() and np.abs(ours - _normalized(x[keep])).max() < 2e-3


def test_text_and_image_embeddings_of_different_widths_are_refused_at_ingest(tmp_path):
    image, _ = clustered(100, 32, n_clusters=5)
    _, text = clustered(100, 16, n_clusters=5)
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image, text, rows_per_file=100)
    with pytest.raises(SourceError, match=r"text_emb_0.npy holds 16-wide embeddings but .*img_emb_0.npy holds "
                                          r"32-wide ones"):
        ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_16_bit_images_are_thumbnailed_in_their_own_tones():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), 20_000, np.uint16)).save(buf, format="PNG")  # 16-bit greyscale
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    jpeg = base64.b64decode(thumbnail(buf.getvalue()).split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), np.float64)
    assert abs(pixels.mean() - 20_000 / 257) < 3  # mid grey, not clipped to white


def test_option_values_that_cannot_work_are_refused_by_name(small, tmp_path):
    store, index, classes = str(small / "store"), str(small / "index"), str(small / "classes.txt")
    query = ["query", "--index", index, "--classes", classes, "--query-embeddings", str(small / "q.npy"),
             "--out", str(tmp_path / "set.parquet")]
    cases = [
        (["build", store, "--out", str(tmp_path / "x"), "--max-memory", "1K"],
         "--max-memory 1.0 KiB is too small for 600 vectors of width 16: they need 37.5 KiB"),
        (["build", store, "--out", str(tmp_path / "x"), "--max-memory", "lots"],
         "--max-memory: cannot read memory size 'lots'"),
        (["build", store, "--out", str(tmp_path / "x"), "--queries", "0"], "--queries must be at least 1"),
        (["build", store, "--out", str(tmp_path / "x"), "--index-key", "NoSuchIndex"], "--index-key 'NoSuchIndex'"),
        ([*query, "--budget", "-3"], "--budget must be at least 1"),
        ([*query, "--k", "0"], "--k must be at least 1"),
        ([*query, "--mode", "i2i"], "--mode i2i needs --examples DIR"),
        ([*query, "--examples", str(tmp_path)], "--examples is used by --mode i2i and fusion only"),
    ]
    runner = CliRunner()
    for args, message in cases:
        out = runner.invoke(main, args)
        assert out.exit_code == 1 and isinstance(out.exception, SystemExit), (args, out.output, out.exception)
        assert message in out.output and "Traceback" not in out.output, (args, out.output)
    assert not (tmp_path / "x").exists() and not (tmp_path / "set.parquet").exists()
    with pytest.raises(_manifests.UserError, match="--budget must be at least 1"):
        Selection(budget=0)


def test_inspect_of_a_set_whose_scores_are_all_equal(tmp_path):
    table = retrieval_rows(6)
    table = table.set_column(table.schema.get_field_index("score"), "score", pa.array([0.7] * 6, pa.float32()))
    rows = write_retrieval_fixture(tmp_path / "equal", table)
    stats = inspect(str(rows), str(tmp_path / "r.html"))
    assert stats["counts_per_class"] == [3, 3]
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg class=\"hist\"") == 2 and page.count("<rect") == 40


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(small, tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f"set.parquet.tmp-{dead}-abcd", tmp_path / f"set.parquet.tmp-{dead}"]  # new and old names
    live = tmp_path / f"set.parquet.tmp-{os.getpid()}-live"  # a writer still running keeps its file
    for p in [*stale, live]:
        p.write_bytes(b"half a parquet")
    out = CliRunner().invoke(main, ["query", "--index", str(small / "index"), "--classes", str(small / "classes.txt"),
                                    "--query-embeddings", str(small / "q.npy"), "--k", "5",
                                    "--out", str(tmp_path / "set.parquet")])
    assert out.exit_code == 0, out.output
    assert not any(p.exists() for p in stale) and live.exists()

    index = tmp_path / "index"
    index.mkdir()
    leftovers = [index / f"image.index.tmp-{dead}-x", index / f"text.queries.npy.tmp-{dead}-y"]
    for p in leftovers:
        p.write_bytes(b"")
    build_index(str(small / "store"), str(index), queries=10)
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in index.iterdir() if ".tmp-" in p.name) == []


# --- one error policy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bug", [KeyError("shards"), ValueError("an internal invariant broke")])
def test_a_bug_keeps_its_traceback(small, monkeypatch, bug):
    import react_index.info

    def broken(path):
        raise bug

    monkeypatch.setattr(react_index.info, "describe", broken)
    out = CliRunner().invoke(main, ["info", str(small / "index")])
    assert out.exception is bug  # not turned into a one-line "Error: ..."


def test_a_user_mistake_is_one_line_naming_the_file(tmp_path):
    out = CliRunner().invoke(main, ["info", str(tmp_path / "nowhere")])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit)
    assert out.output == f"Error: {tmp_path}/nowhere/manifest.json: no such manifest file\n"
    (tmp_path / "q.npy").write_text("not numpy")
    out = CliRunner().invoke(main, ["info", str(tmp_path / "q.npy")])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit)
    assert f"{tmp_path}/q.npy: not something react-index describes; pass a store or index folder" in out.output
    out = CliRunner().invoke(main, ["query", "--index", str(tmp_path), "--classes", "pets", "--query-embeddings",
                                    str(tmp_path / "q.npy"), "--out", str(tmp_path / "set.parquet")])
    assert out.exit_code == 1 and out.output.startswith(f"Error: {tmp_path}/manifest.json: no such manifest file")


def test_missing_clip_extra_says_what_to_install_or_which_option_avoids_it(small, tmp_path, monkeypatch):
    """In the torch-free install (where CI runs this file) the modules are really absent; elsewhere they are
    hidden, so the test checks the same thing in both."""
    monkeypatch.delitem(sys.modules, "react_index.clip_embed", raising=False)
    for name in ("torch", "open_clip"):
        monkeypatch.setitem(sys.modules, name, None)
    runner = CliRunner()
    out = runner.invoke(main, ["query", "--index", str(small / "index"), "--classes", str(small / "classes.txt"),
                               "--out", str(tmp_path / "set.parquet")])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.exception
    assert "pip install 'react-index[clip]'" in out.output and "--query-embeddings FILE.npy" in out.output
    (tmp_path / "a.tar").write_bytes(b"")
    out = runner.invoke(main, ["embed", str(tmp_path / "a.tar"), "--out", str(tmp_path / "store")])
    assert out.exit_code == 1 and "pip install 'react-index[clip]'" in out.output
    assert "precomputed embeddings" in out.output

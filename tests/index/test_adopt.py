"""`react-index adopt` (issue 12) with indexes built by real autofaiss, in its own venv (bench-out/venvs/autofaiss,
created by the first run, shared with the benchmarks), over a LAION-layout folder of 12 parts: autofaiss reads them
in text order (img_emb_0, img_emb_1, img_emb_10, …), so an id mapping by numeric order would name wrong rows."""

import fcntl
import json
import re
import shutil
import subprocess

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from bench_p1_build import AUTOFAISS
from click.testing import CliRunner
from clustered import clustered, write_clip_retrieval_layout
from manifest_cases import doc_block, key_paths, spec_id

from react_index import _manifests
from react_index.adopt import adopt
from react_index.cli import main
from react_index.domain import TargetClass
from react_index.manifest import INDEX, read_manifest
from react_index.query import Selection, retrieve
from react_index.store import ChangedFileError

PARTS, ROWS, DIM = 12, 60, 32
MODEL = {"name": "ViT-B-32", "pretrained": "laion400m_e32", "pretrained_sha256": None}


@pytest.fixture(scope="module")
def autofaiss():
    """The autofaiss console script of its own venv (created once, ≈ 16 s; later runs reuse it)."""
    from benchlib import VENVS, peer_venv

    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / "autofaiss.lock", "w") as lock:  # pytest-xdist workers: one creates it, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        venv = peer_venv("autofaiss", AUTOFAISS)
    return str(venv / "bin" / "autofaiss")


def run_autofaiss(autofaiss: str, embeddings, out, key: str) -> tuple[str, str]:
    """autofaiss build_index as its users run it; returns (index file, infos file)."""
    index, infos = f"{out}/knn.index", f"{out}/index_infos.json"
    done = subprocess.run([autofaiss, "build_index", f"--embeddings={embeddings}", f"--index_path={index}",
                           f"--index_infos_path={infos}", "--metric_type=ip", f'--index_key="{key}"',
                           "--max_index_memory_usage=1G", "--current_memory_available=2G"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return index, infos


@pytest.fixture(scope="module")
def laion(tmp_path_factory, autofaiss):
    """12 parts of 60 rows (captions and urls name each row's numeric position), an IVF image index and an HNSW
    text index built by autofaiss over them."""
    root = tmp_path_factory.mktemp("laion")
    image, text = clustered(PARTS * ROWS, DIM, n_clusters=30)
    src = write_clip_retrieval_layout(str(root / "laion"), image, text, rows_per_file=ROWS)
    image_index = run_autofaiss(autofaiss, f"{src}/img_emb", root / "knn-image", "IVF8,Flat")
    text_index = run_autofaiss(autofaiss, f"{src}/text_emb", root / "knn-text", "HNSW16")
    return {"root": root, "src": src, "image": image, "text": text, "image_index": image_index,
            "text_index": text_index}


def text_order_rows() -> np.ndarray:
    """The folder's numeric row of each row id, as autofaiss numbers them (parts sorted as text)."""
    names = sorted(f"img_emb_{i}.npy" for i in range(PARTS))
    return np.concatenate([int(n[8:-4]) * ROWS + np.arange(ROWS) for n in names])


def independent_recall(index_file: str, entry: dict, index_dir, vectors: np.ndarray, queries_from: np.ndarray):
    """Recall@k of the manifest's entry re-measured with plain faiss + numpy from the saved query ids."""
    index = faiss.read_index(index_file)
    for name, value in entry["search_params"].items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    order = text_order_rows()
    base = vectors[order].astype(np.float32)
    ids = np.load(index_dir / entry["measured"]["query_ids"])
    queries = queries_from[order][ids].astype(np.float32)
    k = entry["measured"]["k"]
    exact = queries @ base.T
    if entry["measured"]["excludes_self"]:
        exact[np.arange(len(ids)), ids] = -np.inf
    kth = -np.sort(-exact, axis=1)[:, k - 1]
    _, found = index.search(queries, k + 1)
    if entry["measured"]["excludes_self"]:
        found = np.stack([row[row != i][:k] for row, i in zip(found, ids, strict=True)])
    found = found[:, :k]
    scores = np.take_along_axis(exact, np.where(found >= 0, found, 0), axis=1)
    return float(((found >= 0) & (scores >= kth[:, None] - 1e-5)).mean())


def _retrieve_own_rows(index_dir, vectors: np.ndarray, rows: np.ndarray, tmp_path) -> list[dict]:
    """Query the adopted index with the folder's own vectors of `rows` (numeric positions), k = 1."""
    np.save(tmp_path / "q.npy", vectors[rows].astype(np.float32))
    classes = [TargetClass(f"row {r}") for r in rows]
    retrieve(str(index_dir), classes, out=str(tmp_path / "own.parquet"), templates=[], mode="t2i",
             selection=Selection(k=1),
             query_embeddings=str(tmp_path / "q.npy"))
    return sorted(pq.read_table(tmp_path / "own.parquet").to_pylist(), key=lambda r: r["class_index"])


def test_an_autofaiss_index_is_adopted_with_ids_on_the_right_rows(laion, tmp_path):
    index_file, infos = laion["image_index"]
    out = CliRunner().invoke(main, ["adopt", "--embeddings", laion["src"], "--index", index_file, "--infos", infos,
                                    "--out", str(tmp_path / "idx"), "--model", "ViT-B-32", "--pretrained",
                                    "laion400m_e32", "--queries", "100"])
    assert out.exit_code == 0, out.output
    manifest = read_manifest(str(tmp_path / "idx" / "manifest.json"), INDEX)
    entry = manifest["indexes"]["image"]
    assert entry["file"] == index_file and entry["index_key"] == "IVF8,Flat" and entry["ntotal"] == PARTS * ROWS
    assert entry["mmap"] is True and entry["adopted"]["index_param"] == json.loads(open(infos).read())["index_param"]
    assert entry["adopted"]["self_found"] == 1.0 and manifest["model"]["pretrained"] == "laion400m_e32"
    store = json.loads((tmp_path / "idx" / "store" / "manifest.json").read_text())
    assert "in_place" in store and not (tmp_path / "idx" / "store" / "img_emb").exists()  # nothing copied
    assert manifest["lineage"][0]["id"] == store["id"]
    info = CliRunner().invoke(main, ["info", str(tmp_path / "idx")]).output
    assert f"adopted {index_file} (memory-mapped)" in info and "100% of stored vectors find themselves" in info

    # every part, parts 10 and 11 included: the folder's own vector finds its own row's caption and url
    rows = np.arange(3, PARTS * ROWS, 11)
    found = _retrieve_own_rows(tmp_path / "idx", laion["image"], rows, tmp_path)
    assert [r["caption"] for r in found] == [f"caption {r}" for r in rows]
    assert [r["url"] for r in found] == [f"https://x.invalid/{r}.jpg" for r in rows]
    assert [r["sample_id"] for r in found] == [int(np.flatnonzero(text_order_rows() == r)[0]) for r in rows]
    assert min(r["score"] for r in found) > 0.999

    # the recorded recall is measured here, against exact search: plain faiss + numpy agree with it
    assert entry["measured"]["query_modality"] == "text" and entry["measured"]["queries"] == 100
    assert entry["measured"]["recall"] == pytest.approx(
        independent_recall(index_file, entry, tmp_path / "idx", laion["image"], laion["text"]), abs=1e-6)
    assert entry["measured"]["recall"] >= 0.95 and entry["measured"]["qps"] > 0  # tuned to the target


def test_the_infos_search_parameters_are_kept_and_measured(laion, tmp_path):
    index_file, infos = laion["image_index"]
    doc = json.loads(open(infos).read())
    low = tmp_path / "infos.json"
    low.write_text(json.dumps(doc | {"index_param": "nprobe=1"}))  # fewer lists than autofaiss chose
    adopted = {}
    for name, infos_file in (("as-built", infos), ("nprobe1", str(low))):
        adopted[name] = adopt(laion["src"], index_file, out=str(tmp_path / name), infos=infos_file,
                              search_params="infos",
                              model=MODEL, queries=100)["indexes"]["image"]
    assert adopted["nprobe1"]["search_params"] == {"nprobe": 1}
    assert adopted["as-built"]["search_params"] == {"nprobe": int(doc["index_param"].split("=")[1])}
    for name, entry in adopted.items():
        again = independent_recall(index_file, entry, tmp_path / name, laion["image"], laion["text"])
        assert entry["measured"]["recall"] == pytest.approx(again, abs=1e-6)
        assert entry["adopted"]["index_param_recall"] == entry["measured"]["recall"]
    assert adopted["nprobe1"]["measured"]["recall"] < adopted["as-built"]["measured"]["recall"]


def test_a_text_index_is_adopted_with_modality_text(laion, tmp_path):
    index_file, infos = laion["text_index"]
    manifest = adopt(laion["src"], index_file, out=str(tmp_path / "idx"), infos=infos, modality="text", model=MODEL,
                     queries=50)
    entry = manifest["indexes"]["text"]
    assert set(manifest["indexes"]) == {"text"} and entry["index_key"] == "HNSW16"
    assert entry["measured"]["query_modality"] == "text" and entry["measured"]["excludes_self"] is True
    assert entry["measured"]["recall"] == pytest.approx(
        independent_recall(index_file, entry, tmp_path / "idx", laion["text"], laion["text"]), abs=1e-6)
    rows = np.arange(5, PARTS * ROWS, 37)
    np.save(tmp_path / "q.npy", laion["text"][rows].astype(np.float32))
    retrieve(str(tmp_path / "idx"), [TargetClass(f"row {r}") for r in rows], out=str(tmp_path / "t.parquet"),
             templates=[],
             mode="t2t", selection=Selection(k=1), query_embeddings=str(tmp_path / "q.npy"))
    found = sorted(pq.read_table(tmp_path / "t.parquet").to_pylist(), key=lambda r: r["class_index"])
    assert [r["caption"] for r in found] == [f"caption {r}" for r in rows]


def test_an_index_that_does_not_match_the_folder_is_refused(laion, tmp_path):
    image = laion["image"].astype(np.float32)
    numeric = faiss.index_factory(DIM, "IVF8,Flat", faiss.METRIC_INNER_PRODUCT)  # parts read in numeric order
    numeric.train(image)
    numeric.add(image)
    faiss.write_index(numeric, str(tmp_path / "numeric.index"))
    with pytest.raises(_manifests.UserError, match=r"numeric.index: only \d+% of \d+ stored vectors .* find "
                                                   r"themselves .*paths sorted as text"):
        adopt(laion["src"], str(tmp_path / "numeric.index"), out=str(tmp_path / "a"), model=MODEL, queries=20)
    assert not (tmp_path / "a" / "manifest.json").exists()

    subset = faiss.IndexFlatIP(DIM)
    subset.add(image[: 11 * ROWS])
    faiss.write_index(subset, str(tmp_path / "subset.index"))
    out = CliRunner().invoke(main, ["adopt", "--embeddings", laion["src"], "--index", str(tmp_path / "subset.index"),
                                    "--out", str(tmp_path / "b")])
    assert out.exit_code == 1 and "subset.index: holds 660 vectors but the image parts" in out.output
    l2 = faiss.IndexFlatL2(DIM)
    l2.add(image)
    faiss.write_index(l2, str(tmp_path / "l2.index"))
    with pytest.raises(_manifests.UserError, match="not inner product.*--metric_type ip"):
        adopt(laion["src"], str(tmp_path / "l2.index"), out=str(tmp_path / "c"), model=MODEL)


def test_a_changed_index_file_is_refused_by_query(laion, tmp_path):
    index_file = tmp_path / "knn.index"
    shutil.copy(laion["image_index"][0], index_file)
    adopt(laion["src"], str(index_file), out=str(tmp_path / "idx"), model=MODEL, queries=20, mmap=False)
    assert read_manifest(str(tmp_path / "idx" / "manifest.json"), INDEX)["indexes"]["image"]["mmap"] is False
    np.save(tmp_path / "q.npy", laion["text"][:2].astype(np.float32))
    (tmp_path / "classes.txt").write_text("a\nb\n")
    query = ["query", "--index", str(tmp_path / "idx"), "--classes", str(tmp_path / "classes.txt"),
             "--query-embeddings", str(tmp_path / "q.npy"), "--out", str(tmp_path / "set.parquet")]
    assert CliRunner().invoke(main, query).exit_code == 0
    with open(index_file, "ab") as f:
        f.write(b"\0")
    out = CliRunner().invoke(main, query)
    assert out.exit_code == 1 and f"{index_file}: changed since the index folder" in out.output
    assert "Adopt the index again" in out.output
    index_file.unlink()
    with pytest.raises(ChangedFileError, match=re.escape(f"{index_file}: missing")):
        retrieve(str(tmp_path / "idx"), [TargetClass("a"), TargetClass("b")], out=str(tmp_path / "s2.parquet"),
                 templates=[],
                 query_embeddings=str(tmp_path / "q.npy"))


def test_docs_show_every_key_an_adopted_index_writes(laion, tmp_path):
    index_file, infos = laion["image_index"]
    written = adopt(laion["src"], index_file, out=str(tmp_path / "idx"), infos=infos, model=MODEL, queries=20)
    example = doc_block('"adopted"')
    _manifests.validate(example, _manifests.INDEX, "react-index", "docs/manifests.md adopted index example")
    assert example["id"] == spec_id(example)
    assert key_paths(written) - key_paths(example) == set()

import numpy as np
import pyarrow.parquet as pq
import pytest
from clustered import clustered, write_clip_retrieval_layout
from stores import MODEL

from react_index.precomputed import ingest_precomputed
from react_index.sources import SourceError
from react_index.store import open_store


def test_ingest_keeps_vectors_and_maps_metadata(tmp_path):
    image, text = clustered(1_000, 32, n_clusters=20)
    src = write_clip_retrieval_layout(str(tmp_path / "laion"), image * 3, text, rows_per_file=400)  # not unit norm
    manifest = ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    assert manifest["counts"] == {"samples": 1000, "skipped": {}} and manifest["dim"] == 32
    assert [s["name"] for s in manifest["shards"]] == ["0", "1", "2"] and manifest["modalities"] == ["image", "text"]
    store = open_store(str(tmp_path / "store"))
    got = np.concatenate([c for _, c in store.iter_chunks("image", 300)])
    want = image.astype(np.float32) / np.linalg.norm(image.astype(np.float32), axis=1, keepdims=True)
    assert got.dtype == np.float32 and np.abs(got - want).max() < 2e-3  # float16 storage
    assert np.array_equal(store.rows("text", np.array([999, 0, 401])), store.rows("text", [999, 0, 401]))
    assert np.array_equal(store.rows("image", [401])[0], got[401])
    meta = store.metadata(1).to_pylist()
    assert meta[0]["caption"] == "caption 400" and meta[0]["url"].endswith("/400.jpg")
    assert meta[0]["key"] == "1_000000000"
    assert meta[0]["source"].endswith("metadata_1.parquet") and meta[0]["source_row"] == 0


def test_rerun_skips_finished_shards(tmp_path):
    image, text = clustered(600, 16, n_clusters=10)
    src = write_clip_retrieval_layout(str(tmp_path / "src"), image, text, rows_per_file=200)
    first = ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    shard = tmp_path / "store" / "img_emb" / "img_emb_0.npy"
    before = shard.stat().st_mtime_ns
    assert ingest_precomputed(src, str(tmp_path / "store"), MODEL)["id"] == first["id"]
    assert shard.stat().st_mtime_ns == before


def test_text_embeddings_are_optional_and_mismatches_are_named(tmp_path):
    image, _ = clustered(300, 16, n_clusters=10)
    src = write_clip_retrieval_layout(str(tmp_path / "img_only"), image, None, rows_per_file=300)
    assert ingest_precomputed(src, str(tmp_path / "s1"), MODEL)["modalities"] == ["image"]
    meta = tmp_path / "img_only" / "metadata" / "metadata_0.parquet"
    pq.write_table(pq.read_table(meta).slice(0, 299), meta)
    with pytest.raises(SourceError, match=r"shard 0: image embeddings have shape \(300, 16\) but .*metadata_0.parquet "
                                          r"has 299 rows"):
        ingest_precomputed(src, str(tmp_path / "s2"), MODEL)


def test_large_files_are_read_in_chunks_and_truncation_is_named(tmp_path):
    from react_index.store import iter_npy

    x = np.arange(70_000 * 4, dtype=np.float16).reshape(70_000, 4)
    np.save(tmp_path / "a.npy", x)
    pieces = list(iter_npy(str(tmp_path / "a.npy"), 30_000))
    assert [lo for lo, _ in pieces] == [0, 30_000, 60_000] and np.array_equal(np.concatenate([p for _, p in pieces]), x)
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "b.npy").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"b.npy: file ends early \(truncated .npy\)"):
        list(iter_npy(str(tmp_path / "b.npy"), 30_000))

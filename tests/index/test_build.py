import json
import shutil

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from react_index.build import build_index
from react_index.cli import main
from react_index.indexkey import choose_index_key, estimate_memory, parse_memory, training_size
from react_index.manifest import INDEX, read_manifest
from react_index.store import open_store

GIB = 2**30


def test_index_choice_follows_the_guidelines_and_the_budget():
    assert choose_index_key(500, 512, 4 * GIB) == "Flat"
    assert choose_index_key(5_000, 512, 4 * GIB) == "HNSW32"
    assert choose_index_key(50_000, 512, 4 * GIB) == "IVF1024,Flat"
    assert choose_index_key(100_000, 512, 4 * GIB) == "IVF1024,SQ8"
    assert choose_index_key(1_000_000, 512, 4 * GIB) == "IVF4096,SQ8"
    # Compressed indexes: as many lists as the guidelines want, but never more than the training sample that fits
    # a quarter of the budget can train with 39 points each (400M / 4 / 2 KB = 51,200 points -> 1,024 lists)
    assert choose_index_key(1_000_000, 512, 400 * 2**20) == "IVF1024,SQ4"  # SQ8 (520 MB) does not fit 320 MB
    assert choose_index_key(1_000_000, 512, 250 * 2**20) == "OPQ64_256,IVF512,PQ64x8"  # nor SQ4 (264 MB) 200 MB
    assert choose_index_key(10_000_000, 512, 4 * GIB) == "IVF8192,SQ4"  # 16,384 lists would train on 32 points each
    assert choose_index_key(10_000_000, 512, 8 * GIB) == "IVF16384_HNSW32,SQ8"
    assert choose_index_key(400_000_000, 512, 64 * GIB) == "OPQ64_256,IVF131072_HNSW32,PQ64x8"  # LAION-400M
    for n, budget in ((10**7, 4 * GIB), (10**8, 4 * GIB), (10**8, 16 * GIB), (4 * 10**8, 64 * GIB)):
        key = choose_index_key(n, 512, budget)
        lists = int(key.split("IVF")[1].split("_")[0].split(",")[0])
        assert training_size(key, n, 512, budget) >= 39 * lists, key
        assert estimate_memory(key, n, 512) <= 0.8 * budget
    with pytest.raises(ValueError, match="no index fits 4.00 GiB for 400,000,000 vectors"):
        choose_index_key(400_000_000, 512, 4 * GIB)
    assert parse_memory("4G") == 4 * GIB and parse_memory("512m") == 512 * 2**20 and parse_memory("1.5GB") == 1.5 * GIB
    with pytest.raises(ValueError, match="cannot read memory size"):
        parse_memory("lots")


def _independent_recall(index_dir, store_dir, modality):
    """Re-measure a manifest's recall with plain faiss + numpy, from the saved query ids."""
    entry = read_manifest(str(index_dir / "manifest.json"), INDEX)["indexes"][modality]
    measured = entry["measured"]
    index = faiss.read_index(str(index_dir / entry["file"]))
    for name, value in entry["search_params"].items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    store = open_store(str(store_dir))
    base = np.concatenate([c for _, c in store.iter_chunks(modality)])
    ids = np.load(index_dir / measured["query_ids"])
    queries = np.concatenate([c for _, c in store.iter_chunks(measured["query_modality"])])[ids]
    k = measured["k"]
    exact = queries @ base.T
    if measured["excludes_self"]:
        exact[np.arange(len(ids)), ids] = -np.inf
    kth = -np.sort(-exact, axis=1)[:, k - 1]
    _, found = index.search(queries, k + 1)
    if measured["excludes_self"]:
        found = np.stack([row[row != i][:k] for row, i in zip(found, ids, strict=True)])
    found = found[:, :k]
    hits = np.take_along_axis(exact, found, axis=1) >= kth[:, None] - 1e-5
    return hits.mean(), entry


@pytest.mark.parametrize("modality", ["image", "text"])
def test_built_index_loads_in_plain_faiss_and_its_recall_figure_reproduces(store_20k, tmp_path_factory, modality):
    store_dir, _, _ = store_20k
    out = tmp_path_factory.mktemp("idx")
    manifest = build_index(str(store_dir), str(out), max_memory="4G", target_recall=0.95, queries=300)
    assert manifest["lineage"][0]["kind"] == "react.embedding-store"
    recall, entry = _independent_recall(out, store_dir, modality)
    assert entry["index_key"] == "IVF512,Flat" and entry["ntotal"] == 20_000
    assert entry["measured"]["recall"] >= 0.95 and entry["search_params"]["nprobe"] < 512
    assert recall == pytest.approx(entry["measured"]["recall"], abs=1e-6)
    assert entry["measured"]["query_modality"] == "text" and entry["measured"]["excludes_self"] == (modality == "text")
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_sharded_on_disk_build_gives_the_same_neighbours_as_unsharded(store_20k, tmp_path):
    store_dir, image, _ = store_20k
    kwargs = {"index_key": "IVF64,Flat", "queries": 100, "modalities": ["image"]}
    build_index(str(store_dir), str(tmp_path / "one"), **kwargs)
    build_index(str(store_dir), str(tmp_path / "three"), shards=3, **kwargs)
    manifest = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert manifest["indexes"]["image"]["on_disk"] and (tmp_path / "three" / "image.ivfdata").exists()
    assert sorted(p.name for p in (tmp_path / "three").iterdir() if "shard" in p.name or "trained" in p.name) == []
    shutil.move(tmp_path / "three", tmp_path / "moved")  # the folder is relocatable
    one = faiss.read_index(str(tmp_path / "one" / "image.index"))
    three = faiss.read_index(str(tmp_path / "moved" / "image.index"), faiss.IO_FLAG_ONDISK_SAME_DIR)
    queries = image[:200].astype(np.float32)
    for index in (one, three):
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", 8)
    d1, i1 = one.search(queries, 10)
    d3, i3 = three.search(queries, 10)
    assert three.ntotal == one.ntotal == 20_000
    assert np.array_equal(i1, i3) and np.allclose(d1, d3)
    with pytest.raises(ValueError, match="--shards needs an IVF index"):
        build_index(str(store_dir), str(tmp_path / "bad"), index_key="HNSW16", shards=2, modalities=["image"])


def test_hnsw_is_tuned_with_efsearch_and_an_unreachable_target_takes_the_best(store_20k, tmp_path, capsys):
    store_dir, _, _ = store_20k
    hnsw = build_index(str(store_dir), str(tmp_path / "h"), index_key="HNSW16", queries=100, modalities=["text"])
    entry = hnsw["indexes"]["text"]
    assert set(entry["search_params"]) == {"efSearch"} and entry["measured"]["recall"] >= 0.95
    pq = build_index(str(store_dir), str(tmp_path / "pq"), index_key="IVF16,PQ4x4", target_recall=0.999, queries=100,
                     modalities=["image"])
    entry = pq["indexes"]["image"]
    assert entry["measured"]["recall"] < 0.999 and entry["search_params"]["nprobe"] <= 16
    assert "below the target 0.999" in capsys.readouterr().out


def test_cli_build_and_info_on_a_store(store_20k, tmp_path):
    store_dir, _, _ = store_20k
    runner = CliRunner()
    out = runner.invoke(main, ["build", str(store_dir), "--out", str(tmp_path / "idx"), "--max-memory", "1G",
                               "--queries", "100", "--modality", "image"])
    assert out.exit_code == 0, out.output
    assert f"index -> {tmp_path / 'idx'}" in out.output
    info = runner.invoke(main, ["info", str(tmp_path / "idx")])
    assert info.exit_code == 0 and "IVF512,Flat, 20,000 vectors" in info.output and "recall@10" in info.output
    info = runner.invoke(main, ["info", str(store_dir)])
    assert "samples    20,000 in 4 shard(s); modalities image, text" in info.output
    bad = runner.invoke(main, ["build", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "nothing: no such file or folder" in bad.output


def _cli_build(*args):
    return CliRunner().invoke(main, ["build", *args], catch_exceptions=False)


def test_a_finished_index_is_reused_with_the_same_inputs_and_options_and_rebuilt_with_force(tmp_path):
    from clustered import clustered, write_clip_retrieval_layout

    from react_index.precomputed import ingest_precomputed

    model = {"name": "ViT-B-32", "pretrained": "laion400m_e32", "pretrained_sha256": None}
    image, text = clustered(3_000, 16, seed=5, n_clusters=20)
    ingest_precomputed(write_clip_retrieval_layout(str(tmp_path / "a"), image, text, 1_500), str(tmp_path / "sa"),
                       model)
    ingest_precomputed(write_clip_retrieval_layout(str(tmp_path / "b"), image[:2_000], text[:2_000], 1_000),
                       str(tmp_path / "sb"), model)
    out = str(tmp_path / "idx")
    options = ["--out", out, "--index-key", "IVF16,Flat", "--queries", "20", "--modality", "image"]
    first = _cli_build(str(tmp_path / "sa"), *options)
    assert first.exit_code == 0 and "training IVF16,Flat" in first.output and f"index -> {out}\n" in first.output
    index_file = tmp_path / "idx" / "image.index"
    before = (index_file.stat().st_mtime_ns, (tmp_path / "idx" / "manifest.json").read_text())

    again = _cli_build(str(tmp_path / "sa"), *options)  # the same command: nothing is rebuilt
    assert again.exit_code == 0 and "(reused" in again.output and "training" not in again.output
    assert (index_file.stat().st_mtime_ns, (tmp_path / "idx" / "manifest.json").read_text()) == before

    changed = _cli_build(str(tmp_path / "sa"), *options, "--target-recall", "0.9")  # an option changed
    assert changed.exit_code == 1 and "--target-recall (built with 0.95, now 0.9)" in changed.output
    assert "--force" in changed.output and "another --out" in changed.output
    other = _cli_build(str(tmp_path / "sb"), *options)  # another input store
    assert other.exit_code == 1 and "changed: the store" in other.output and "2,000 rows" in other.output
    assert (index_file.stat().st_mtime_ns, (tmp_path / "idx" / "manifest.json").read_text()) == before

    forced = _cli_build(str(tmp_path / "sb"), *options, "--force")
    assert forced.exit_code == 0 and "training IVF16,Flat" in forced.output and "reused" not in forced.output
    manifest = read_manifest(str(tmp_path / "idx" / "manifest.json"), INDEX)
    assert manifest["indexes"]["image"]["ntotal"] == 2_000
    assert json.loads((tmp_path / "idx" / "build.json").read_text())["store"]["rows"] == 2_000
    assert "(reused" in _cli_build(str(tmp_path / "sb"), *options).output


def test_build_sources_says_where_the_store_went_and_reuses_both(tmp_path):
    from clustered import clustered, write_clip_retrieval_layout

    image, text = clustered(1_200, 16, seed=6, n_clusters=10)
    folder = write_clip_retrieval_layout(str(tmp_path / "pre"), image, text, 600)
    args = [folder, "--out", str(tmp_path / "idx"), "--model", "ViT-B-32", "--pretrained", "x", "--queries", "10",
            "--modality", "text"]
    first = _cli_build(*args)
    assert first.exit_code == 0, first.output
    assert f"store -> {tmp_path / 'idx' / 'store'}  (1,200 samples" in first.output
    second = _cli_build(*args)
    assert second.exit_code == 0 and "(reused" in second.output


def test_an_index_this_build_did_not_make_is_refused_not_overwritten(tmp_path, store_20k):
    store_dir, _, _ = store_20k
    out = tmp_path / "idx"
    build_index(str(store_dir), str(out), index_key="IVF16,Flat", queries=10, modalities=["text"])
    (out / "build.json").unlink()  # as an adopted index or one from an older react-index
    result = _cli_build(str(store_dir), "--out", str(out), "--index-key", "IVF16,Flat", "--queries", "10")
    assert result.exit_code == 1 and "no build.json" in result.output and "--force" in result.output

"""`react-index add`: new shards into an index's store and its indexes, with the trained quantizer (no retraining)."""

import importlib
import json
import shutil

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from clustered import clustered, write_clip_retrieval_layout

from react_index._manifests import UserError
from react_index.add import add
from react_index.build import build_index
from react_index.cli import main
from react_index.manifest import INDEX, STORE, read_manifest
from react_index.precomputed import ingest_precomputed
from react_index.query import open_index
from react_index.sharded import empty_copy
from react_index.store import normalize_float16, open_store

add_module = importlib.import_module("react_index.add")  # `react_index.add` is the function

MODEL = {"name": "ViT-B-32", "pretrained": "laion400m_e32", "pretrained_sha256": None}
KEY = "IVF64,Flat"
N, D = 12_000, 32


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """Two precomputed folders holding the two halves of one clustered corpus (and the vectors)."""
    root = tmp_path_factory.mktemp("halves")
    image, text = clustered(N, D, seed=3, n_clusters=100)
    first = write_clip_retrieval_layout(str(root / "first"), image[:N // 2], text[:N // 2], 2_000)
    second = write_clip_retrieval_layout(str(root / "second"), image[N // 2:], text[N // 2:], 2_500)
    third = write_clip_retrieval_layout(str(root / "third"), image[:500], text[:500], 500)
    return first, second, third, image, text


def _index_on_first_half(tmp_path, halves, **build):
    first = halves[0]
    store = tmp_path / "store"
    ingest_precomputed(first, str(store), MODEL)
    out = tmp_path / "index"
    build_index(str(store), str(out), index_key=KEY, queries=100, **build)
    return store, out


def _search(folder, queries, nprobe=8):
    entry = read_manifest(str(folder / "manifest.json"), INDEX)["indexes"]["image"]
    index = faiss.read_index(str(folder / entry["file"]), faiss.IO_FLAG_ONDISK_SAME_DIR if entry["on_disk"] else 0)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index.search(queries, 10)


def _one_build_with_the_same_quantizer(trained_file, store, on_disk=False, nprobe=8):
    """The index one build would give with the first build's trained quantizer: every row of the grown store."""
    index = empty_copy(str(trained_file), on_disk)
    index.add(np.concatenate([c for _, c in open_store(str(store)).iter_chunks("image")]))
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index


@pytest.mark.parametrize("shards", [1, 2], ids=["in-memory", "on-disk"])
def test_adding_the_second_half_gives_the_neighbours_of_one_build(halves, tmp_path, shards, capsys):
    first, second, _, image, _ = halves
    store, out = _index_on_first_half(tmp_path, halves, shards=shards)
    before = read_manifest(str(out / "manifest.json"), INDEX)
    old_store = read_manifest(str(store / "manifest.json"), STORE)
    shutil.copytree(out, tmp_path / "before")  # the trained quantizer of the first build
    manifest = add(str(out), [second], target_recall=0.9, max_memory="1M")  # on disk: several new shards
    printed = capsys.readouterr().out
    assert "store: 6,000 + 6,000 rows (ids 6,000-11,999)" in printed

    # the store: old rows unchanged, the new ones after them, shards appended
    grown = open_store(str(store))
    assert grown.n == N and grown.manifest["shard_order"] == "appended"
    assert grown.manifest["inputs"] == [first, second]
    assert [s["name"] for s in grown.manifest["shards"]][:3] == ["0", "1", "2"]
    expect = normalize_float16(image).astype(np.float32)
    assert np.array_equal(grown.rows("image", np.arange(N)), expect)
    assert grown.manifest["lineage"][0]["id"] == old_store["id"]
    assert read_manifest(grown.manifest["lineage"][0]["uri"], STORE)["id"] == old_store["id"]  # kept in history/

    # the index: same neighbours as one build over all rows with the same quantizer; ids continue
    entry = manifest["indexes"]["image"]
    assert entry["ntotal"] == N and entry["index_key"] == KEY and entry["on_disk"] == (shards > 1)
    queries = expect[::97]
    one = _one_build_with_the_same_quantizer(tmp_path / "before" / "image.index", store, shards > 1)
    d1, i1 = one.search(queries, 10)
    d2, i2 = _search(out, queries)
    assert np.array_equal(i1, i2) and np.allclose(d1, d2)
    assert (i2[:, 0] == np.arange(0, N, 97)).mean() > 0.9 and i2.max() >= N // 2  # a row finds itself, new ids too
    # re-measured on the grown store, and the lineage names the new store state and the previous index
    assert manifest["lineage"][0] == {"kind": STORE, "id": grown.manifest["id"], "uri": f"{store}/manifest.json"}
    assert manifest["lineage"][1]["id"] == before["id"]
    assert read_manifest(manifest["lineage"][1]["uri"], INDEX)["id"] == before["id"]
    assert entry["measured"]["queries"] == 100 and np.load(out / "image.queries.npy").max() >= N // 2
    for modality in ("image", "text"):
        assert manifest["indexes"][modality]["ntotal"] == N
    _, _, indexes = open_index(str(out))  # query accepts it: the store and the index agree
    assert indexes["text"].ntotal == N
    leftovers = sorted(p.name for p in out.iterdir() if "shard" in p.name or "trained" in p.name or ".tmp" in p.name)
    assert leftovers == []
    if shards > 1:  # new lists replace the old ones, and the folder still moves as a whole
        assert sorted(p.name for p in out.glob("image*.ivfdata")) != ["image.ivfdata"]
        assert len(list(out.glob("image*.ivfdata"))) == 1
        shutil.move(out, tmp_path / "moved")
        assert np.array_equal(_search(tmp_path / "moved", queries)[1], i2)


def test_adding_the_same_sources_again_is_a_no_op_and_overlaps_are_refused(halves, tmp_path, capsys):
    _, second, third, _, _ = halves
    _, out = _index_on_first_half(tmp_path, halves, modalities=["image"])
    first_add = add(str(out), [second])
    capsys.readouterr()
    again = add(str(out), [second])
    assert again["id"] == first_add["id"]
    assert "nothing to add" in capsys.readouterr().out
    with pytest.raises(UserError, match="already in the store .* would duplicate their rows: pass only the new"):
        add(str(out), [third, second])
    assert read_manifest(str(out / "manifest.json"), INDEX)["id"] == first_add["id"]
    # a third add after the second: ids continue again, lineage chains through the history
    third_add = add(str(out), [third])
    assert third_add["indexes"]["image"]["ntotal"] == N + 500
    assert third_add["lineage"][1]["id"] == first_add["id"]
    assert read_manifest(third_add["lineage"][1]["uri"], INDEX)["lineage"][1]["uri"] != third_add["lineage"][1]["uri"]


def test_an_interrupted_add_is_finished_by_rerunning_it(halves, tmp_path, monkeypatch, capsys):
    _, second, _, _, _ = halves
    store, out = _index_on_first_half(tmp_path, halves, modalities=["image"])
    shutil.copytree(out, tmp_path / "before")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the store manifest and the index file, before the index manifest

    monkeypatch.setattr(add_module, "_remeasure", killed)
    with pytest.raises(KeyboardInterrupt):
        add(str(out), [second])
    monkeypatch.undo()
    with pytest.raises(ValueError, match="the store changed since"):
        open_index(str(out))  # meanwhile nothing reads the index against the wrong rows
    capsys.readouterr()
    manifest = add(str(out), [second])
    printed = capsys.readouterr().out
    assert "finishing an interrupted add" in printed and "already holds the new rows" in printed
    assert manifest["indexes"]["image"]["ntotal"] == N
    one = _one_build_with_the_same_quantizer(tmp_path / "before" / "image.index", store)
    queries = np.concatenate([c for _, c in open_store(str(store)).iter_chunks("image")])[::101]
    assert np.array_equal(one.search(queries, 10)[1], _search(out, queries)[1])
    open_index(str(out))


def test_small_exact_indexes_grow_too_and_the_model_must_match(halves, tmp_path):
    _, _, third, _, _ = halves
    image, text = clustered(600, D, seed=5, n_clusters=20)
    src = write_clip_retrieval_layout(str(tmp_path / "small"), image, text, 300)
    ingest_precomputed(src, str(tmp_path / "store"), MODEL)
    build_index(str(tmp_path / "store"), str(tmp_path / "index"), queries=50)
    assert read_manifest(str(tmp_path / "index" / "manifest.json"), INDEX)["indexes"]["image"]["index_key"] == "Flat"
    with pytest.raises(UserError, match="embedded with ViT-L-14 / openai, but the store .* holds ViT-B-32"):
        add(str(tmp_path / "index"), [third], model="ViT-L-14", pretrained="openai")
    manifest = add(str(tmp_path / "index"), [third])
    assert manifest["indexes"]["image"]["ntotal"] == 1_100 and manifest["indexes"]["image"]["measured"]["recall"] == 1
    _, store, indexes = open_index(str(tmp_path / "index"))
    new_rows = store.rows("image", np.arange(600, 1_100))
    assert np.array_equal(indexes["image"].search(new_rows, 1)[1][:, 0], np.arange(600, 1_100))


def test_cli_add(halves, tmp_path):
    _, second, _, _, _ = halves
    _, out = _index_on_first_half(tmp_path, halves, modalities=["image"])
    runner = CliRunner()
    result = runner.invoke(main, ["add", str(out), second, "--target-recall", "0.9"])
    assert result.exit_code == 0, result.output
    assert "6,000 rows added" in result.output and f"index -> {out}" in result.output
    assert json.loads((out / "manifest.json").read_text())["indexes"]["image"]["ntotal"] == N
    result = runner.invoke(main, ["add", str(out), second])
    assert result.exit_code == 0 and "nothing to add" in result.output
    result = runner.invoke(main, ["add", str(out), str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_an_in_place_store_is_refused_with_the_alternative(halves, tmp_path):
    from react_index.precomputed import ingest_in_place

    first, second, _, _, _ = halves
    ingest_in_place(first, str(tmp_path / "store"), MODEL)
    build_index(str(tmp_path / "store"), str(tmp_path / "index"), index_key=KEY, queries=50, modalities=["image"])
    with pytest.raises(UserError, match="an in-place store over .* cannot be appended to it. Ingest the folder into"):
        add(str(tmp_path / "index"), [second])

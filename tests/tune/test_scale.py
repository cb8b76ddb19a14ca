"""react-tune at REACT's scale (issue 14): Arrow rows, one shared text cache, full-batch accumulation, grouped
reads, unreadable rows logged a few at a time."""

import json
import logging
import subprocess
import sys
import threading
import time
from importlib import import_module

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from manifest_cases import write_retrieval_fixture
from safetensors.torch import load_file
from toy_retrieval import toy_rows

import react_tune.text_cache
from react_tune._imagerows import CorruptImage, MissingImage, decode_rgb, read_image_bytes
from react_tune.data import EpochSampler, RetrievalImages, _runs, load_rows
from react_tune.model import load_base
from react_tune.text_cache import cache_key, cache_paths, caption_features
from react_tune.train import TrainConfig, train
from toyworld.models import TINY

TRAIN_MODULE = import_module("react_tune.train")  # `react_tune.train` is the function

SHARDS = ("00000.tar", "00001.tar")


def _config(manifest, weights, out, **kw):
    return TrainConfig(retrieval=str(manifest), model=TINY, pretrained=str(weights), out=str(out),
                       **({"batch_size": 32, "workers": 0} | kw))


def _rows(toy_root, missing=()):
    rows = toy_rows([toy_root / "corpus" / s for s in SHARDS])
    uris = ["/nowhere/gone.tar" if i in missing else u for i, u in enumerate(rows.column("image_uri").to_pylist())]
    return rows.set_column(rows.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))


class ListImages:
    """The dataset as it was before issue 14 (rows as Python lists), kept here as the reference."""

    def __init__(self, parquet, transform, seed):
        table = pq.read_table(parquet)
        self.rows = {c: table.column(c).to_pylist() for c in ("sample_id", "image_uri", "image_offset",
                                                               "image_length")}
        self.transform, self.seed = transform, seed

    def __getitem__(self, index):
        r = self.rows
        epoch, i = divmod(index, len(r["sample_id"]))
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
        try:
            data = read_image_bytes(r["image_uri"][i], r["image_offset"][i], r["image_length"][i])
            image = decode_rgb(data, f"{r['image_uri'][i]} (row {i}, sample {r['sample_id'][i]})")
        except (MissingImage, CorruptImage) as e:
            return None, i, (e.reason, str(e))
        return self.transform(image), i, None


@pytest.mark.parametrize("coalesce", [False, True])
def test_arrow_rows_give_the_items_the_list_rows_gave(tiny_weights, toy_root, tmp_path, coalesce):
    manifest = write_retrieval_fixture(tmp_path / "r", _rows(toy_root, missing={3, 50, 51}))
    _, rows = load_rows(str(manifest))
    assert rows.uri_index.dtype == np.int32 and len(rows.uris) == 3  # two shards and the missing file, once each
    _, preprocess, *_ = load_base(TINY, str(tiny_weights))
    new, old = RetrievalImages(rows, preprocess, seed=5, coalesce=coalesce), ListImages(manifest, preprocess, 5)
    order = list(EpochSampler(len(rows), seed=5, epoch=0, global_batch=8, epochs=2))[:120]  # two epochs' rows
    got = new.__getitems__(order)  # the DataLoader fetches a batch this way
    for index, (x, i, why) in zip(order, got, strict=True):
        y, j, why_old = old[index]
        assert i == j and why == why_old
        assert (x is None and y is None) or torch.equal(x, y)
    assert sum(why is not None for _, _, why in got) > 0


def test_grouped_order_is_runs_of_disk_neighbours_fixed_by_seed_and_epoch(toy_root, tmp_path):
    _, rows = load_rows(str(write_retrieval_fixture(tmp_path / "r", _rows(toy_root))))
    location = rows.location_order()
    sampler = EpochSampler(len(rows), seed=1, epoch=0, global_batch=8, epochs=2, location=location, group=4)
    items = list(sampler)
    epochs, order = np.divmod(items, len(rows))
    assert sorted(order[epochs == 0]) == list(range(len(rows)))  # every row once an epoch
    rank = np.empty(len(rows), int)
    rank[location] = np.arange(len(rows))
    runs = rank[order[:len(rows)]].reshape(-1, 4)
    assert (np.diff(runs, axis=1) == 1).all()  # each run of 4: neighbours on disk …
    assert not (np.diff(runs[:, 0]) == 4).all()  # … the runs themselves shuffled
    assert items == list(EpochSampler(len(rows), seed=1, epoch=0, global_batch=8, epochs=2, location=location,
                                      group=4))
    resumed = list(EpochSampler(len(rows), seed=1, epoch=1, skip=8, global_batch=8, epochs=1, location=location,
                                group=4))
    assert resumed == items[len(rows) + 8:]


def test_coalesced_runs_stay_within_the_gap_and_size_limits():
    length = np.array([10, 10, 10, 10])
    members = [(0, 0, 0), (0, 12, 1), (0, 5_000_000, 2), (0, 5_000_020, 3)]
    assert [[m[2] for m in run] for run in _runs(members, length)] == [[0, 1], [2, 3]]


def test_the_text_cache_is_computed_once_and_read_by_other_ranks_and_on_resume(tiny_weights, toy_retrieval,
                                                                                tmp_path, monkeypatch):
    calls = []
    real = react_tune.text_cache.encode_captions

    def counting(model, tokenizer, captions, device):
        calls.append(len(captions))
        return real(model, tokenizer, captions, device)

    monkeypatch.setattr(react_tune.text_cache, "encode_captions", counting)
    cfg = {"steps": 4, "save_every": 2}
    train(_config(toy_retrieval, tiny_weights, tmp_path / "ck", **cfg))
    captions = pq.read_table(toy_retrieval, columns=["caption"]).column("caption").to_pylist()
    assert sum(calls) == len(set(captions))  # distinct captions only, once
    (cache,) = [p for p in (tmp_path / "ck" / "text-cache").iterdir() if p.suffix == ".json"]
    key = cache.name.removesuffix(".json")
    paths = cache_paths(str(tmp_path / "ck" / "text-cache"), key)
    features, index = np.load(paths["features"]), np.load(paths["index"])
    assert features.dtype == np.float16 and features.shape[0] == len(set(captions)) and len(index) == len(captions)
    assert np.allclose(np.linalg.norm(features.astype(np.float32), axis=1), 1, atol=2e-3)

    calls.clear()
    model, _, _, tokenizer, base = load_base(TINY, str(tiny_weights))
    assert cache_key(base, json.loads((toy_retrieval.parent / "set.parquet.json").read_text())["id"]) == key
    unused = pytest.fail  # a rank other than 0 never reads the captions when the cache is there

    other = caption_features(model, tokenizer, unused, str(tmp_path / "ck" / "text-cache"), key, "cpu", rank=1)
    assert isinstance(other.features, np.memmap) and calls == []
    rows = torch.tensor([0, 5, 7])
    expected = torch.from_numpy(features[index[[0, 5, 7]]].astype(np.float32))
    assert torch.equal(other[rows], expected)
    train(_config(toy_retrieval, tiny_weights, tmp_path / "ck", resume=True, steps=6, save_every=2))
    assert calls == []  # a resumed run encodes nothing


def test_a_rank_waits_for_rank_0s_cache_without_a_process_group(tiny_weights, tmp_path):
    model, _, _, tokenizer, _ = load_base(TINY, str(tiny_weights))
    captions = pa.array(["a red star", "a blue ring", "a red star", "a green square"])
    got = {}

    def rank_1():
        got["features"] = caption_features(model, tokenizer, pytest.fail, str(tmp_path), "k", "cpu", rank=1,
                                           poll_s=0.01)

    waiting = threading.Thread(target=rank_1)
    waiting.start()
    time.sleep(0.2)
    assert waiting.is_alive()  # nothing to read yet: rank 1 waits
    ours = caption_features(model, tokenizer, lambda: [captions[:3], captions[3:]], str(tmp_path), "k", "cpu",
                            rank=0)
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    rows = torch.arange(4)
    assert torch.equal(got["features"][rows], ours[rows]) and torch.equal(ours[rows][0], ours[rows][2])


def _blocks(out):
    return load_file(str(out / "blocks.safetensors"))


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, float((a[k] - b[k]).abs().max()))


@pytest.mark.parametrize("text_cache", [True, False])
def test_accumulation_gives_the_update_of_the_whole_batch(tiny_weights, toy_root, tmp_path, text_cache):
    # rows missing here and there: micro-batches of different sizes, one step's micro-batch may have none
    manifest = write_retrieval_fixture(tmp_path / "r", _rows(toy_root, missing=set(range(0, 200, 3))))
    cfg = {"steps": 2, "batch_size": 16, "lr": 1e-2, "warmup": 0, "max_bad_fraction": 1.0, "text_cache": text_cache}
    one = train(_config(manifest, tiny_weights, tmp_path / "one", accum=1, **cfg))
    four = train(_config(manifest, tiny_weights, tmp_path / "four", accum=4, **cfg))
    _close(_blocks(tmp_path / "one"), _blocks(tmp_path / "four"))
    assert one["training"]["samples_seen"] == four["training"]["samples_seen"]
    assert abs(one["training"]["final_loss"] - four["training"]["final_loss"]) < 1e-4


def test_accumulation_under_two_processes_matches_one_process_without(tiny_weights, toy_root, model_config,
                                                                      tmp_path):
    manifest = write_retrieval_fixture(tmp_path / "r", _rows(toy_root, missing=set(range(0, 200, 3))))
    args = ["train", str(manifest), "--model", TINY, "--pretrained", str(tiny_weights),
            "--model-config", model_config, "--steps", "3", "--batch-size", "16", "--workers", "0", "--lr", "1e-2",
            "--warmup", "0", "--max-bad-fraction", "1"]
    subprocess.run([sys.executable, "-m", "react_tune.cli", *args, "--accum", "1", "--out", str(tmp_path / "one")],
                   check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534"]
    run = subprocess.run([*torchrun, "-m", "react_tune.cli", *args, "--accum", "4", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    _close(_blocks(tmp_path / "one"), _blocks(tmp_path / "two"))
    trained = [json.loads((tmp_path / d / "manifest.json").read_text())["training"] for d in ("one", "two")]
    assert trained[0]["samples_seen"] == trained[1]["samples_seen"] and trained[0]["skipped"] == trained[1]["skipped"]


def test_grouped_reads_train_and_resume_exactly(tiny_weights, toy_retrieval, tmp_path, monkeypatch):
    cfg = {"steps": 4, "batch_size": 16, "read_order": "grouped", "read_group": 4, "save_every": 2}
    train(_config(toy_retrieval, tiny_weights, tmp_path / "whole", **cfg))
    real = TRAIN_MODULE.save_state

    def crash_after_saving(out, step, *args, **kwargs):
        real(out, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(TRAIN_MODULE, "save_state", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(_config(toy_retrieval, tiny_weights, tmp_path / "part", **cfg))
    monkeypatch.setattr(TRAIN_MODULE, "save_state", real)
    train(_config(toy_retrieval, tiny_weights, tmp_path / "part", resume=True, **cfg))
    a, b = _blocks(tmp_path / "whole"), _blocks(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unreadable_rows_are_logged_a_few_times_then_only_counted(tiny_weights, toy_root, tmp_path, caplog):
    manifest = write_retrieval_fixture(tmp_path / "r", _rows(toy_root, missing=set(range(0, 200, 2))))
    with caplog.at_level(logging.WARNING, logger="react_tune"):
        done = train(_config(manifest, tiny_weights, tmp_path / "ck", steps=4, max_bad_fraction=0.9))
    assert done["training"]["skipped"]["missing_image"] > 40
    lines = [r.getMessage() for r in caplog.records if r.name == "react_tune"]
    assert len([m for m in lines if "image skipped (missing_image)" in m]) == 5
    assert any("further missing_image rows are counted" in m for m in lines)

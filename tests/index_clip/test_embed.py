import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import react_index.clip_embed
from react_index.embed import embed
from react_index.sources import SourceError
from react_index.store import open_store
from toyworld import World, write_corpus
from toyworld.models import TINY

CLI = [sys.executable, "-m", "react_index.cli"]


def _vectors(store_dir, modality="image"):
    store = open_store(str(store_dir))
    keys = [k for i in range(len(store.manifest["shards"])) for k in store.metadata(i)["key"].to_pylist()]
    return dict(zip(keys, np.concatenate([c for _, c in store.iter_chunks(modality)]), strict=True))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def test_every_input_format_gives_the_same_embeddings(tmp_path, toy_root, tiny_weights):
    shard = toy_root / "corpus" / "00000.tar"
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    keys = sorted({n.split(".")[0] for n in members})
    folder = tmp_path / "folder"
    folder.mkdir()
    for k in keys:
        (folder / f"{k}.jpg").write_bytes(members[f"{k}.jpg"])
        (folder / f"{k}.txt").write_bytes(members[f"{k}.txt"])
    captions = [members[f"{k}.txt"].decode() for k in keys]
    pq.write_table(pa.table({"key": keys, "image": [members[f"{k}.jpg"] for k in keys], "caption": captions}),
                   tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"key": keys, "image": [str(folder / f"{k}.jpg") for k in keys], "caption": captions}),
                   tmp_path / "paths.parquet")
    sources = {"tar": shard, "folder": folder, "bytes": tmp_path / "bytes.parquet", "paths": tmp_path / "paths.parquet"}
    results = {}
    for name, src in sources.items():
        manifest = embed([str(src)], str(tmp_path / f"store-{name}"), model=TINY, pretrained=str(tiny_weights),
                         batch_size=16, workers=1)
        assert manifest["counts"]["samples"] == 100
        results[name] = {m: _vectors(tmp_path / f"store-{name}", m) for m in ("image", "text")}
    for name in ("folder", "bytes", "paths"):
        for modality in ("image", "text"):
            assert results[name][modality].keys() == results["tar"][modality].keys()
            for k in keys:
                assert np.abs(results[name][modality][k] - results["tar"][modality][k]).max() < 2e-3
    meta = open_store(str(tmp_path / "store-tar")).metadata(0).to_pylist()[3]
    raw = shard.read_bytes()
    assert raw[meta["image_offset"]:meta["image_offset"] + meta["image_length"]] == members[meta["key"] + ".jpg"]
    assert json.loads(meta["json"])["key"] == meta["key"] and meta["url"].endswith(".jpg")


def test_stored_vectors_are_normalised_float16_and_the_model_is_recorded(tmp_path, toy_root, tiny_weights):
    manifest = embed([str(toy_root / "corpus" / "00001.tar")], str(tmp_path / "s"), model=TINY,
                     pretrained=str(tiny_weights),
                     batch_size=32, workers=0)
    raw = np.load(tmp_path / "s" / "img_emb" / "img_emb_00001.npy")
    assert raw.dtype == np.float16 and raw.shape == (100, 64)
    assert np.allclose(np.linalg.norm(raw.astype(np.float32), axis=1), 1, atol=2e-3)
    assert manifest["model"]["pretrained_sha256"].startswith("sha256:") and manifest["dim"] == 64
    with pytest.raises(SourceError, match="this store was embedded with .*write to a new --out"):
        embed([str(toy_root / "corpus" / "00001.tar")], str(tmp_path / "s"), model=TINY, pretrained=None, workers=0)


def test_interrupted_run_resumes_to_the_same_store(tmp_path, toy_root, tiny_weights, monkeypatch):
    sources = [f"{toy_root}/corpus/{{00000..00003}}.tar"]
    whole = embed(sources, str(tmp_path / "whole"), model=TINY, pretrained=str(tiny_weights), batch_size=32, workers=0)
    calls = []
    real = react_index.clip_embed.write_shard

    def crash_on_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(react_index.clip_embed, "write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        embed(sources, str(tmp_path / "resumed"), model=TINY, pretrained=str(tiny_weights), batch_size=32, workers=0)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "resumed" / "shards").iterdir()) == ["00000.json", "00001.json"]
    monkeypatch.setattr(react_index.clip_embed, "write_shard", real)
    resumed = embed(sources, str(tmp_path / "resumed"), model=TINY, pretrained=str(tiny_weights), batch_size=32,
                    workers=0)
    assert resumed["id"] == whole["id"]
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")


def test_kill_9_loses_no_finished_shard_and_leaves_nothing_that_looks_complete(tmp_path, tiny_weights, model_args):
    write_corpus(tmp_path / "corpus", World(), 300, samples_per_shard=10, image_size=32)
    cmd = [*CLI, "embed", f"{tmp_path}/corpus/{{00000..00029}}.tar", "--workers", "0", "--batch-size", "8", *model_args]
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    markers = tmp_path / "killed" / "shards"
    deadline = time.time() + 120
    while not (markers.exists() and len(list(markers.glob("*.json"))) >= 3) and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.stem for p in markers.glob("*.json")}
    assert len(done) >= 3
    for name in done:  # every finished shard is whole
        np.load(tmp_path / "killed" / "img_emb" / f"img_emb_{name}.npy")
        pq.read_table(tmp_path / "killed" / "metadata" / f"metadata_{name}.parquet")
    if len(done) < 30:
        assert not (tmp_path / "killed" / "manifest.json").exists()
    subprocess.run([*cmd, "--out", str(tmp_path / "killed")], check=True, capture_output=True)
    assert _files(tmp_path / "killed").keys() >= _files(tmp_path / "whole").keys()
    whole, killed = _files(tmp_path / "whole"), _files(tmp_path / "killed")
    assert {k: killed[k] for k in whole} == whole
    assert json.loads((tmp_path / "killed" / "manifest.json").read_text())["id"] == \
        json.loads((tmp_path / "whole" / "manifest.json").read_text())["id"]


def test_corrupt_samples_are_counted_and_bad_shards_named(tmp_path, tiny_weights, capsys):
    write_corpus(tmp_path / "c", World(), 30, samples_per_shard=10, image_size=32,
                 broken=("corrupt_jpeg", "empty_caption", "truncated_tar"))
    good = [f"{tmp_path}/c/{{00000..00002}}.tar"]
    manifest = embed(good, str(tmp_path / "s"), model=TINY, pretrained=str(tiny_weights), workers=0)
    assert manifest["counts"] == {"samples": 30, "skipped": {"corrupt_image": 1, "empty_caption": 1}}
    assert manifest["shards"][2]["skipped"] == {"corrupt_image": 1, "empty_caption": 1}
    with pytest.raises(SourceError, match=r"00003.tar: unreadable tar input.*--skip-bad-shards"):
        embed([*good, f"{tmp_path}/c/00003.tar"], str(tmp_path / "s2"), model=TINY, pretrained=str(tiny_weights),
              workers=0)
    manifest = embed([*good, f"{tmp_path}/c/00003.tar"], str(tmp_path / "s3"), model=TINY,
                     pretrained=str(tiny_weights), workers=0,
                     skip_bad_shards=True)
    assert manifest["counts"]["skipped"] == {"corrupt_image": 1, "empty_caption": 1, "unreadable_shard": 1}
    assert manifest["counts"]["samples"] == 30 and manifest["shards"][3]["samples"] == 0


def test_torchrun_ranks_split_shards_and_give_the_single_process_store(tmp_path, toy_root, model_args):
    sources = f"{toy_root}/corpus/{{00000..00003}}.tar"
    args = ["embed", sources, "--workers", "0", "--batch-size", "32", *model_args]
    subprocess.run([*CLI, *args, "--out", str(tmp_path / "single")], check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "react_index.cli", *args, "--out", str(tmp_path / "dist")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _files(tmp_path / "dist") == _files(tmp_path / "single")


def test_cli_build_from_a_corpus_embeds_then_indexes(tmp_path, toy_root, model_args):
    out = subprocess.run([*CLI, "build", f"{toy_root}/corpus/{{00000..00003}}.tar", "--out", str(tmp_path / "idx"),
                          "--queries", "50", *model_args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["lineage"][0]["uri"] == f"{tmp_path / 'idx' / 'store'}/manifest.json"
    assert set(manifest["indexes"]) == {"image", "text"} and manifest["indexes"]["image"]["ntotal"] == 400
    assert f"index -> {tmp_path / 'idx'}" in out.stdout

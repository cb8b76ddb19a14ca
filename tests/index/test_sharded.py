"""Parallel sharded builds: ranks from torchrun's or srun's variables, coordinated through files (no torch)."""

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from react_index._manifests import UserError
from react_index.build import build_index
from react_index.manifest import INDEX, read_manifest
from react_index.sharded import marker_path, process_rank, shard_path, start_ranks

KEY = "IVF64,Flat"
OPTIONS = ["--index-key", KEY, "--modality", "image", "--queries", "50"]
RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture
def alone(monkeypatch):
    """No launcher variables (a test run under srun or torchrun must not leak its own)."""
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _as_rank(monkeypatch, rank, world, torchrun=True):
    names = ("RANK", "WORLD_SIZE") if torchrun else ("SLURM_PROCID", "SLURM_NTASKS")
    monkeypatch.setenv(names[0], str(rank))
    monkeypatch.setenv(names[1], str(world))


def _launch(store, out, rank, world, shards, torchrun=True, timeout=120):
    """`react-index build` as rank `rank` of `world`, in its own process (one faiss thread: 2 cores are shared)."""
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS} | {"OMP_NUM_THREADS": "1"}
    env |= {"RANK": str(rank), "WORLD_SIZE": str(world)} if torchrun else \
        {"SLURM_PROCID": str(rank), "SLURM_NTASKS": str(world)}
    cmd = [sys.executable, "-m", "react_index.cli", "build", str(store), "--out", str(out), "--shards", str(shards),
           "--wait-timeout", str(timeout), *OPTIONS]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _serial(store, out, shards):
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as the launched processes: same k-means, same neighbours
    try:
        return build_index(str(store), str(out), index_key=KEY, shards=shards, queries=50, modalities=["image"])
    finally:
        faiss.omp_set_num_threads(threads)


def _neighbours(folder, queries, nprobe=8):
    entry = read_manifest(str(folder / "manifest.json"), INDEX)["indexes"]["image"]
    index = faiss.read_index(str(folder / entry["file"]), faiss.IO_FLAG_ONDISK_SAME_DIR if entry["on_disk"] else 0)
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index.search(queries, 10)


def _same_index(a, b, queries):
    da, ia = _neighbours(a, queries)
    db, ib = _neighbours(b, queries)
    assert np.array_equal(ia, ib) and np.allclose(da, db)
    ma, mb = (read_manifest(str(f / "manifest.json"), INDEX)["indexes"]["image"] for f in (a, b))
    for field in ("index_key", "ntotal", "search_params", "on_disk"):
        assert ma[field] == mb[field], field
    assert ma["measured"]["recall"] == mb["measured"]["recall"]
    assert np.array_equal(np.load(a / "image.queries.npy"), np.load(b / "image.queries.npy"))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "shard" in p.name or "trained" in p.name or ".tmp" in p.name)


def test_ranks_come_from_torchrun_then_from_srun():
    assert process_rank({}) == (0, 1, "")
    assert process_rank({"RANK": "1", "WORLD_SIZE": "4"})[:2] == (1, 4)
    assert process_rank({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}) == (2, 3, "srun (SLURM_PROCID/SLURM_NTASKS)")
    # torchrun started inside a SLURM job: torchrun's ranks win
    assert process_rank({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})[:2] == (0, 2)
    with pytest.raises(UserError, match=r"RANK=4, WORLD_SIZE=4: the rank must be in \[0, WORLD_SIZE\)"):
        process_rank({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="not integers"):
        process_rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "2(x3)"})


def test_two_processes_build_the_same_index_as_one(store_20k, tmp_path, alone):
    store, image, _ = store_20k
    out = tmp_path / "parallel"
    ranks = [_launch(store, out, r, 2, shards=4) for r in (1, 0)]  # rank 1 first: it waits for the trained index
    one, zero = (_finish(p) for p in ranks)
    assert "rank 1 of 2 wrote shards 1, 3; rank 0 merges them" in one and "rank 1 is done" in one
    assert "training" not in one and "shard 0 " not in one and "shard 2 " not in one
    assert "training IVF64,Flat" in zero and "shard 0 (rows 0-5,000) filled" in zero and "shard 1 " not in zero
    assert "index ->" in zero and not (out / "manifest.json").stat().st_size == 0
    assert _leftovers(out) == [] and (out / "image.ivfdata").exists()
    _serial(store, tmp_path / "serial", shards=4)
    _same_index(out, tmp_path / "serial", image[:300].astype(np.float32))


def test_srun_variables_split_uneven_shards(store_20k, tmp_path, alone):
    store, image, _ = store_20k
    out = tmp_path / "srun"
    ranks = [_launch(store, out, r, 2, shards=3, torchrun=False) for r in (0, 1)]
    zero, one = (_finish(p) for p in ranks)
    assert "from srun (SLURM_PROCID/SLURM_NTASKS)" in zero
    assert "rank 1 of 2 wrote shards 1; rank 0" in one
    assert "shard 0 (rows 0-6,666) filled" in zero and "shard 2 (rows 13,333-20,000) filled" in zero
    _serial(store, tmp_path / "serial", shards=3)
    _same_index(out, tmp_path / "serial", image[:300].astype(np.float32))


def test_a_rerun_after_a_crash_fills_only_the_missing_shards(store_20k, tmp_path, alone, capsys):
    store, image, _ = store_20k
    out = tmp_path / "crashed"
    kwargs = {"index_key": KEY, "shards": 4, "queries": 50, "modalities": ["image"]}
    # rank 0 trains and fills shards 0 and 2, then gives up waiting for rank 1 (which never started)
    _as_rank(alone, 0, 2)
    with pytest.raises(UserError, match=r"shards 1, 3 are missing \(filled by ranks 1 of 2\).*Rerun the same command"):
        build_index(str(store), str(out), wait_timeout=1, **kwargs)
    assert not (out / "manifest.json").exists()
    # rank 1 comes later: it finds the trained index and fills its shards
    _as_rank(alone, 1, 2)
    assert build_index(str(store), str(out), wait_timeout=5, **kwargs) is None
    assert all(os.path.exists(marker_path(str(out), "image", s)) for s in range(4))
    # shard 2 is lost with its marker; shard 3 lost its marker (a shard file without one is not trusted)
    os.remove(shard_path(str(out), "image", 2))
    os.remove(marker_path(str(out), "image", 2))
    os.remove(marker_path(str(out), "image", 3))
    kept = os.stat(shard_path(str(out), "image", 1)).st_mtime_ns
    capsys.readouterr()
    _as_rank(alone, 1, 2)
    assert build_index(str(store), str(out), wait_timeout=5, **kwargs) is None
    one = capsys.readouterr().out
    assert "shard 1 (rows 5,000-10,000) kept" in one and "shard 3 (rows 15,000-20,000) filled" in one
    assert os.stat(shard_path(str(out), "image", 1)).st_mtime_ns == kept
    _as_rank(alone, 0, 2)
    manifest = build_index(str(store), str(out), wait_timeout=5, **kwargs)
    zero = capsys.readouterr().out
    assert "reusing the trained index of an earlier run" in zero and "training" not in zero
    assert "shard 0 (rows 0-5,000) kept" in zero and "shard 2 (rows 10,000-15,000) filled" in zero
    assert manifest["indexes"]["image"]["ntotal"] == 20_000 and _leftovers(out) == []
    for var in ("RANK", "WORLD_SIZE"):
        alone.delenv(var)
    _serial(store, tmp_path / "serial", shards=4)
    _same_index(out, tmp_path / "serial", image[:300].astype(np.float32))


def test_a_rerun_with_other_options_starts_afresh(store_20k, tmp_path, alone, capsys):
    store, _, _ = store_20k
    out = tmp_path / "changed"
    _as_rank(alone, 0, 2)
    with pytest.raises(UserError, match="shards 1 are missing"):
        build_index(str(store), str(out), index_key=KEY, shards=2, queries=50, modalities=["image"], wait_timeout=1)
    for var in ("RANK", "WORLD_SIZE"):
        alone.delenv(var)
    capsys.readouterr()
    manifest = build_index(str(store), str(out), index_key="IVF32,Flat", shards=2, queries=50, modalities=["image"])
    assert "training IVF32,Flat" in capsys.readouterr().out  # the IVF64 shard of the other plan is not merged
    assert manifest["indexes"]["image"]["ntotal"] == 20_000 and _leftovers(out) == []
    merged = faiss.read_index(str(out / "image.index"), faiss.IO_FLAG_ONDISK_SAME_DIR)
    assert faiss.extract_index_ivf(merged).nlist == 32


def test_waiting_ranks_give_up_with_a_clear_error(store_20k, tmp_path, alone):
    store, _, _ = store_20k
    _as_rank(alone, 1, 2, torchrun=False)
    with pytest.raises(UserError, match=r"rank 1 of 2 waited 1s for rank 0 to train the image index.*did rank 0 "
                                        r"fail.*SLURM_NTASKS=2 here.*srun"):
        build_index(str(store), str(tmp_path / "idx"), index_key=KEY, shards=2, modalities=["image"], wait_timeout=1)
    with pytest.raises(UserError, match="rank 1 of 2 waited 1s for the store's manifest"):
        start_ranks(str(tmp_path / "no-store"), str(tmp_path / "idx"), 2, wait_timeout=1)


def test_parallel_builds_need_a_shared_folder_and_shards(store_20k, tmp_path, alone, capsys):
    store, _, _ = store_20k
    _as_rank(alone, 0, 2)
    with pytest.raises(UserError, match="must be a path every process sees"):
        build_index(str(store), "memory://react-index-test/idx", index_key=KEY, shards=2)
    _as_rank(alone, 1, 2)  # without --shards, rank 0 builds alone and the other ranks have nothing to do
    assert build_index(str(store), str(tmp_path / "idx"), index_key=KEY) is None
    assert "nothing to do" in capsys.readouterr().out and not (tmp_path / "idx").exists()


def test_the_plan_file_names_what_the_shards_were_filled_for(store_20k, tmp_path, alone):
    store, _, _ = store_20k
    out = tmp_path / "plan"
    _as_rank(alone, 0, 2)
    with pytest.raises(UserError):
        build_index(str(store), str(out), index_key=KEY, shards=2, queries=50, modalities=["image"], wait_timeout=1)
    plan = json.loads((out / "image.shards.json").read_text())
    assert plan["index_key"] == KEY and plan["shards"] == 2 and plan["rows"] == 20_000 and plan["store"].startswith(
        "sha256:")

"""Sharded IVF builds (`react-index build --shards N`), serial or filled in parallel by several processes.

The trained empty index is written once, N shard indexes are filled from consecutive row ranges of the store
(global row ids kept), then merged into on-disk inverted lists (`{modality}.ivfdata`, faiss
`OnDiskInvertedLists`). Started under `torchrun` or `srun` (ranks from RANK / WORLD_SIZE, else SLURM_PROCID /
SLURM_NTASKS), rank 0 trains and writes the trained index, every rank r of W fills shards r, r+W, …, and rank 0
merges once every shard's marker exists. The processes coordinate only through files in the output folder (no
torch, no network), so the folder must be one that every process sees (a shared file system):

    {modality}.trained.index          the trained empty index (rank 0)
    {modality}.shards.json            the plan (store id, key, shards, training size, seed): written by rank 0
                                      after the trained index, so it says "the trained index is ready"
    {modality}.shard{s:03d}.index     shard s, written atomically by the rank that fills it
    {modality}.shard{s:03d}.done.json its marker, written after the shard (naming the plan): a shard file without
                                      its marker, or with a marker of another plan, is filled again

A rerun of the same command (after a crash, a preemption, a killed rank) reuses the trained index and every
finished shard, and fills only the missing ones. All of these files are removed once the index is written.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time

import faiss
import fsspec
import numpy as np
from faiss.contrib.ondisk import merge_ondisk
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from ._manifests import UserError, local_atomic_path, manifest_uri, write_bytes_atomic

WAIT_TIMEOUT = 6 * 3600.0  # seconds without progress before a waiting rank gives up (--wait-timeout)
LAUNCHERS = (("RANK", "WORLD_SIZE", "torchrun"), ("SLURM_PROCID", "SLURM_NTASKS", "srun"))


def process_rank(environ=None) -> tuple[int, int, str]:
    """(rank, world size, launcher): torchrun's RANK / WORLD_SIZE, else srun's SLURM_PROCID / SLURM_NTASKS, else
    (0, 1, "")."""
    env = os.environ if environ is None else environ
    for rank_var, world_var, launcher in LAUNCHERS:
        if rank_var in env and world_var in env:
            try:
                rank, world = int(env[rank_var]), int(env[world_var])
            except ValueError:
                raise UserError(f"{rank_var}={env[rank_var]!r}, {world_var}={env[world_var]!r}: not integers; "
                                f"start parallel builds with {launcher}, or unset them") from None
            if world < 1 or not 0 <= rank < world:
                raise UserError(f"{rank_var}={rank}, {world_var}={world}: the rank must be in [0, {world_var}); "
                                f"start parallel builds with {launcher}, or unset them")
            return rank, world, f"{launcher} ({rank_var}/{world_var})"
    return 0, 1, ""


def start_ranks(store_uri: str, out: str, shards: int, wait_timeout: float = WAIT_TIMEOUT) -> int | None:
    """This process's rank in a parallel build (0 when it runs alone), or None when it has nothing to do (a rank
    other than 0 of a build without --shards). Ranks other than 0 wait for the store's manifest: under torchrun,
    `react-index build SOURCES` embeds on every rank and rank 0 writes the store manifest last."""
    rank, world, launcher = process_rank()
    if world == 1:
        return 0
    print(f"react-index build: rank {rank} of {world}, from {launcher}")
    if not isinstance(fsspec.core.url_to_fs(out)[0], LocalFileSystem):
        raise UserError(f"--out {out}: the processes of a parallel build coordinate through files in the output "
                        "folder, so it must be a path every process sees (a shared file system), not an object "
                        "store; build there and copy the folder, or run one process (WORLD_SIZE=1)")
    if shards == 1:
        if rank:
            print(f"react-index build: rank {rank}: a build without --shards runs on rank 0 alone; nothing to do "
                  "here (pass --shards N to fill N shards in parallel)")
            return None
        return 0
    if rank == 0 and shards < world:
        print(f"react-index build: warning: --shards {shards} is less than the {world} processes: ranks {shards} "
              f"and above have no shard to fill")
    if rank:
        manifest = manifest_uri(store_uri)
        fs, path = fsspec.core.url_to_fs(manifest)
        waiter = Waiter(wait_timeout)
        while not fs.exists(path):
            waiter.sleep(lambda: f"{manifest}: rank {rank} of {world} waited {wait_timeout:.0f}s for the store's "
                                 "manifest (rank 0 writes it once the store is embedded); did rank 0 fail? Rerun "
                                 "the same command on every rank" + _relaunch_hint(launcher, world))
            fs.invalidate_cache()
    return rank


def _write_index(index, path: str) -> None:
    with local_atomic_path(path) as tmp:  # a killed build's temp file is removed by the next one
        faiss.write_index(index, tmp)


def shard_path(folder: str, modality: str, s: int) -> str:
    return f"{folder}/{modality}.shard{s:03d}.index"


def marker_path(folder: str, modality: str, s: int) -> str:
    return f"{folder}/{modality}.shard{s:03d}.done.json"


def trained_path(folder: str, modality: str) -> str:
    return f"{folder}/{modality}.trained.index"


def plan_path(folder: str, modality: str) -> str:
    return f"{folder}/{modality}.shards.json"


def _read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def plan_digest(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def shard_done(folder: str, modality: str, s: int, digest: str) -> bool:
    """Shard s of this plan is finished: its marker names the plan, and the shard file exists."""
    marker = _read_json(marker_path(folder, modality, s))
    return bool(marker) and marker.get("plan") == digest and os.path.exists(shard_path(folder, modality, s))


def iter_range(store, modality: str, lo: int, hi: int, chunk_rows: int):
    """(first row, float32 chunk) of the store's rows [lo, hi), reading only the shards and rows in the range (with
    plain reads rather than through a memory map, as Store.iter_chunks)."""
    offsets = store.offsets()
    for i in range(len(offsets) - 1):
        first, end = int(offsets[i]), int(offsets[i + 1])
        if end <= lo or first >= hi or first == end:
            continue
        vectors = store.shard_vectors(modality, i)
        width = vectors.shape[1]
        for a in range(max(lo, first), min(hi, end), chunk_rows):
            b = min(a + chunk_rows, hi, end)
            if isinstance(vectors, np.memmap):
                raw = np.fromfile(vectors.filename, dtype=vectors.dtype, count=(b - a) * width,
                                  offset=vectors.offset + (a - first) * width * vectors.itemsize)
                yield a, raw.reshape(b - a, width).astype(np.float32)
            else:
                yield a, np.asarray(vectors[a - first:b - first], dtype=np.float32)


def fill_range(index, store, modality: str, lo: int, hi: int, chunk_rows: int, bar) -> None:
    """Add rows [lo, hi) of the store to `index` under their global row ids."""
    for a, chunk in iter_range(store, modality, lo, hi, chunk_rows):
        index.add_with_ids(chunk, np.arange(a, a + len(chunk), dtype=np.int64))
        bar.update(len(chunk))


def fill_shard(trained: str, store, modality: str, lo: int, hi: int, chunk_rows: int, bar, part: str,
               marker: str, digest: str) -> None:
    """Fill one shard from the trained index file and write it, then its marker (both atomically)."""
    shard_index = faiss.read_index(trained)
    fill_range(shard_index, store, modality, lo, hi, chunk_rows, bar)
    _write_index(shard_index, part)
    write_bytes_atomic(marker, json.dumps({"plan": digest, "rows": [lo, hi],
                                           "ntotal": int(shard_index.ntotal)}).encode())


class Waiter:
    """Polls the shared folder; gives up after `timeout` seconds without progress, with `explain()` as the error."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.poll = min(10.0, max(0.1, timeout / 100))
        self.since = time.monotonic()

    def progress(self) -> None:
        self.since = time.monotonic()

    def sleep(self, explain) -> None:
        if time.monotonic() - self.since > self.timeout:
            raise UserError(explain())
        time.sleep(self.poll)


def _discard_plan(folder: str, modality: str) -> None:
    """Rank 0 starts afresh: the plan goes first (so no rank fills from the old trained index), then the old
    shards and markers."""
    for path in [plan_path(folder, modality), trained_path(folder, modality),
                 *glob.glob(glob.escape(f"{folder}/{modality}") + ".shard[0-9]*.done.json"),
                 *glob.glob(glob.escape(f"{folder}/{modality}") + ".shard[0-9]*.index")]:
        if os.path.exists(path):
            os.remove(path)


def _relaunch_hint(launcher: str, world: int) -> str:
    if launcher.startswith("srun"):
        return (f" SLURM_NTASKS={world} here: inside an sbatch job a command started without srun still sees it; "
                "start one process per task with srun, or set WORLD_SIZE=1 RANK=0 for a single process.")
    return ""


def build_shards(index, store, modality: str, folder: str, key: str, n_shards: int, chunk_rows: int, seed: int,
                 n_train: int, rng, train, wait_timeout: float = WAIT_TIMEOUT):
    """Train `index` (with `train(index, store, modality, n_train, rng)`, rank 0 only), fill this rank's shards
    and, on rank 0, wait for every shard and merge them into on-disk lists. Returns the merged index on rank 0,
    None on the other ranks (their shards are written; rank 0 does the rest)."""
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        raise UserError(f"--shards needs an IVF index; {key!r} is not one: build it with --shards 1 or pass an "
                        "IVF --index-key") from None
    rank, world, launcher = process_rank()
    n = store.n
    plan = {"store": store.manifest["id"], "modality": modality, "index_key": key, "shards": n_shards, "rows": n,
            "train": n_train, "seed": seed}
    digest = plan_digest(plan)
    trained, planned = trained_path(folder, modality), plan_path(folder, modality)
    if rank == 0:
        if _read_json(planned) == plan and os.path.exists(trained):
            rng.choice(n, size=n_train, replace=False)  # the draw training makes: the held-out queries stay the same
            print(f"  {modality}: reusing the trained index of an earlier run ({trained})")
        else:
            _discard_plan(folder, modality)
            print(f"  {modality}: training {key} on {n_train:,} of {n:,} vectors")
            train(index, store, modality, n_train, rng)
            _write_index(index, trained)
            write_bytes_atomic(planned, json.dumps(plan, sort_keys=True).encode())
    else:
        waiter = Waiter(wait_timeout)
        print(f"  {modality}: rank {rank} of {world} waits for rank 0's trained index ({trained})")
        while not (_read_json(planned) == plan and os.path.exists(trained)):
            waiter.sleep(lambda: f"{folder}: rank {rank} of {world} waited {wait_timeout:.0f}s for rank 0 to train "
                                 f"the {modality} index and write {planned} for this build (store "
                                 f"{plan['store'][:19]}…, {key}, {n_shards} shards); did rank 0 fail, or was it "
                                 f"started with other options? Rerun the same command on every rank (finished "
                                 f"shards are kept); raise --wait-timeout if training takes longer."
                                 + _relaunch_hint(launcher, world))

    bounds = np.linspace(0, n, n_shards + 1).astype(np.int64)
    mine = list(range(rank, n_shards, world))
    bar = tqdm(total=int(sum(bounds[s + 1] - bounds[s] for s in mine)), desc=f"  {modality}: add", unit="vec",
               unit_scale=True, dynamic_ncols=True)
    for s in mine:
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if shard_done(folder, modality, s, digest):  # resume: finished shards are kept
            bar.update(hi - lo)
            tqdm.write(f"  {modality}: shard {s} (rows {lo:,}-{hi:,}) kept: finished by an earlier run")
            continue
        fill_shard(trained, store, modality, lo, hi, chunk_rows, bar, shard_path(folder, modality, s),
                   marker_path(folder, modality, s), digest)
        tqdm.write(f"  {modality}: shard {s} (rows {lo:,}-{hi:,}) filled")
    bar.close()
    if rank != 0:
        print(f"  {modality}: rank {rank} of {world} wrote shards {', '.join(map(str, mine)) or 'none'}; rank 0 "
              "merges them, tunes the index and writes the manifest")
        return None

    missing = [s for s in range(n_shards) if not shard_done(folder, modality, s, digest)]
    if missing:
        print(f"  {modality}: waiting for shards {', '.join(map(str, missing))} from the other "
              f"{world - 1} rank(s) ({launcher})")
        waiter = Waiter(wait_timeout)
        while missing:
            waiter.sleep(lambda m=missing: f"{folder}: no {modality} shard finished for {wait_timeout:.0f}s and "
                                 f"shards {', '.join(map(str, m))} are missing (filled by ranks "
                                 f"{', '.join(map(str, sorted({s % world for s in m})))} of {world}); did a rank "
                                 "fail, or was it never started? Rerun the same command on every rank: the trained "
                                 "index and finished shards are kept, only the missing shards are filled; raise "
                                 "--wait-timeout if shards take longer." + _relaunch_hint(launcher, world))
            still = [s for s in missing if not shard_done(folder, modality, s, digest)]
            if len(still) < len(missing):
                waiter.progress()
            missing = still
    index = faiss.read_index(trained)
    ivfdata = f"{folder}/{modality}.ivfdata"
    if os.path.exists(ivfdata):  # an earlier build's lists (or a merge that was killed): merged afresh
        os.remove(ivfdata)
    merge_ondisk(index, [shard_path(folder, modality, s) for s in range(n_shards)], ivfdata)
    return index


def empty_copy(path: str, on_disk: bool):
    """The trained, empty index of the IVF index file at `path` (its quantizer and encoder, no vectors)."""
    index = faiss.read_index(path, faiss.IO_FLAG_ONDISK_SAME_DIR if on_disk else 0)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    index.ntotal = ivf.ntotal = 0
    return index


def merge_lists(index, sources: list, ivfdata: str) -> None:
    """Merge the inverted lists of the opened IVF indexes `sources` (in memory, memory-mapped or on disk; the caller
    keeps them open) into new on-disk lists in `ivfdata`, which become the lists of the empty trained `index`
    (faiss.contrib.ondisk.merge_ondisk, for indexes already opened)."""
    ivf = faiss.extract_index_ivf(index)
    assert index.ntotal == 0, "merge_lists fills an empty index"
    if os.path.exists(ivfdata):  # a merge that was killed: merged afresh
        os.remove(ivfdata)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, ivfdata)
    pointers = faiss.InvertedListsPtrVector()
    for source in sources:
        pointers.push_back(faiss.extract_index_ivf(source).invlists)
    ntotal = lists.merge_from_multiple(pointers.data(), pointers.size(), False)
    index.ntotal = ivf.ntotal = ntotal
    ivf.replace_invlists(lists, True)
    lists.this.disown()


def ivfdata_name(index) -> str | None:
    """The file name of an on-disk index's inverted lists (None for lists in memory)."""
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    return os.path.basename(lists.filename) if isinstance(lists, faiss.OnDiskInvertedLists) else None


def cleanup(folder: str, modality: str, n_shards: int) -> None:
    """Remove the plan, the trained index, the shard files and their markers once the merged index is written."""
    for path in [plan_path(folder, modality), trained_path(folder, modality),
                 *(f(folder, modality, s) for s in range(n_shards) for f in (shard_path, marker_path))]:
        if os.path.exists(path):
            os.remove(path)

"""The LAION path rehearsed at 10M vectors (issue 12; docs/scaling.md). Not part of CI: ~1 h on 2 cores, ~25 GB disk.

    python benchmarks/rehearsal_10m.py                    # 10M into bench-out/rehearsal10m/, data deleted after
    python benchmarks/rehearsal_10m.py --n 400000         # a quick trial of the same chain

1. generate  a LAION-style folder: 40 parts `img_emb/img_emb_{i}.npy` (float16, unit norm, 512-d clustered
             vectors from benchmarks/clustered.py) + `metadata/metadata_{i}.parquet` holding only url, caption and
             an `image_path` relative to someone else's download (so rows are URL-only), as LAION ships them.
             Held out, never written: the text vectors of 500 rows (recall queries) and of 1,000 rows (the
             anchors of P2's 1,000 classes × 80 templates, built as benchmarks/bench_p2_query.py builds them).
2. store     `react-index embed DATA --out STORE --in-place`: a store manifest over the parts, no copy.
3. build     `react-index build STORE --out INDEX --max-memory 4G --shards 4 --modality image`, as two processes
             (RANK 0 and 1 of WORLD_SIZE 2, as torchrun or srun would start them): rank 0 trains, both fill
             shards, rank 0 merges on disk and tunes (nprobe, re-rank factor) to the recall target.
4. recall    `react-index query` with the 500 held-out vectors as 500 one-query classes, K=10 per class: the
             user's own path (re-ranking included); recall@10 against exact search over the store in row order.
5. P2        `react-index query` with 1,000 classes × 80 templates, K=125 per template, top 1,000 per class, and
             `--export-urls` (what img2dataset or `react-index download` would fetch).
Each command runs under /usr/bin/time -v (wall, CPU, peak RSS; the two build ranks each); disk use of every
output is recorded. Results go to OUT/result.json after every step (a run stopped part-way keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import revision, tool
from clustered import clustered_blocks
from faiss.contrib.exhaustive_search import knn_ground_truth
from scale_10m import _time_v, folder_mb, run_measured

DIM = 512
PARTS = 40
N_RECALL = 500
CLASSES, TEMPLATES, K_P2, BUDGET_P2 = 1000, 80, 125, 1_000_000
TEMPLATE_OFFSET, NOISE = 0.4, 0.15  # as bench_p2_query
ROOT = Path(__file__).resolve().parent.parent


def generate(folder: Path, n: int, held: np.ndarray) -> np.ndarray:
    """The LAION-style folder; returns the text vectors of the `held` rows (float32), which are not written."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    bounds = np.linspace(0, n, PARTS + 1).astype(np.int64)
    held_text = np.empty((len(held), DIM), np.float32)
    part, out = -1, None
    for lo, x, t in clustered_blocks(n, DIM, seed=0):
        pos = 0
        while pos < len(x):
            row = lo + pos
            if part < 0 or row >= bounds[part + 1]:
                part += 1
                out = np.lib.format.open_memmap(folder / "img_emb" / f"img_emb_{part}.npy", mode="w+",
                                                dtype=np.float16, shape=(int(bounds[part + 1] - bounds[part]), DIM))
                ids = range(int(bounds[part]), int(bounds[part + 1]))
                pq.write_table(pa.table({"url": [f"https://img.invalid/{j}.jpg" for j in ids],
                                         "caption": [f"a web caption number {j}" for j in ids],
                                         "image_path": [f"{j // 10_000:05d}/{j:09d}" for j in ids]}),
                               folder / "metadata" / f"metadata_{part}.parquet")
            take = min(len(x) - pos, int(bounds[part + 1]) - row)
            out[row - bounds[part]:row - bounds[part] + take] = x[pos:pos + take]
            pos += take
        sel = (held >= lo) & (held < lo + len(x))
        held_text[sel] = t[held[sel] - lo]
    out.flush()
    return held_text


def p2_queries(anchors: np.ndarray, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offsets = rng.standard_normal((TEMPLATES, DIM)).astype(np.float32)
    offsets *= TEMPLATE_OFFSET / np.linalg.norm(offsets, axis=1, keepdims=True)
    noise = rng.standard_normal((CLASSES, TEMPLATES, DIM)).astype(np.float32) * (NOISE / np.sqrt(DIM))
    q = anchors[:, None, :] + offsets[None, :, :] + noise
    return (q / np.linalg.norm(q, axis=2, keepdims=True)).astype(np.float32)


def build_two_ranks(cmd: list[str], out: Path) -> dict:
    """The build as two processes (RANK 0/1 of 2) started together, each under /usr/bin/time -v."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print("$ RANK=0,1 WORLD_SIZE=2 " + " ".join(cmd), flush=True)
    procs, start = [], time.time()
    for rank in (0, 1):
        env = os.environ | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        f = open(logs / f"build.rank{rank}.log", "w")  # closed below, after both ranks end
        procs.append((subprocess.Popen(["/usr/bin/time", "-v", "-o", str(logs / f"build.rank{rank}.time.txt"), *cmd],
                                       stdout=f, stderr=subprocess.STDOUT, env=env), f))
    codes = [p.wait() for p, _ in procs]
    for _, f in procs:
        f.close()
    if any(codes):
        raise RuntimeError(f"build ranks exited {codes}; logs in {logs}")
    ranks = {f"rank{r}": _time_v((logs / f"build.rank{r}.time.txt").read_text()) for r in (0, 1)}
    return {"wall_s": round(time.time() - start, 1), "cpu_s": round(sum(v["cpu_s"] for v in ranks.values()), 1),
            **ranks}


def exact_top(store: Path, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row ids over the store, in the store's row order (the order the index numbers rows)."""
    from react_index.store import open_store

    faiss.omp_set_num_threads(2)
    chunks = (chunk for _, chunk in open_store(str(store)).iter_chunks("image", 200_000))
    return knn_ground_truth(queries, chunks, k, metric_type=faiss.METRIC_INNER_PRODUCT)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "rehearsal10m"))
    parser.add_argument("--max-memory", default="4G")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--generate-only", action="store_true",
                        help="write the folder (the next run reuses it) and stop")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, store, index, sets = out / "data", out / "store", out / "index", out / "sets"
    progress = out / "progress.jsonl"
    result = {"revision": revision(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "n": args.n, "dim": DIM,
              "parts": PARTS, "max_memory": args.max_memory,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__}}

    def save():
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, out / "result.json")

    rng = np.random.default_rng(1)
    held = np.sort(rng.choice(args.n, N_RECALL + CLASSES, replace=False))
    recall_rows = np.sort(rng.permutation(held)[:N_RECALL])
    anchor_rows = np.setdiff1d(held, recall_rows)
    spec, ready = {"n": args.n, "parts": PARTS, "seed": 0}, out / "data.ready.json"
    if ready.exists() and json.loads(ready.read_text()).get("spec") == spec:  # made by an earlier --generate-only
        result["generate"] = json.loads(ready.read_text())["generate"]
        held_text = np.load(out / "held_text.npy")
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        print(f"generating {args.n:,} vectors in {PARTS} LAION-style parts", flush=True)
        held_text = generate(data, args.n, held)
        result["generate"] = {"wall_s": round(time.perf_counter() - t0, 1),
                              "cpu_s": round(time.process_time() - c0, 1), "data_mb": folder_mb(data)}
        np.save(out / "held_text.npy", held_text)
        ready.write_text(json.dumps({"spec": spec, "generate": result["generate"]}))
    save()
    if args.generate_only:
        return 0
    recall_q = held_text[np.searchsorted(held, recall_rows)]
    anchors = held_text[np.searchsorted(held, anchor_rows)]

    shutil.rmtree(store, ignore_errors=True)
    result["store"] = run_measured("store", [tool("react-index"), "embed", str(data), "--out", str(store),
                                             "--in-place"], out, progress) | {"store_mb": folder_mb(store)}
    save()

    shutil.rmtree(index, ignore_errors=True)
    build = [tool("react-index"), "build", str(store), "--out", str(index), "--max-memory", args.max_memory,
             "--shards", "4", "--modality", "image"]
    result["build"] = build_two_ranks(build, out)
    entry = json.loads((index / "manifest.json").read_text())["indexes"]["image"]
    result["index"] = {k: entry.get(k) for k in ("index_key", "ntotal", "search_params", "rerank", "on_disk",
                                                  "build_seconds")}
    result["index"]["self_measured"] = entry["measured"]
    result["index"]["index_mb"] = folder_mb(index)
    save()

    sets.mkdir(exist_ok=True)
    np.save(sets / "recall_q.npy", recall_q)
    (sets / "recall_classes.txt").write_text("".join(f"q{i}\n" for i in range(N_RECALL)))
    result["recall_query"] = run_measured("recall_query", [
        tool("react-index"), "query", "--index", str(index), "--classes", str(sets / "recall_classes.txt"),
        "--query-embeddings", str(sets / "recall_q.npy"), "--k", "10", "--per", "class",
        "--out", str(sets / "recall.parquet")], out, progress)
    rows = pq.read_table(sets / "recall.parquet", columns=["class_index", "sample_id"]).to_pydict()
    found: dict[int, set] = {}
    for c, s in zip(rows["class_index"], rows["sample_id"], strict=True):
        found.setdefault(c, set()).add(s)
    t0 = time.perf_counter()
    truth = exact_top(store, recall_q, 10)
    recall = float(np.mean([len(found.get(i, set()) & set(t)) / 10 for i, t in enumerate(truth)]))
    result["recall"] = {"queries": N_RECALL, "k": 10, "recall_at_10": round(recall, 4),
                        "exact_search_s": round(time.perf_counter() - t0, 1),
                        "queries_per_s_incl_startup": round(N_RECALL / result["recall_query"]["wall_s"], 1)}
    save()
    # an image-only store is tuned on image vectors, which sit closer to their neighbours than text queries: the
    # same queries again with 1.6x the tuned nprobe (docs/scaling.md, the rehearsal)
    tuned = result["index"]["search_params"].get("nprobe")
    if tuned:
        more = str(int(np.ceil(1.6 * tuned)))
        result["recall_more_lists"] = run_measured("recall_more_lists", [
            tool("react-index"), "query", "--index", str(index), "--classes", str(sets / "recall_classes.txt"),
            "--query-embeddings", str(sets / "recall_q.npy"), "--k", "10", "--per", "class", "--nprobe", more,
            "--out", str(sets / "recall-more.parquet")], out, progress)
        more_rows = pq.read_table(sets / "recall-more.parquet", columns=["class_index", "sample_id"]).to_pydict()
        more_found: dict[int, set] = {}
        for c, s in zip(more_rows["class_index"], more_rows["sample_id"], strict=True):
            more_found.setdefault(c, set()).add(s)
        result["recall_more_lists"] |= {"nprobe": int(more), "recall_at_10": round(float(np.mean(
            [len(more_found.get(i, set()) & set(t)) / 10 for i, t in enumerate(truth)])), 4)}
        save()

    np.save(sets / "p2_q.npy", p2_queries(anchors))
    (sets / "p2_classes.txt").write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    result["p2"] = run_measured("p2", [
        tool("react-index"), "query", "--index", str(index), "--classes", str(sets / "p2_classes.txt"),
        "--query-embeddings", str(sets / "p2_q.npy"), "--k", str(K_P2), "--per", "template",
        "--budget", str(BUDGET_P2), "--out", str(sets / "p2.parquet"),
        "--export-urls", str(sets / "p2_urls.parquet")], out, progress)
    meta = pq.ParquetFile(sets / "p2.parquet").metadata
    urls = pq.ParquetFile(sets / "p2_urls.parquet").metadata
    result["p2"] |= {"rows": meta.num_rows, "distinct_urls": urls.num_rows, "sets_mb": folder_mb(sets)}
    result["disk_mb"] = {"data": folder_mb(data), "store": folder_mb(store), "index": folder_mb(index),
                         "sets": folder_mb(sets)}
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    if not args.keep_data:
        for folder in (data, store, index):
            shutil.rmtree(folder, ignore_errors=True)
        ready.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))
    print(f"results -> {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Index build at 10M vectors (docs/scaling.md): react-index embed + build, measured, beside a 1M run.

    nice -n 19 python benchmarks/scale_10m.py                  # 1M, then 10M, into bench-out/scale10m/
    python benchmarks/scale_10m.py --sizes 200000              # a quick trial

For each size: 512-d clustered unit vectors from the generator of `clustered.py` (same model: 2,000
Zipf-sized clusters plus noise), written in the clip-retrieval layout in shards of 1M rows, streaming
one 100k-row block at a time (10M x 512 float32 would be 20 GB; the script never holds more than one
block). Only image vectors are written (text vectors too would need 40 GB of disk at 10M), so
`react-index build` tunes on image queries with their own row excluded. Then, each under
`/usr/bin/time -v` (wall time, CPU time, peak RSS):

    react-index embed DATA --out STORE                                   (torch-free ingest)
    react-index build STORE --out INDEX --max-memory 4G --modality image

and, in this process, an independent check as in P1: 500 held-out **text** vectors (generated with
their rows, never written) as text-to-image queries, exact top-10 by brute force over the store,
recall@10 of the index at its tuned parameters, and QPS (one batch, 2 faiss threads).

Results go to OUT/result.json, rewritten after every step, so a run stopped part-way keeps what it
measured; while a command runs, OUT/progress.jsonl gets its CPU time and RSS once a minute. The source
layout is deleted once ingested (the store holds a copy), unless --keep-data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import revision, tool
from clustered import clustered_blocks
from faiss.contrib.exhaustive_search import knn_ground_truth

DIM = 512
ROWS_PER_FILE = 1_000_000
N_QUERIES = 500
K = 10
THREADS = 2
ROOT = Path(__file__).resolve().parent.parent


def write_layout(folder: Path, n: int, query_rows: np.ndarray) -> np.ndarray:
    """img_emb/img_emb_{i}.npy + metadata/metadata_{i}.parquet in files of 1M rows; returns the text vectors
    of `query_rows` (float32), which are not written."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    queries = np.empty((len(query_rows), DIM), np.float32)
    out = None
    for lo, x, t in clustered_blocks(n, DIM, seed=0):
        i, at = divmod(lo, ROWS_PER_FILE)
        if at == 0:
            rows = min(ROWS_PER_FILE, n - lo)
            out = np.lib.format.open_memmap(folder / "img_emb" / f"img_emb_{i}.npy", mode="w+", dtype=np.float16,
                                            shape=(rows, DIM))
            ids = range(lo, lo + rows)
            pq.write_table(pa.table({"caption": [f"caption {j}" for j in ids],
                                     "url": [f"https://x.invalid/{j}.jpg" for j in ids]}),
                           folder / "metadata" / f"metadata_{i}.parquet")
        out[at:at + len(x)] = x
        if at + len(x) == len(out):
            out.flush()
            del out
            out = None
        sel = (query_rows >= lo) & (query_rows < lo + len(x))
        queries[sel] = t[query_rows[sel] - lo]
    return queries


# --- measured subprocesses -------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _usage(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds, summed RSS in MB) of the processes now."""
    cpu, rss, tick = 0.0, 0, os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            pass
    return cpu, rss // 2**20


def _time_v(text: str) -> dict:
    def field(name: str) -> str:
        m = re.search(rf"^\s*{re.escape(name)}: (.*)$", text, re.M)
        return m.group(1).strip() if m else ""

    clock = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")] or [0]
    wall = sum(v * 60**i for i, v in enumerate(reversed(clock)))
    user, system = float(field("User time (seconds)") or 0), float(field("System time (seconds)") or 0)
    return {"wall_s": round(wall, 1), "cpu_s": round(user + system, 1), "user_s": user, "sys_s": system,
            "cpu_percent": field("Percent of CPU this job got"),
            "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)") or 0) / 1024)}


def run_measured(name: str, cmd: list[str], out: Path, progress: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v, output to OUT/logs/NAME.log; log CPU and RSS once a minute."""
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    timing = log.with_suffix(".time.txt")
    print("$ " + " ".join(cmd), flush=True)
    start, load = time.time(), os.getloadavg()
    with open(log, "w") as f:
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(timing), *cmd], stdout=f, stderr=subprocess.STDOUT)
        done = threading.Event()

        def watch():
            while not done.wait(60):
                cpu, rss = _usage(_descendants(proc.pid))
                tail = log.read_text(errors="replace")[-300:].replace("\r", "\n").strip().splitlines()
                with open(progress, "a") as p:
                    p.write(json.dumps({"step": name, "elapsed_s": round(time.time() - start), "cpu_s": round(cpu),
                                        "rss_mb": rss, "loadavg": os.getloadavg()[0],
                                        "log": tail[-1][-160:] if tail else ""}) + "\n")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait()
        done.set()
    if code:
        raise RuntimeError(f"exit status {code}: {' '.join(cmd)} (log: {log})")
    return _time_v(timing.read_text()) | {"loadavg_1m_at_start": round(load[0], 2),
                                          "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}


def folder_mb(path: Path) -> int:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20)


# --- one size ----------------------------------------------------------------------------------------

def measure_size(n: int, out: Path, max_memory: str, keep_data: bool, save) -> dict:
    data, store, index_dir = out / "data", out / "store", out / "index"
    progress = out / "progress.jsonl"
    result: dict = {"n": n, "dim": DIM, "max_memory": max_memory}
    save(result)

    query_rows = np.sort(np.random.default_rng(1).choice(n, N_QUERIES, replace=False))
    t0, c0 = time.perf_counter(), time.process_time()
    print(f"generating {n:,} clustered {DIM}-d vectors into {data}", flush=True)
    queries = write_layout(data, n, query_rows)
    result["generate"] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                          "data_mb": folder_mb(data)}
    save(result)

    shutil.rmtree(store, ignore_errors=True)
    result["ingest"] = run_measured("ingest", [tool("react-index"), "embed", str(data), "--out", str(store)],
                                    out, progress)
    result["ingest"]["store_mb"] = folder_mb(store)
    save(result)
    if not keep_data:
        shutil.rmtree(data)

    shutil.rmtree(index_dir, ignore_errors=True)
    result["build"] = run_measured("build", [tool("react-index"), "build", str(store), "--out", str(index_dir),
                                             "--max-memory", max_memory, "--modality", "image"], out, progress)
    entry = json.loads((index_dir / "manifest.json").read_text())["indexes"]["image"]
    result["index"] = {"index_key": entry["index_key"], "ntotal": entry["ntotal"],
                       "search_params": entry["search_params"], "build_seconds_in_manifest": entry["build_seconds"],
                       "index_mb": round((index_dir / "image.index").stat().st_size / 2**20),
                       "self_reported": {k: entry["measured"][k] for k in ("k", "recall", "qps", "query_modality")}}
    training = re.search(r"training (\S+) on ([\d,]+) of", (out / "logs" / "build.log").read_text())
    if training:
        result["index"]["training_points"] = int(training.group(2).replace(",", ""))
    save(result)

    # Independent check: held-out text queries, exact top-10 by brute force over the store.
    faiss.omp_set_num_threads(THREADS)
    t0 = time.perf_counter()
    chunks = (np.asarray(np.load(f, mmap_mode="r"), np.float32)
              for f in sorted((store / "img_emb").glob("img_emb_*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1])))
    _, truth = knn_ground_truth(queries, chunks, K, metric_type=faiss.METRIC_INNER_PRODUCT)
    exact_s = time.perf_counter() - t0
    index = faiss.read_index(str(index_dir / "image.index"))
    for name, value in entry["search_params"].items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    found = index.search(queries, K)[1]
    recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))
    runs, wall, cpu = 0, time.perf_counter(), time.process_time()
    while runs < 3 or time.perf_counter() - wall < 2.0:
        index.search(queries, K)
        runs += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result["check"] = {"queries": N_QUERIES, "query_modality": "text (held out, never written)",
                       "recall_at_10": round(recall, 4), "qps": round(runs * N_QUERIES / wall),
                       "cpu_ms_per_query": round(1000 * cpu / (runs * N_QUERIES), 3),
                       "exact_search_s": round(exact_s, 1), "faiss_threads": THREADS}
    save(result)
    del index
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated vector counts, run in order")
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "scale10m"))
    parser.add_argument("--max-memory", default="4G")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated layout after ingest")
    args = parser.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results_file = root / "result.json"
    results = {"revision": revision(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__,
                           "niceness": os.nice(0)},
               "runs": {}}

    def save(result: dict) -> None:
        results["runs"][str(result["n"])] = result
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, results_file)

    for n in (int(s) for s in args.sizes.split(",")):
        measure_size(n, root / f"n{n}", args.max_memory, args.keep_data, save)
        print(json.dumps(results["runs"][str(n)], indent=2), flush=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save(results["runs"][str(n)])
    print(f"results -> {results_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

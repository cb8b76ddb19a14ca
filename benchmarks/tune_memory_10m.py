"""react-tune host memory at REACT's scale (issue 14): a synthetic retrieval set of ROWS rows whose locators
point at a few thousand real toy images (repeated), the tiny toy model, 2 DataLoader workers, 1 or 2
processes, STEPS optimizer steps; peak memory of every process of the run, from the kernel.

    python benchmarks/tune_memory_10m.py --rows 10000000 [--procs 1|2] [--steps 200] [--code PATH]
        [--work bench-out/tune-memory] [--limit-gb 7]

--code PATH runs another react-tune source tree (PYTHONPATH=PATH), e.g. the code before issue 14:
`git worktree add /tmp/tune-old 1854e5c` then `--code /tmp/tune-old/packages/react-tune/src`.

Figures (one JSON line appended to WORK/results.jsonl, and printed):
    peak_hwm_mb        per process (rank 0, rank 1, their DataLoader workers, torchrun's launcher): VmHWM from
                       /proc/PID/status, the kernel's peak resident set. It counts pages shared with other
                       processes (forked workers share their parent's) in full in each.
    peak_pss_total_mb  the most the whole process tree held at once: the sum of Pss (/proc/PID/smaps_rollup;
                       shared pages divided among their sharers) over every process, sampled every 0.2 s
    peak_rss_total_mb  the same with Rss (shared pages counted once per process)
A run whose tree passes --limit-gb of summed Pss is stopped and reported as such (the machine is shared).
The set's captions are the toy corpus's (≈ 1,000 distinct), so the text cache stays small: what grows with the
rows is the rows themselves, the row → caption index and the sampler's permutation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
TOY_IMAGES = 2000


def toy_corpus(work: Path) -> list[Path]:
    """TOY_IMAGES real toy images (32 px JPEGs) in tar shards, written once."""
    corpus = work / "corpus"
    if not (corpus / "toyworld.json").exists():
        from toyworld import World, write_corpus

        write_corpus(corpus, World(), TOY_IMAGES, samples_per_shard=500, image_size=32)
    return sorted(corpus.glob("*.tar"))


def base_rows(shards: list[Path]) -> pa.Table:
    """One row per toy image, located by its tar member (as tests/toy_retrieval.py does)."""
    rows = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, m in members.items():
                if name.endswith(".jpg"):
                    meta = json.loads(tar.extractfile(members[name[:-4] + ".json"]).read())
                    rows.append((meta["toy"]["shape"], meta["caption"], str(shard), m.offset_data, m.size,
                                 meta["url"], name[:-4]))
    return pa.table({k: [r[i] for r in rows] for i, k in enumerate(
        ("class_name", "caption", "image_uri", "image_offset", "image_length", "url", "key"))})


def synthetic_set(work: Path, n: int) -> Path:
    """A retrieval set of n rows tiling the toy images, with its sidecar (written from docs/manifests.md)."""
    folder = work / f"set-{n}"
    parquet = folder / "set.parquet"
    if (folder / "set.parquet.json").exists():
        return parquet
    folder.mkdir(parents=True, exist_ok=True)
    base = base_rows(toy_corpus(work))
    classes = sorted(set(base.column("class_name").to_pylist()))
    writer = None
    chunk = 1_000_000
    for lo in range(0, n, chunk):
        idx = pa.array([i % base.num_rows for i in range(lo, min(n, lo + chunk))], pa.int64())
        part = base.take(idx)
        m = len(idx)
        table = pa.table({
            "class_name": part.column("class_name"),
            "class_index": pc.index_in(part.column("class_name"), value_set=pa.array(classes)).cast(pa.int32()),
            "templates": pa.array([["a photo of a {c}."]] * m, pa.list_(pa.string())),
            "rank": pa.array(range(lo, lo + m), pa.int32()),
            "score": pa.array([0.5] * m, pa.float32()),
            "sample_id": pa.array(range(lo, lo + m), pa.int64()),
            "key": part.column("key"), "caption": part.column("caption"), "image_uri": part.column("image_uri"),
            "image_offset": part.column("image_offset"), "image_length": part.column("image_length"),
            "url": part.column("url"),
        })
        writer = writer or pq.ParquetWriter(parquet, table.schema)
        writer.write_table(table, row_group_size=256_000)
    writer.close()
    counts = pc.value_counts(pq.read_table(parquet, columns=["class_name"]).column("class_name")).to_pylist()
    count = {c["values"]: c["counts"] for c in counts}
    sha = hashlib.sha256()
    with open(parquet, "rb") as f:
        while block := f.read(1 << 24):
            sha.update(block)
    doc = {"kind": "react.retrieval", "version": 1, "id": "", "created": "2026-12-02T00:00:00+00:00",
           "producer": {"name": "tune_memory_10m", "version": "0"},
           "lineage": [{"kind": "react.index", "id": "sha256:" + "1" * 64, "uri": "/idx/manifest.json"}],
           "rows_file": "set.parquet", "rows": n, "rows_sha256": "sha256:" + sha.hexdigest(),
           "model": {"name": "react-tiny-vit", "pretrained": "/w.safetensors", "pretrained_sha256": None},
           "mode": "t2i", "k": 2, "selection": {"per": "template"}, "classes": classes,
           "templates": ["a photo of a {c}."], "counts_per_class": [count.get(c, 0) for c in classes],
           "unique_samples": n}
    body = {k: v for k, v in doc.items() if k not in ("id", "created")}
    doc["id"] = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                      ensure_ascii=False).encode()).hexdigest()
    (folder / "set.parquet.json").write_text(json.dumps(doc, indent=1))
    return parquet


def _tree(root: int) -> list[int]:
    """root and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _kb(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Monitor(threading.Thread):
    """Samples the process tree every 0.2 s: per-process VmHWM and the tree's summed Pss / Rss."""

    def __init__(self, root: int, limit_kb: int):
        super().__init__(daemon=True)
        self.root, self.limit_kb, self.stop, self.over = root, limit_kb, False, False
        self.hwm: dict[int, tuple[str, int]] = {}
        self.pss_total = self.rss_total = 0

    def run(self):
        while not self.stop:
            pss = rss = 0
            for pid in _tree(self.root):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
                    hwm = _kb(f"/proc/{pid}/status", "VmHWM")
                    p, r = _kb(f"/proc/{pid}/smaps_rollup", "Pss"), _kb(f"/proc/{pid}/smaps_rollup", "Rss")
                except (OSError, ValueError):
                    continue
                self.hwm[pid] = (cmd, max(hwm, self.hwm.get(pid, ("", 0))[1]))
                pss, rss = pss + p, rss + r
            self.pss_total, self.rss_total = max(self.pss_total, pss), max(self.rss_total, rss)
            if pss > self.limit_kb:
                self.over = True
                os.killpg(self.root, 9)
                return
            time.sleep(0.2)


def run(args) -> dict:
    work = Path(args.work)
    manifest = synthetic_set(work, args.rows)
    from toyworld.models import CONFIG_DIR, TINY, register_configs, save_random_init

    register_configs()
    weights = work / "tiny.safetensors"
    if not weights.exists():
        save_random_init(TINY, weights, seed=0)
    out = work / "runs" / f"{args.label}-{args.rows}-{args.procs}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    train = ["-m", "react_tune.cli", "train", str(manifest), "--model", TINY, "--pretrained",
             str(weights), "--model-config", str(CONFIG_DIR / f"{TINY}.json"), "--out", str(out), "--steps",
             str(args.steps), "--batch-size", "32", "--workers", "2", "--save-every", "1000", "--log-every", "50"]
    cmd = [sys.executable, *train] if args.procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.procs), "--master_port",
         "29561", *train]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if args.code:
        env["PYTHONPATH"] = args.code
    t0 = time.perf_counter()
    log = work / "runs" / f"{args.label}-{args.rows}-{args.procs}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        monitor = Monitor(proc.pid, int(args.limit_gb * 1024 * 1024))
        monitor.start()
        code = proc.wait()
        monitor.stop = True
        monitor.join()
    per_process = sorted(({"cmd": c, "peak_hwm_mb": round(k / 1024)} for c, k in monitor.hwm.values()),
                         key=lambda p: -p["peak_hwm_mb"])
    result = {"label": args.label, "rows": args.rows, "processes": args.procs, "steps": args.steps,
              "workers": 2, "exit": code, "stopped_over_limit_gb": args.limit_gb if monitor.over else None,
              "wall_s": round(time.perf_counter() - t0, 1),
              "peak_pss_total_mb": round(monitor.pss_total / 1024),
              "peak_rss_total_mb": round(monitor.rss_total / 1024),
              "largest_process_hwm_mb": per_process[0]["peak_hwm_mb"] if per_process else None,
              "per_process": per_process}
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--code", default=None, help="another react-tune src folder (PYTHONPATH)")
    parser.add_argument("--label", default="new")
    parser.add_argument("--work", default=str(ROOT / "bench-out" / "tune-memory"))
    parser.add_argument("--limit-gb", type=float, default=7.0)
    result = run(parser.parse_args())
    print(json.dumps({k: v for k, v in result.items() if k != "per_process"}))
    for p in result["per_process"]:
        print(f"  {p['peak_hwm_mb']:>7,} MB  {p['cmd']}")


if __name__ == "__main__":
    main()

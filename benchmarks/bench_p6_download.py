"""P6, downloading a URL-only retrieval set: `react-index download` vs img2dataset, same URLs, same machine, same run.

A loopback HTTP server (tests/urlserver.py, its own process, 8 ports = 8 "hosts") serves N URLs (2,000 by
default): 85 % distinct URLs of real JPEGs (512×384 photos-like noise, ~60-110 kB, 48 distinct files), 15 % dead
links (HTTP 404), every response after a 50 ms latency. Both tools resize to 256 px `keep_ratio`, JPEG quality
95, no retries (a 404 is final for both), 128 requests in flight:

    react-index download set.parquet --out OUT --image-size 256 --resize-mode keep_ratio --concurrency 128 \
        --per-host 16 --retries 0
    img2dataset --url_list urls.parquet --input_format parquet --url_col url --caption_col caption \
        --save_additional_columns '["sample_id","class_name"]' --output_format webdataset --output_folder OUT \
        --image_size 256 --resize_mode keep_ratio --processes_count 2 --thread_count 64 --retries 0 \
        --number_sample_per_shard 1000 --enable_wandb False

(urls.parquet is what `react-index query --export-urls` writes; img2dataset gets one process per core.)
Timed end to end as a user runs them (start-up included), tools alternating, ROUNDS rounds, each tool's best
round counts. images/s = images written / wall seconds (start-up included); each tool's own images/s over its
download phase is reported beside it. The survivor sets (sample ids written) must be equal: img2dataset's is read
back with `react-index attach`.

REACT_BENCH_N=quick runs 300 URLs (or REACT_BENCH_N=<number>).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import VENVS, bench_n, peer_venv, revision, tool, wait_until_quiet

IMG2DATASET = ["img2dataset==1.47.0"]
ROOT = Path(__file__).resolve().parent.parent
DEAD = 0.15
LATENCY = 0.05
PORTS = 8
IN_FLIGHT = 128
IMAGE_SIZE = 256
ROUNDS = 3
CLASSES = 20


def img2dataset_venv() -> Path:
    """bench-out/venvs/img2dataset (pinned img2dataset; its pins clash with ours), created once; a file lock
    makes concurrent test workers wait for one creation."""
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / "img2dataset.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return peer_venv("img2dataset", IMG2DATASET)


def img2dataset_env() -> dict:
    """img2dataset's environment: no update check (albumentations), no wandb, offline."""
    return os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def img2dataset_command(venv: Path, urls: Path, out: Path, image_size: int, processes: int, threads: int,
                        retries: int = 0, timeout: int = 10, per_shard: int = 1000) -> list[str]:
    return [str(venv / "bin" / "img2dataset"), "--url_list", str(urls), "--input_format", "parquet",
            "--url_col", "url", "--caption_col", "caption", "--save_additional_columns", '["sample_id","class_name"]',
            "--output_format", "webdataset", "--output_folder", str(out), "--image_size", str(image_size),
            "--resize_mode", "keep_ratio", "--processes_count", str(processes), "--thread_count", str(threads),
            "--retries", str(retries), "--timeout", str(timeout), "--number_sample_per_shard", str(per_shard),
            "--enable_wandb", "False"]


def make_images(folder: Path, n: int = 48) -> list[str]:
    """Photo-sized JPEGs whose content is smooth noise (decoding and resizing cost what real photos cost)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        low = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((512, 384), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 12, (384, 512, 3))
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        names.append(f"p{i:02d}.jpg")
        (folder / names[-1]).write_bytes(buf.getvalue())
    return names


def write_url_set(path: Path, urls: list[str], classes: list[str]) -> None:
    """A URL-only retrieval set (rows + sidecar) over `urls`, rows spread over `classes`."""
    from react_index.manifest import write_retrieval_manifest

    n = len(urls)
    cls = np.arange(n) % len(classes)
    table = pa.table({
        "class_name": [classes[c] for c in cls], "class_index": pa.array(cls, pa.int32()),
        "templates": [["a photo of a {c}."]] * n, "rank": pa.array(np.arange(n) // len(classes), pa.int32()),
        "score": pa.array(np.linspace(0.9, 0.1, n), pa.float32()), "sample_id": pa.array(np.arange(n), pa.int64()),
        "key": [f"{i:09d}" for i in range(n)], "caption": [f"a photo of a {classes[c]}" for c in cls],
        "image_uri": pa.nulls(n, pa.string()), "image_offset": pa.nulls(n, pa.int64()),
        "image_length": pa.nulls(n, pa.int64()), "url": urls})
    table = table.sort_by([("class_index", "ascending"), ("rank", "ascending")])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    write_retrieval_manifest(str(path), {
        "model": {"name": "ViT-B-32", "pretrained": "", "pretrained_sha256": None}, "mode": "t2i", "k": n,
        "selection": {"per": "template"}, "classes": classes, "templates": ["a photo of a {c}."],
        "counts_per_class": np.bincount(cls, minlength=len(classes)).tolist(), "unique_samples": n}, [])


class Server:
    """tests/urlserver.py in its own process (its CPU is not the measured tools')."""

    def __init__(self, images: Path, latency: float, ports: int):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "urlserver.py"), str(images),
                                      "--latency", str(latency), "--ports", str(ports)],
                                     stdout=subprocess.PIPE, text=True)
        self.ports = json.loads(self.proc.stdout.readline())["ports"]

    def url(self, i: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}{path}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _timed(cmd: list[str], log: Path, env=None) -> float:
    wait_until_quiet(120)
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if code:
        raise RuntimeError(f"exit status {code}: {' '.join(cmd)} (log: {log})")
    return wall


def run(out_dir: Path) -> dict:
    n = bench_n(2000, 300)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    venv = img2dataset_venv()
    names = make_images(out_dir / "images")
    server = Server(out_dir / "images", LATENCY, PORTS)
    try:
        rng = np.random.default_rng(1)
        dead = rng.random(n) < DEAD
        urls = [server.url(i, f"/status/404/x?n={i}" if dead[i] else f"/img/{names[i % len(names)]}?n={i}")
                for i in range(n)]
        classes = [f"class{c:02d}" for c in range(CLASSES)]
        write_url_set(out_dir / "set" / "set.parquet", urls, classes)
        from react_index.attach import export_url_list

        export_url_list(pq.read_table(out_dir / "set" / "set.parquet"), str(out_dir / "set" / "urls.parquet"))
        ours_cmd = [tool("react-index"), "download", str(out_dir / "set" / "set.parquet"), "--out",
                    str(out_dir / "ours"), "--image-size", str(IMAGE_SIZE), "--resize-mode", "keep_ratio",
                    "--concurrency", str(IN_FLIGHT), "--per-host", str(IN_FLIGHT // PORTS), "--retries", "0"]
        processes = os.cpu_count() or 2
        peer_cmd = img2dataset_command(venv, out_dir / "set" / "urls.parquet", out_dir / "peer", IMAGE_SIZE,
                                       processes, IN_FLIGHT // processes)
        walls = {"react-index": [], "img2dataset": []}
        for r in range(ROUNDS):
            for name, cmd, folder, env in (("react-index", ours_cmd, out_dir / "ours", None),
                                           ("img2dataset", peer_cmd, out_dir / "peer", img2dataset_env())):
                shutil.rmtree(folder, ignore_errors=True)
                walls[name].append(_timed(cmd, out_dir / f"{name}.round{r}.log", env))
    finally:
        server.stop()
    ours = json.loads((out_dir / "ours" / "set.parquet.json").read_text())
    attach_cmd = [tool("react-index"), "attach", str(out_dir / "set" / "set.parquet"), str(out_dir / "peer"),
                  "--out", str(out_dir / "peer" / "attached.parquet")]
    subprocess.run(attach_cmd, check=True, capture_output=True)
    peer = json.loads((out_dir / "peer" / "attached.parquet.json").read_text())
    ours_ids = set(pq.read_table(out_dir / "ours" / "set.parquet", columns=["sample_id"]).column(0).to_pylist())
    peer_ids = set(pq.read_table(out_dir / "peer" / "attached.parquet", columns=["sample_id"]).column(0).to_pylist())
    best = {k: min(v) for k, v in walls.items()}
    best_round = {k: int(np.argmin(v)) for k, v in walls.items()}
    # each tool's own rate over its download phase (start-up excluded), in images written per second:
    # img2dataset's "images per sec" counts every URL tried, so it is scaled by its success share
    patterns = {"img2dataset": r"total .*success: ([\d.]+) .*images per sec: ([\d.]+)"}
    reported = {}
    for name in walls:
        log = (out_dir / f"{name}.round{best_round[name]}.log").read_text(errors="replace")
        if name == "react-index":
            found = [(1.0, float(x)) for x in re.findall(r"([\d.]+) images/s\)", log)]
        else:
            found = [(float(a), float(b)) for a, b in re.findall(patterns[name], log)]
        reported[name] = round(found[-1][0] * found[-1][1], 1) if found else None
    rate = {"react-index": len(ours_ids) / best["react-index"], "img2dataset": len(peer_ids) / best["img2dataset"]}
    return {
        "revision": revision(), "urls": n, "dead_links": int(dead.sum()), "latency_ms": LATENCY * 1000,
        "in_flight": IN_FLIGHT, "image_size": IMAGE_SIZE, "cpus": os.cpu_count(), "rounds": ROUNDS,
        "tool_wall_s": {k: [round(w, 2) for w in v] for k, v in walls.items()},
        "images": {"react-index": len(ours_ids), "img2dataset": len(peer_ids)},
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_images_per_s": round(rate["react-index"] / rate["img2dataset"], 2),
        "self_reported_images_per_s": reported,
        "survivors_identical": ours_ids == peer_ids,
        "failures": {"react-index": ours["download"]["failures"], "img2dataset": peer["download"]["failures"]},
    }

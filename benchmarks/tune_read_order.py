"""react-tune data loading from object storage: --read-order shuffled vs grouped (issue 14), samples/s.

A local HTTP server on 127.0.0.1 serves the toy corpus's tar shards with HTTP range requests and a fixed
latency per request (default 20 ms, about an s3/gcs GET in the same region); react-tune's own dataset,
sampler and collate read a retrieval set whose image_uri are those http:// URLs through fsspec, in a
DataLoader with WORKERS workers and batches of BATCH rows, exactly as `react-tune train` does (decode and
the open_clip training transform included; no model step, so the figure is the loader's ceiling).

    python benchmarks/tune_read_order.py [--images 10000] [--latency 0.02] [--batches 40] [--workers 2]
        [--group 32] [--batch 32]

Prints one JSON line per order and appends them to bench-out/tune-read-order/results.jsonl.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


class RangeServer:
    """Files of one folder over HTTP/1.1 with Range support; every request waits `latency` seconds first and
    is counted."""

    def __init__(self, folder: Path, latency: float):
        self.folder, self.latency, self.requests = folder, latency, 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                with server.lock:
                    server.requests += 1
                time.sleep(server.latency)
                path = server.folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                size = path.stat().st_size
                start, end = 0, size - 1
                ranged = self.headers.get("Range", "").startswith("bytes=")
                if ranged:
                    a, b = self.headers["Range"][6:].split("-")
                    start, end = int(a), min(int(b) if b else size - 1, size - 1)
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                return path, start, end

            def do_HEAD(self):
                self._body()

            def do_GET(self):
                found = self._body()
                if found:
                    path, start, end = found
                    with open(path, "rb") as f:
                        f.seek(start)
                        self.wfile.write(f.read(end - start + 1))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def corpus(work: Path, images: int) -> list[Path]:
    folder = work / f"corpus-{images}"
    if not (folder / "toyworld.json").exists():
        from toyworld import World, write_corpus

        write_corpus(folder, World(), images, samples_per_shard=1000, image_size=64)
    return sorted(folder.glob("*.tar"))


def http_set(work: Path, shards: list[Path], port: int) -> Path:
    """A retrieval set over the shards, each image once, its image_uri the shard's http:// URL."""
    from manifest_cases import write_retrieval_fixture
    from toy_retrieval import toy_rows

    rows = toy_rows(shards)
    uris = [f"http://127.0.0.1:{port}/{Path(u).name}" for u in rows.column("image_uri").to_pylist()]
    rows = rows.set_column(rows.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    return write_retrieval_fixture(work / f"set-{port}", rows)


def loader_rate(manifest: Path, order: str, args) -> dict:
    """Samples/s of react-tune's DataLoader over `manifest` with one read order (first batches untimed)."""
    from torch.utils.data import DataLoader

    from react_tune.data import EpochSampler, RetrievalImages, collate, load_rows
    from react_tune.model import load_base
    from toyworld.models import TINY, register_configs

    register_configs()
    _, preprocess, *_ = load_base(TINY, None)
    _, rows = load_rows(str(manifest))
    grouped = order == "grouped"
    sampler = EpochSampler(len(rows), 0, 0, 0, 0, 1, args.batch, epochs=None,
                           location=rows.location_order() if grouped else None, group=args.group)
    loader = DataLoader(RetrievalImages(rows, preprocess, 0, coalesce=grouped), batch_size=args.batch,
                        sampler=sampler, num_workers=args.workers, collate_fn=collate, drop_last=True)
    batches = iter(loader)
    for _ in range(2 * args.workers):  # workers started, first requests made
        next(batches)
    t0, samples, bad = time.perf_counter(), 0, 0
    for _ in range(args.batches):
        _, row_ids, skipped = next(batches)
        samples, bad = samples + len(row_ids), bad + len(skipped)
    seconds = time.perf_counter() - t0
    del batches, loader
    return {"order": order, "samples": samples, "unreadable": bad, "seconds": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--work", default=str(ROOT / "bench-out" / "tune-read-order"))
    args = parser.parse_args()
    work = Path(args.work)
    shards = corpus(work, args.images)
    server = RangeServer(shards[0].parent, args.latency)
    manifest = http_set(work, shards, server.port)
    sizes = [tarfile.open(s).getmembers()[0].size for s in shards[:1]]
    for order in ("shuffled", "grouped"):
        server.requests = 0
        result = loader_rate(manifest, order, args) | {
            "latency_s": args.latency, "workers": args.workers, "batch": args.batch, "group": args.group,
            "images": args.images, "requests": server.requests, "cpus": os.cpu_count(),
            "first_member_bytes": sizes[0]}
        print(json.dumps(result), flush=True)
        with open(work / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

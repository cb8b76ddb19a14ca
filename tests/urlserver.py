"""A real HTTP server on 127.0.0.1 for download tests and the download benchmark: it serves images and the ways
the web fails, and counts the requests it gets per path.

Paths (NAME is any name the server was given an image for; a query string is ignored but makes URLs distinct):
    /img/NAME               the image
    /status/CODE/NAME       that HTTP status (404, 410, 500, …), no body
    /flaky/N/NAME           500 for the first N requests of this path, then the image
    /down/NAME              500 while `server.down` is True, then the image (a host that comes back)
    /slow/SECONDS/NAME      the image after SECONDS (a timeout)
    /redirect/NAME          302 to /img/NAME
    /text/NAME              200 with an HTML page (not an image)
    /truncated/NAME         Content-Length of the whole image, half of it sent, then the connection closed
    /huge/NAME              Content-Length of 64 MiB (too large), nothing sent
    /stream/BYTES/NAME      BYTES of junk with no Content-Length (a body that must be cut off while read)
Every response waits `latency` seconds first. `refused_url()` names a port nothing listens on.

    python tests/urlserver.py IMAGES_DIR [--latency 0.05] [--ports 8]   serves IMAGES_DIR/*.jpg on N ports
    (prints the ports as JSON on its first line; each port is a separate "host" for per-host limits)
"""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path


class UrlServer:
    def __init__(self, images: dict[str, bytes], latency: float = 0.0, ports: int = 1):
        self.images, self.latency = images, latency
        self.counts: Counter = Counter()
        self.down = True
        self._lock = threading.Lock()
        self._servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler()) for _ in range(ports)]
        for s in self._servers:
            s.daemon_threads = True
        self.ports = [s.server_address[1] for s in self._servers]
        self._threads = []

    def url(self, path: str, port: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[port % len(self.ports)]}{path}"

    @staticmethod
    def refused_url(path: str = "/img/x") -> str:
        with socket.socket() as s:  # a port that was free a moment ago, now closed: connecting is refused
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    def requests(self, prefix: str = "") -> int:
        with self._lock:
            return sum(n for p, n in self.counts.items() if p.startswith(prefix))

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()

    def start(self) -> UrlServer:
        for s in self._servers:
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", headers=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with server._lock:
                    server.counts[self.path] += 1
                    seen = server.counts[self.path]
                if server.latency:
                    time.sleep(server.latency)
                parts = self.path.split("?", 1)[0].strip("/").split("/")  # a query string only makes URLs distinct
                kind, name = parts[0], parts[-1]
                image = server.images.get(name)
                try:
                    if kind == "img" and image is not None:
                        self._send(200, image)
                    elif kind == "status":
                        self._send(int(parts[1]), ctype="text/plain")
                    elif kind == "flaky" and image is not None:
                        self._send(500, ctype="text/plain") if seen <= int(parts[1]) else self._send(200, image)
                    elif kind == "down" and image is not None:
                        self._send(500, ctype="text/plain") if server.down else self._send(200, image)
                    elif kind == "slow" and image is not None:
                        time.sleep(float(parts[1]))
                        self._send(200, image)
                    elif kind == "redirect" and image is not None:
                        self._send(302, ctype="text/plain", headers=[("Location", f"/img/{name}")])
                    elif kind == "text":
                        self._send(200, b"<!doctype html><title>gone</title><p>This image is no longer here.",
                                   "text/html")
                    elif kind == "truncated" and image is not None:
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Content-Length", str(len(image)))
                        self.end_headers()
                        self.wfile.write(image[: len(image) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif kind == "huge":
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Content-Length", str(64 << 20))
                        self.end_headers()
                        self.close_connection = True
                    elif kind == "stream":
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.close_connection = True
                        left = int(parts[1])
                        while left > 0:
                            self.wfile.write(b"\0" * min(left, 1 << 16))
                            left -= 1 << 16
                    else:
                        self._send(404, ctype="text/plain")
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout, too large)
                    self.close_connection = True

        return Handler


def main(argv: list[str]) -> int:
    """Serve a folder of images until killed (the benchmark runs the server in its own process)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--ports", type=int, default=1)
    args = parser.parse_args(argv)
    images = {p.name: p.read_bytes() for p in Path(args.images).iterdir() if p.is_file()}
    server = UrlServer(images, args.latency, args.ports).start()
    print(json.dumps({"ports": server.ports}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

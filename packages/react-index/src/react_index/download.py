"""`react-index download`: a retrieval set whose rows are known only by URL → webdataset shards of verified
images + a new retrieval set pointing at them (and `materialize --download`, which is the same code).

How it fetches (asyncio + aiohttp, the library fsspec's own HTTP backend is built on):
- up to `concurrency` requests in flight, at most `per_host` of them to one host (politeness);
- each request bounded by `timeout` seconds (connect, send, read: the whole request);
- transient failures (HTTP 5xx / 408 / 425 / 429, timeouts, refused or reset connections, truncated bodies) are
  retried `retries` times with exponential backoff (and Retry-After, up to a minute); permanent ones (other 4xx,
  a body that is not an image, too large, a bad URL, an unknown host, too many redirects) are not;
- every body is decoded in full before it is written (Pillow, in a thread pool), optionally resized as
  img2dataset does it (`keep_ratio`: shorter side = image_size; `center_crop`: then the centre square;
  `border`: longer side = image_size, padded white to a square) and re-encoded.

Failures are never fatal: each is counted per reason (`http_404`, `timeout`, `refused`, `not_an_image`, …)
and per class, recorded in the new manifest and printed. Only a run that keeps no row at all fails.

Layout: the distinct samples of the set, in sample-id order, `samples_per_shard` to a shard:
`OUT/{s:05d}.tar` holds `{sample_id:012d}.{jpg|png|webp|gif}` + `.txt` (caption) + `.json` per kept sample
(uncompressed tar: a ranged read of a member returns the file), and `OUT/{s:05d}.status.parquet` one row per
sample of the shard (outcome, reason, permanent, attempts, member offset/length). Samples sharing a URL are
fetched once; their rows point at the same member. Rows whose sample already has bytes (a tar member or a file)
are copied as `materialize` does, byte for byte.

Resume: a shard whose status file exists is done; a rerun refetches only its samples that failed transiently
(and, with `retry_failed`, the permanent failures too). The shard is rewritten with its old members first, in
the same order, so their offsets do not move.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import random
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from . import __version__
from ._imagerows import MAX_PIXELS, CorruptImage, MissingImage, decode_rgb, read_image_bytes
from ._manifests import UserError, join, require, write_bytes_atomic, write_parquet_atomic
from .manifest import lineage_entry, read_retrieval_manifest, write_retrieval_manifest
from .survival import DEFAULT_MIN_SURVIVAL, failures_per_class, summary_lines, survival

INSTALL = "pip install 'react-index[download]'"
RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border")
ENCODE_FORMATS = ("jpg", "png", "webp")
KEPT_FORMATS = ("jpg", "png", "webp", "gif")  # written as they came when not resized
MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))
USER_AGENT = (f"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 "
              f"(compatible; react-index/{__version__})")
TRANSIENT = {"timeout", "refused", "reset", "truncated", "connect_error", "client_error", "missing_image"}
# permanent: http_4xx (but 408/425/429), not_an_image, corrupt_image, too_large, dns, ssl, bad_url,
# too_many_redirects, bad_response
TRANSIENT_STATUS = {408, 425, 429}
STATUS_SCHEMA = pa.schema([
    pa.field("sample_id", pa.int64()), pa.field("url", pa.string()),
    pa.field("outcome", pa.string()),  # downloaded | copied | failed
    pa.field("reason", pa.string()), pa.field("permanent", pa.bool_()), pa.field("attempts", pa.int32()),
    pa.field("offset", pa.int64()), pa.field("length", pa.int64()),
    pa.field("width", pa.int32()), pa.field("height", pa.int32()),
])


def image_extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in MAGIC if data.startswith(magic)), "img")


def transient(reason: str) -> bool:
    """Whether a failure may go away by itself (retried now, and by a rerun)."""
    if reason.startswith("http_") and reason[5:].isdigit():
        code = int(reason[5:])
        return code >= 500 or code in TRANSIENT_STATUS
    return reason in TRANSIENT


@dataclass(frozen=True)
class DownloadOptions:
    """How `download` fetches (the options of `react-index download`, same names and defaults)."""

    concurrency: int = 64  # requests in flight: a laptop; 256-1024 on a cluster node with a fast link
    per_host: int = 8  # requests in flight to one host
    timeout: float = 10.0  # seconds per request
    retries: int = 2  # extra tries after a transient failure
    backoff: float = 1.0  # seconds before the first retry, doubled each time (±50 % jitter)
    max_bytes: int = 32 << 20  # a larger body is refused (too_large)
    image_size: int | None = None
    resize_mode: str = "no"
    encode_format: str = "jpg"
    quality: int = 95  # JPEG / WebP quality; PNG compression level 0-9
    samples_per_shard: int = 1000
    retry_failed: bool = False  # a rerun refetches the permanent failures too
    min_survival: float = DEFAULT_MIN_SURVIVAL
    user_agent: str = USER_AGENT
    workers: int | None = None  # decode/resize threads [default: CPU count]
    progress: bool = True

    def __post_init__(self):
        checks = [
            (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
            (self.per_host >= 1, f"--per-host must be at least 1, got {self.per_host}"),
            (self.timeout > 0, f"--timeout must be a positive number of seconds, got {self.timeout}"),
            (self.retries >= 0, f"--retries must be 0 or more, got {self.retries}"),
            (self.max_bytes > 0, f"--max-bytes must be positive, got {self.max_bytes}"),
            (self.samples_per_shard >= 1, f"--samples-per-shard must be at least 1, got {self.samples_per_shard}"),
            (self.resize_mode in RESIZE_MODES,
             f"--resize-mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}"),
            (self.encode_format in ENCODE_FORMATS,
             f"--encode-format must be one of {', '.join(ENCODE_FORMATS)}, got {self.encode_format!r}"),
            (self.resize_mode == "no" or (self.image_size or 0) >= 1,
             f"--resize-mode {self.resize_mode} needs --image-size (pixels)"),
            (0 <= self.min_survival <= 1, f"--min-survival is a share in [0, 1], got {self.min_survival}"),
            (0 <= self.quality <= 100, f"--quality must be in 0..100, got {self.quality}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def recorded(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("progress", "user_agent", "workers")}


class Rejected(Exception):
    """A body that cannot be kept; `reason` is how it is counted."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


# --- images: verify by decoding, optionally resize, encode ---------------------------------------------------

def _target(w: int, h: int, size: int, mode: str) -> tuple[int, int]:
    scale = size / (max(w, h) if mode == "border" else min(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def prepare(data: bytes, opts: DownloadOptions, where: str = "image") -> tuple[bytes, str, int, int]:
    """(bytes to write, extension, width, height) of a downloaded body, or Rejected. The image is decoded in full
    first (a truncated or corrupt file is refused); with a resize mode it is resized and re-encoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h, fmt = probe.width, probe.height, probe.format
    except Exception as e:  # Pillow does not recognise the bytes as any image format
        raise Rejected("not_an_image", f"{where}: {type(e).__name__}: {e}") from None
    if w * h > MAX_PIXELS:
        raise Rejected("too_large", f"{where}: {w}×{h} pixels")
    resize = opts.resize_mode != "no"
    try:
        if resize and fmt == "JPEG":  # libjpeg decodes at 1/2, 1/4 or 1/8 scale when that still covers the target
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", _target(w, h, opts.image_size, opts.resize_mode))
            img.load()
            img = img.convert("RGB")
        else:
            img = decode_rgb(data, where)
    except CorruptImage as e:
        raise Rejected("corrupt_image", str(e)) from None
    except Exception as e:  # a decoder error decode_rgb does not wrap (the draft path)
        raise Rejected("corrupt_image", f"{where}: {type(e).__name__}: {e}") from None
    ext = image_extension(data)
    if not resize and ext in KEPT_FORMATS:
        return data, ext, w, h
    if resize:
        img = _resize(img, opts.image_size, opts.resize_mode, (w, h))
    buf = io.BytesIO()
    if opts.encode_format == "jpg":
        img.save(buf, format="JPEG", quality=opts.quality)
    elif opts.encode_format == "png":
        img.save(buf, format="PNG", compress_level=min(opts.quality, 9))
    else:
        img.save(buf, format="WEBP", quality=opts.quality)
    return buf.getvalue(), opts.encode_format, img.width, img.height


def _resize(img, size: int, mode: str, original: tuple[int, int]):
    """img2dataset's resize modes, with its interpolation: area (Pillow's BOX) down, Lanczos up."""
    from PIL import Image

    w, h = original
    nw, nh = _target(w, h, size, mode)
    if img.size != (nw, nh):
        down = nw * nh < w * h
        img = img.resize((nw, nh), Image.Resampling.BOX if down else Image.Resampling.LANCZOS)
    if mode == "center_crop":
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif mode == "border":
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    return img


# --- shards ----------------------------------------------------------------------------------------------

def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(payload), 0o644, 0
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def image_members(tar_bytes_or_file) -> dict[int, tuple[int, int, str]]:
    """sample id -> (data offset, length, member name) of each image member of one of our shards."""
    fileobj = io.BytesIO(tar_bytes_or_file) if isinstance(tar_bytes_or_file, bytes) else tar_bytes_or_file
    out = {}
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for m in tar.getmembers():
            stem, _, ext = m.name.partition(".")
            if ext not in ("txt", "json") and stem.isdigit():
                out[int(stem)] = (m.offset_data, m.size, m.name)
    return out


def _sample_members(unit: dict, data: bytes, ext: str, extra: dict) -> list[tuple[str, bytes]]:
    stem = f"{unit['sample_id']:012d}"
    meta = {k: unit.get(k) for k in ("sample_id", "key", "caption", "url", "image_uri", "class_name", "score")} | extra
    return [(f"{stem}.{ext}", data), (f"{stem}.txt", (unit.get("caption") or "").encode()),
            (f"{stem}.json", json.dumps(meta, default=str).encode())]


def _status_row(unit: dict, outcome: str, reason: str | None = None, permanent: bool = False, attempts: int = 0,
                width: int | None = None, height: int | None = None) -> dict:
    return {"sample_id": unit["sample_id"], "url": unit.get("url"), "outcome": outcome, "reason": reason,
            "permanent": permanent, "attempts": attempts, "offset": None, "length": None, "width": width,
            "height": height}


# --- fetching ----------------------------------------------------------------------------------------------

def _connect_reason(aiohttp, e) -> tuple[str, bool]:
    import socket

    dns_error = getattr(aiohttp, "ClientConnectorDNSError", ())
    os_error = getattr(e, "os_error", None)
    if (dns_error and isinstance(e, dns_error)) or isinstance(os_error, socket.gaierror):
        return "dns", True
    if isinstance(e, (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError)):
        return "ssl", True
    if isinstance(os_error, ConnectionRefusedError) or "refused" in str(e).lower():
        return "refused", False
    return "connect_error", False


def _raise_open_files_limit(wanted: int) -> None:
    """Each request in flight holds a socket; a soft limit of 1,024 open files would turn into connect errors."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else
                                                        min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep what there is
        pass


class Fetcher:
    """Concurrent GETs with a global and a per-host limit, a timeout per request, retries with backoff."""

    def __init__(self, aiohttp, opts: DownloadOptions):
        import yarl  # aiohttp's URL type (one of its dependencies)

        self.aiohttp, self.yarl, self.opts = aiohttp, yarl, opts
        self.slots = asyncio.Semaphore(opts.concurrency)
        self.hosts: dict[tuple, asyncio.Semaphore] = {}
        _raise_open_files_limit(4 * opts.concurrency + 256)
        # in-flight requests are bounded by the semaphores; idle keep-alive sockets close after 5 s, so sockets
        # to thousands of distinct hosts do not pile up
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=5)
        self.session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": opts.user_agent},
                                             timeout=aiohttp.ClientTimeout(total=opts.timeout))
        self.requests = 0

    async def close(self):
        await self.session.close()

    async def get(self, url: str | None) -> tuple[bytes | None, str | None, bool, int]:
        """(body, failure reason, permanent, attempts)."""
        try:
            parsed = self.yarl.URL(url or "")
            host = (parsed.scheme, parsed.host, parsed.port)
        except (ValueError, TypeError, UnicodeError):
            return None, "bad_url", True, 0
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return None, "bad_url", True, 0
        limit = self.hosts.setdefault(host, asyncio.Semaphore(self.opts.per_host))
        attempts, reason, permanent, wait = 0, None, True, None
        for attempt in range(self.opts.retries + 1):
            if attempt:
                delay = self.opts.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                await asyncio.sleep(max(delay, wait or 0.0))
            attempts += 1
            async with limit, self.slots:
                self.requests += 1
                data, reason, permanent, wait = await self._once(parsed)
            if data is not None or permanent:
                break
        return data, reason, permanent, attempts

    async def _once(self, url) -> tuple[bytes | None, str | None, bool, float | None]:
        aiohttp, opts = self.aiohttp, self.opts
        try:
            async with self.session.get(url, allow_redirects=True, max_redirects=10) as r:
                if not 200 <= r.status < 300:
                    wait = r.headers.get("Retry-After", "")
                    wait = min(float(wait), 60.0) if wait.isdigit() else None
                    return None, f"http_{r.status}", not transient(f"http_{r.status}"), wait
                if r.content_length is not None and r.content_length > opts.max_bytes:
                    return None, "too_large", True, None
                body = bytearray()
                async for chunk in r.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > opts.max_bytes:
                        return None, "too_large", True, None
                return bytes(body), None, False, None
        except asyncio.TimeoutError:
            return None, "timeout", False, None
        except aiohttp.TooManyRedirects:
            return None, "too_many_redirects", True, None
        except aiohttp.ClientConnectorError as e:
            reason, permanent = _connect_reason(aiohttp, e)
            return None, reason, permanent, None
        except aiohttp.ClientPayloadError:
            return None, "truncated", False, None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError):
            return None, "reset", False, None
        except aiohttp.InvalidURL:
            return None, "bad_url", True, None
        except aiohttp.ClientResponseError:  # a malformed response (bad status line or headers)
            return None, "bad_response", True, None
        except aiohttp.ClientError:
            return None, "client_error", False, None


# --- the run -------------------------------------------------------------------------------------------------

def _units(table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """(one row per download unit sorted by sample id, distinct sample ids, the unit sample id of each of them).

    A unit is a distinct sample with bytes, or the first (lowest) sample id of each distinct URL of the
    URL-only samples: samples sharing a URL are fetched once."""
    ids = np.asarray(table.column("sample_id"))
    unique, first = np.unique(ids, return_index=True)
    samples = table.take(pa.array(first))
    canonical = unique.copy()
    url_only = np.asarray(pc.is_null(samples.column("image_uri")))
    if url_only.any():
        where = np.flatnonzero(url_only)
        urls = samples.column("url").combine_chunks().take(pa.array(where))
        codes = np.asarray(pc.fill_null(urls.dictionary_encode().indices, -1), np.int64)
        _, first_of_code, inverse = np.unique(codes, return_index=True, return_inverse=True)
        canonical[where] = unique[where[first_of_code[inverse]]]
        canonical[where[codes < 0]] = unique[where[codes < 0]]  # rows with no url at all stay their own unit
    is_unit = canonical == unique
    return samples.filter(pa.array(is_unit)), unique, canonical


class Run:
    def __init__(self, aiohttp, units: pa.Table, out_dir: str, opts: DownloadOptions):
        self.aiohttp, self.units, self.out_dir, self.opts = aiohttp, units, out_dir, opts
        self.n_shards = max(1, math.ceil(units.num_rows / opts.samples_per_shard)) if units.num_rows else 0
        self.pool = ThreadPoolExecutor(opts.workers or os.cpu_count() or 2)
        self.failed: Counter = Counter()
        self.fresh = Counter()  # outcomes of this run's work (not of reused shards)
        self.bar = None
        self.fetcher: Fetcher | None = None

    def shard_units(self, s: int) -> list[dict]:
        n = self.opts.samples_per_shard
        return self.units.slice(s * n, n).to_pylist()

    def paths(self, s: int) -> tuple[str, str]:
        return join(self.out_dir, f"{s:05d}.tar"), join(self.out_dir, f"{s:05d}.status.parquet")

    async def run(self) -> list[pa.Table]:
        self.fetcher = Fetcher(self.aiohttp, self.opts) if self.aiohttp is not None else None
        # shards in flight: enough that one shard's slow tail (timeouts, retries) leaves the others busy;
        # bounded because a shard's images are held in memory until it is written
        window = asyncio.Semaphore(max(4, math.ceil(4 * self.opts.concurrency / self.opts.samples_per_shard)))

        async def one(s):
            async with window:
                return await self.shard(s)
        try:
            return list(await asyncio.gather(*(one(s) for s in range(self.n_shards))))
        finally:
            if self.fetcher is not None:
                await self.fetcher.close()

    def _tick(self, failed_reason: str | None = None):
        if failed_reason:
            self.failed[failed_reason] += 1
        if self.bar is not None:
            self.bar.update(1)
            if failed_reason:
                self.bar.set_postfix(failed=sum(self.failed.values()), refresh=False)

    async def shard(self, s: int) -> pa.Table:
        loop = asyncio.get_running_loop()
        units = self.shard_units(s)
        previous, old, complete = await loop.run_in_executor(self.pool, self.previous, s, units)
        statuses = {}
        todo = []
        for u in units:
            p = previous.get(u["sample_id"])
            if p is not None and p["outcome"] in ("downloaded", "copied") and u["sample_id"] in old:
                statuses[u["sample_id"]] = p
            elif p is not None and p["outcome"] == "failed" and p["permanent"] and not self.opts.retry_failed:
                statuses[u["sample_id"]] = p
            else:
                todo.append(u)
        if not todo and complete:
            if self.bar is not None:
                self.bar.update(len(units))
            for p in previous.values():
                if p["outcome"] == "failed":
                    self.failed[p["reason"]] += 1
            return pa.Table.from_pylist([previous[u["sample_id"]] for u in units], STATUS_SCHEMA)
        for p in statuses.values():
            if p["outcome"] == "failed":
                self._tick(p["reason"])
            elif self.bar is not None:
                self.bar.update(1)
        results = await asyncio.gather(*(self.fetch(u) for u in todo))
        return await loop.run_in_executor(self.pool, self.write, s, units, statuses, old, results)

    def previous(self, s: int, units: list[dict]) -> tuple[dict, dict, bool]:
        """(status row per sample id from an earlier run, image members of the existing tar, whether the shard
        was finished: its status file exists)."""
        tar_uri, status_uri = self.paths(s)
        fs, tar_path = fsspec.core.url_to_fs(tar_uri)
        has_tar = fs.exists(tar_path)
        status_fs, status_path = fsspec.core.url_to_fs(status_uri)
        if status_fs.exists(status_path):
            with status_fs.open(status_path, "rb") as f:
                rows = pq.read_table(f).to_pylist()
            previous = {r["sample_id"]: r for r in rows}
            if set(previous) != {u["sample_id"] for u in units}:
                raise UserError(f"{status_uri}: this shard holds other samples than shard {s} of this retrieval set "
                                f"(another set, or another --samples-per-shard, was downloaded into "
                                f"{self.out_dir}); download into a new --out folder")
            kept = {sid: (r["offset"], r["length"], None) for sid, r in previous.items() if r["outcome"] != "failed"}
            again = any(r["outcome"] == "failed" and (self.opts.retry_failed or not r["permanent"]) for r in rows)
            if has_tar and not again and all(v[0] is not None for v in kept.values()):
                return previous, kept, True  # finished, nothing to refetch: the tar is not even read
        else:  # none, or a run killed between writing the tar and its status: the tar's members are kept
            previous = None
        old = {}
        if has_tar:
            with fs.open(tar_path, "rb") as f:
                old = image_members(f)
        if previous is None:
            return {u["sample_id"]: _status_row(u, "downloaded") for u in units if u["sample_id"] in old}, old, False
        return previous, old, True

    async def fetch(self, unit: dict) -> tuple[dict, list[tuple[str, bytes]] | None]:
        """(status row, tar members or None) of one unit."""
        loop = asyncio.get_running_loop()
        if unit["image_uri"] is not None:  # the bytes are already somewhere: copied as they are
            try:
                data = await loop.run_in_executor(self.pool, read_image_bytes, unit["image_uri"],
                                                  unit["image_offset"], unit["image_length"])
            except MissingImage:
                self._tick("missing_image")
                return _status_row(unit, "failed", "missing_image", False, 1), None
            self.fresh["copied"] += 1
            self._tick()
            return _status_row(unit, "copied", attempts=1), _sample_members(unit, data, image_extension(data), {})
        data, reason, permanent, attempts = await self.fetcher.get(unit["url"])
        if data is not None:
            try:
                data, ext, w, h = await loop.run_in_executor(self.pool, prepare, data, self.opts, unit["url"])
            except Rejected as e:
                reason, permanent = e.reason, True
        if reason is not None:
            self._tick(reason)
            return _status_row(unit, "failed", reason, permanent, attempts), None
        self.fresh["downloaded"] += 1
        self._tick()
        return (_status_row(unit, "downloaded", attempts=attempts, width=w, height=h),
                _sample_members(unit, data, ext, {"width": w, "height": h}))

    def write(self, s: int, units: list[dict], statuses: dict, old: dict, results) -> pa.Table:
        """Rewrite shard `s`: kept members first in their old order (their offsets do not move), then the new ones;
        then its status file (the shard's completion mark)."""
        tar_uri, status_uri = self.paths(s)
        members = []
        kept = [sid for sid, (off, _, _) in sorted(old.items(), key=lambda kv: kv[1][0])
                if sid in statuses and statuses[sid]["outcome"] != "failed"]
        if kept:
            fs, tar_path = fsspec.core.url_to_fs(tar_uri)
            with fs.open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                by_name = {m.name: m for m in tar.getmembers()}
                for sid in kept:
                    stem = f"{sid:012d}"
                    for name in (old[sid][2], f"{stem}.txt", f"{stem}.json"):
                        if name in by_name:
                            members.append((name, tar.extractfile(by_name[name]).read()))
        for status, new_members in results:
            statuses[status["sample_id"]] = status
            if new_members:
                members += new_members
        data = _tar(members)
        write_bytes_atomic(tar_uri, data)
        located = image_members(data)
        rows = []
        for u in units:
            row = dict(statuses[u["sample_id"]])
            if row["outcome"] != "failed":
                row["offset"], row["length"], _ = located[u["sample_id"]]
            rows.append({f.name: row.get(f.name) for f in STATUS_SCHEMA})
        table = pa.Table.from_pylist(rows, STATUS_SCHEMA)
        write_parquet_atomic(status_uri, table)
        return table


def _run_async(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (a notebook): run in a thread
        return pool.submit(asyncio.run, coro).result()


def download(retrieval: str, out_dir: str, *, options: DownloadOptions | None = None) -> dict:
    """Fetch the images of `retrieval`'s URL-only rows into webdataset shards under `out_dir`; returns the new
    retrieval set's manifest (written to `out_dir/<name of the input rows>.parquet`). `options`: DownloadOptions
    (concurrency, timeouts, retries, resizing, …). Needs the [download] extra. `react-index download` runs this."""
    opts = options or DownloadOptions()
    doc = read_retrieval_manifest(retrieval)
    out_dir = out_dir.rstrip("/")
    rows_uri = join(out_dir, doc["rows_uri"].rsplit("/", 1)[-1])
    if fsspec.core.url_to_fs(rows_uri)[1] == fsspec.core.url_to_fs(doc["rows_uri"])[1]:
        raise UserError(f"--out {out_dir} would overwrite the input set {doc['rows_uri']}; choose another folder")
    with fsspec.open(doc["rows_uri"], "rb") as f:
        table = pq.read_table(f)
    units, unique, canonical = _units(table)
    if pc.any(pc.is_null(units.column("image_uri"))).as_py():
        aiohttp = require("aiohttp", INSTALL)
        require("PIL", INSTALL)
    else:
        aiohttp = None  # nothing to fetch: only copies
    fs, path = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(path, exist_ok=True)
    run = Run(aiohttp, units, out_dir, opts)
    started = time.perf_counter()
    with tqdm(total=units.num_rows, desc="download", unit="img", dynamic_ncols=True,
              disable=not opts.progress) as bar:
        run.bar = bar
        statuses = pa.concat_tables(_run_async(run.run())) if run.n_shards else STATUS_SCHEMA.empty_table()
    seconds = time.perf_counter() - started
    run.pool.shutdown()
    manifest = _write_set(doc, table, statuses, unique, canonical, out_dir, rows_uri, opts)
    print(_report(manifest, out_dir, rows_uri, run, seconds))
    return manifest


def _write_set(doc, table, statuses: pa.Table, unique, canonical, out_dir, rows_uri, opts) -> dict:
    """The new retrieval set: every row whose sample (or the sample sharing its URL) was kept, pointing at its
    member; the download and survival records in its manifest."""
    st = statuses.sort_by("sample_id")
    st_ids = np.asarray(st.column("sample_id"))
    outcome = np.asarray(st.column("outcome").to_pylist(), dtype=object)
    reasons = st.column("reason").to_pylist()
    ok = outcome != "failed"
    reason_names = sorted({r for r, good in zip(reasons, ok, strict=True) if not good})
    reason_code = np.array([-1 if good else reason_names.index(r) for r, good in zip(reasons, ok, strict=True)],
                           np.int64)
    shard_of = np.searchsorted(np.unique(canonical), st_ids) // opts.samples_per_shard  # units were sharded in order
    shard_uris = [join(out_dir, f"{s:05d}.tar") for s in range(int(shard_of.max(initial=-1)) + 1)]

    ids = np.asarray(table.column("sample_id"))
    at = np.searchsorted(st_ids, canonical[np.searchsorted(unique, ids)])  # each row's unit
    kept = ok[at]
    where = at[kept]
    new = table.filter(pa.array(kept))
    located = {"image_uri": pa.array([shard_uris[i] for i in shard_of[where].tolist()], pa.string()),
               "image_offset": pa.array(np.asarray(st.column("offset").fill_null(-1))[where], pa.int64()),
               "image_length": pa.array(np.asarray(st.column("length").fill_null(-1))[where], pa.int64())}
    for name, values in located.items():
        new = new.set_column(new.schema.get_field_index(name), name, values)
    classes = doc["classes"]
    class_index = np.asarray(table.column("class_index"), np.int64)
    sv = survival(classes, class_index, ids, kept, opts.min_survival)
    if new.num_rows == 0:
        failures = Counter(r for r, good in zip(reasons, ok, strict=True) if not good)
        raise UserError(f"no row of {doc['rows_uri']} could be downloaded ({table.num_rows:,} rows; failures: "
                        f"{dict(failures.most_common()) or 'none'}); the per-shard status files in {out_dir} say "
                        "why, sample by sample")
    write_parquet_atomic(rows_uri, new)
    # distinct samples by outcome: a sample sharing another's URL counts as that one did
    unit = np.searchsorted(st_ids, canonical)
    sample_outcome = outcome[unit]
    failed = sample_outcome == "failed"
    permanent = np.asarray(st.column("permanent").fill_null(False))[unit]
    first_rows = np.unique(ids, return_index=True)[1]
    url_only = np.asarray(pc.is_null(table.column("image_uri").take(pa.array(first_rows))))
    record = {"tool": f"react-index {__version__}",
              "samples": {"requested": int(url_only.sum()), "downloaded": int((sample_outcome == "downloaded").sum()),
                          "copied": int((sample_outcome == "copied").sum()), "failed": int(failed.sum()),
                          "retryable": int((failed & ~permanent).sum())},
              "failures": dict(sorted(Counter(reason_names[c] for c in reason_code[unit] if c >= 0).items())),
              "failures_per_class": failures_per_class(class_index, np.where(kept, -1, reason_code[at]), reason_names,
                                                       len(classes)),
              "options": opts.recorded()}
    body = {k: doc[k] for k in ("model", "mode", "k", "selection", "classes", "templates")}
    body |= {"counts_per_class": sv["rows_after"], "unique_samples": len(np.unique(ids[kept])),
             "download": record, "survival": sv}
    manifest = write_retrieval_manifest(rows_uri, body, [lineage_entry(doc, doc["rows_uri"] + ".json")])
    return manifest | {"rows_uri": rows_uri}


def _report(manifest: dict, out_dir: str, rows_uri: str, run: Run, seconds: float) -> str:
    fresh = run.fresh["downloaded"]
    lines = [f"{run.n_shards} shard(s) -> {out_dir}  ({run.fetcher.requests if run.fetcher else 0:,} requests this "
             f"run, {fresh:,} new images in {seconds:.1f} s" + (f", {fresh / seconds:.1f} images/s" if seconds else "")
             + ")",
             f"retrieval set -> {rows_uri}  ({manifest['rows']:,} rows, {manifest['unique_samples']:,} samples)",
             *summary_lines(manifest)]
    if manifest["download"]["samples"]["retryable"]:
        lines.append("  a rerun of the same command retries the transient failures only")
    return "\n".join(lines)


def parse_bytes(text: str | int) -> int:
    """`32M`, `1.5G`, `500k` or a plain number of bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t)
    except ValueError:
        raise UserError(f"--max-bytes: {text!r} is not a size (e.g. 32M, 1G, 500000)") from None
    return int(value * scale)

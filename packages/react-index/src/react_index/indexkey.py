"""Choosing a faiss index under a memory budget, following the faiss guidelines.

    n < 1k            Flat                                  exact
    n < 10k           HNSW32                                if it fits, else the IVF rules
    n < 100k          IVF{K},Flat   K ≈ 4·√n (4–16·√n)      vectors kept uncompressed
    if it fits        IVF{K},SQ8                            8-bit scalar codes: 4x less memory and memory
                                                            traffic than Flat; `build` re-ranks r·k candidates
                                                            exactly when that is faster at the target (measured
                                                            at 1M × 512: r = 2–4 lets nprobe drop from ~31 to
                                                            ~22, and beats SQfp16, whose codes scan slower)
    if it fits        IVF{K},SQ4                            4-bit scalar codes (d/2 bytes): at the 10M / 4 GB ratio
                                                            (1M × 512 in 400 MB) r = 8 re-ranking reaches recall@10
                                                            0.96 at nprobe 16, where OPQ128+PQ128 needs r = 16 and
                                                            trains 30× longer, and PCA256+SQ8 stays below 0.92
    otherwise         OPQ{m}_{4m},IVF{K}_HNSW32,PQ{m}x8     K = 2^16 (< 10M), 2^17 (< 100M), 2^18 (< 300M), 2^20
                      with the largest m that fits the budget; PQ codes alone cannot order close neighbours:
                      `build` tunes the exact re-ranking factor r with nprobe (rerank.py)
K never exceeds n / 39 (faiss wants ≥ 39 training points per centroid), nor the training sample that fits a
quarter of the budget / 39: fewer, well-trained lists beat many lists trained on a handful of points each.
"""

from __future__ import annotations

import math
import re

from ._manifests import UserError

HNSW_M = 32
PQ_CHOICES = (64, 48, 32, 24, 16, 8)
MIN_POINTS_PER_CENTROID = 39
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(text: str | int) -> int:
    """'4G', '512M', '1.5GB', 4294967296 -> bytes (a positive number)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)B?\s*", str(text).upper())
        if not m:
            raise UserError(f"--max-memory: cannot read memory size {text!r}; write it like 4G, 512M or 1.5GB")
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise UserError(f"--max-memory must be more than 0 bytes, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _pow2(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(x, 1))))


def ivf_lists(n: int, compressed: bool) -> int:
    """Number of inverted lists for n vectors: ≈ 4·√n for uncompressed lists, the PQ-scale rule otherwise."""
    if not compressed:
        k = _pow2(4 * math.sqrt(n))
    elif n < 10_000_000:
        k = 2**16
    elif n < 100_000_000:
        k = 2**17
    elif n < 300_000_000:
        k = 2**18
    else:
        k = 2**20
    return max(1, min(k, _pow2_floor(n // MIN_POINTS_PER_CENTROID)))


def quantizer(k: int) -> str:
    return f"IVF{k}_HNSW{HNSW_M}" if k >= 2**14 else f"IVF{k}"


def estimate_memory(key: str, n: int, d: int) -> int:
    """Approximate bytes the index needs in RAM when searched (codes, ids, quantizer, graph)."""
    total = 0
    ivf = re.search(r"IVF(\d+)(_HNSW(\d+))?", key)
    k = int(ivf.group(1)) if ivf else 0
    if ivf:
        total += k * d * 4 + (k * ivf_graph_bytes(int(ivf.group(3))) if ivf.group(3) else 0) + n * 8  # ids
    opq = re.search(r"OPQ(\d+)_(\d+)", key)
    if opq:
        total += d * int(opq.group(2)) * 4
    pq = re.search(r"PQ(\d+)x(\d+)", key)
    if pq:
        total += n * int(pq.group(1)) * int(pq.group(2)) // 8
    elif key.endswith(",SQ8"):
        total += n * d
    elif key.endswith(",SQ4"):
        total += n * ((d + 1) // 2)
    elif key.startswith("HNSW"):
        total += n * (d * 4 + ivf_graph_bytes(int(key[4:].split(",")[0] or HNSW_M)))
    elif key.endswith("Flat"):
        total += n * d * 4
    return total


def ivf_graph_bytes(m: int) -> int:
    return 2 * m * 4 + 16  # HNSW level-0 links (2M) as int32, plus per-node bookkeeping


def choose_index_key(n: int, d: int, max_memory: int) -> str:
    """The index the guidelines recommend for n vectors of width d within `max_memory` bytes."""
    budget = int(max_memory * 0.8)  # leave room for training data, add buffers and the process itself
    if n < 1_000:
        need = estimate_memory("Flat", n, d)
        if need > budget:  # too few vectors to train a compressed index: the raw vectors must fit
            raise UserError(f"--max-memory {format_bytes(max_memory)} is too small for {n:,} vectors of width {d}: "
                            f"they need {format_bytes(need)} as a Flat index (too few to train a compressed one), "
                            f"and 80% of the budget goes to the index; raise --max-memory to at least "
                            f"{format_bytes(math.ceil(need / 0.8))}")
        return "Flat"
    if n < 10_000 and estimate_memory(f"HNSW{HNSW_M}", n, d) <= budget:
        return f"HNSW{HNSW_M}"
    trainable = _pow2_floor(_training_fits(d, max_memory) // MIN_POINTS_PER_CENTROID)  # lists the sample can train
    ivf = quantizer(min(ivf_lists(n, compressed=False), trainable))
    for key in ((f"{ivf},Flat",) if n < 100_000 else ()) + (f"{ivf},SQ8", f"{ivf},SQ4"):
        if estimate_memory(key, n, d) <= budget:
            return key
    k = min(ivf_lists(n, compressed=True), trainable)
    for m in PQ_CHOICES:
        dout = min(4 * m, d - d % m)
        key = f"OPQ{m}_{dout},{quantizer(k)},PQ{m}x8"
        if estimate_memory(key, n, d) <= budget:
            return key
    raise UserError(f"no index fits {max_memory / 2**30:.2f} GiB for {n:,} vectors of width {d}: "
                    f"even OPQ8 + PQ8 needs {estimate_memory(key, n, d) / 2**30:.2f} GiB "
                    f"({format_bytes(estimate_memory(key, n, d))}, and 80% of --max-memory "
                    f"{format_bytes(max_memory)} goes to the index); raise --max-memory, or name an index with "
                    "--index-key and build it with --shards into on-disk lists")


def _pow2_floor(x: int) -> int:
    return 2 ** int(math.log2(max(x, 1)))


def _training_fits(d: int, max_memory: int) -> int:
    """Training vectors (float32) that fit the quarter of the budget set aside for them."""
    return max(1, int(max_memory * 0.25) // (d * 4))


def training_size(key: str, n: int, d: int, max_memory: int) -> int:
    """How many vectors to train on: 40 per centroid (guidelines: 30–256), and PQ needs ≥ 65,536."""
    ivf = re.search(r"IVF(\d+)", key)
    want = 40 * int(ivf.group(1)) if ivf else 0
    if "PQ" in key:
        want = max(want, 65_536)
    fits = _training_fits(d, max_memory)  # the training sample takes at most a quarter of the budget
    return min(n, want, fits) if want else 0

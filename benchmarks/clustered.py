"""Clustered, embedding-like unit vectors in the clip-retrieval layout (for benchmarks and tests).

Uniform Gaussian vectors give near-zero recall for every approximate index (all neighbours are
equally far), so benchmarks use a mixture: unit-norm cluster centres with a long-tailed size
distribution, plus per-vector noise, renormalised — close to how CLIP embeddings of a web corpus
concentrate around concepts. Text vectors are their image's vector moved along a shared "modality
gap" direction plus noise, as CLIP's image and text embeddings are.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BLOCK = 100_000


def clustered_blocks(n: int, d: int, seed: int = 0, n_clusters: int = 2000, noise: float = 0.6):
    """The vectors of `clustered` one block of BLOCK rows at a time: yields (first row, image, text), float16.
    For sizes that do not fit in memory (10M × 512)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    assign = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    gap = rng.standard_normal(d).astype(np.float32)
    gap /= np.linalg.norm(gap)
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        x = centres[assign[lo:hi]] + noise / np.sqrt(d) * rng.standard_normal((hi - lo, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t = x + 0.5 * gap + 0.5 / np.sqrt(d) * rng.standard_normal((hi - lo, d)).astype(np.float32)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        yield lo, x.astype(np.float16), t.astype(np.float16)


def clustered(n: int, d: int, seed: int = 0, n_clusters: int = 2000, noise: float = 0.6):
    """(image vectors, text vectors) as float16 arrays of shape (n, d), rows L2-normalised."""
    image = np.empty((n, d), np.float16)
    text = np.empty((n, d), np.float16)
    for lo, x, t in clustered_blocks(n, d, seed, n_clusters, noise):
        image[lo:lo + len(x)], text[lo:lo + len(t)] = x, t
    return image, text


def write_clip_retrieval_layout(folder: str, image: np.ndarray, text: np.ndarray | None = None,
                                rows_per_file: int = 250_000) -> str:
    """img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy, metadata/metadata_{i}.parquet (caption, url)."""
    for sub in ("img_emb", "text_emb", "metadata"):
        os.makedirs(f"{folder}/{sub}", exist_ok=True)
    for i, lo in enumerate(range(0, len(image), rows_per_file)):
        hi = min(len(image), lo + rows_per_file)
        np.save(f"{folder}/img_emb/img_emb_{i}.npy", image[lo:hi])
        if text is not None:
            np.save(f"{folder}/text_emb/text_emb_{i}.npy", text[lo:hi])
        pq.write_table(pa.table({"caption": [f"caption {j}" for j in range(lo, hi)],
                                 "url": [f"https://x.invalid/{j}.jpg" for j in range(lo, hi)]}),
                       f"{folder}/metadata/metadata_{i}.parquet")
    return folder

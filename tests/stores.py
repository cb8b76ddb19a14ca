"""Embedding stores for tests, made torch-free from clustered vectors (benchmarks/clustered.py)."""

from clustered import clustered, write_clip_retrieval_layout

from react_index.precomputed import ingest_precomputed

MODEL = {"name": "ViT-B-32", "pretrained": "laion400m_e32", "pretrained_sha256": None}


def make_store(root, n: int, d: int, rows_per_file: int, seed: int = 0, n_clusters: int = 200):
    """(store folder, image vectors, text vectors) for n clustered d-dim vectors."""
    image, text = clustered(n, d, seed=seed, n_clusters=n_clusters)
    src = write_clip_retrieval_layout(str(root / "precomputed"), image, text, rows_per_file)
    ingest_precomputed(src, str(root / "store"), MODEL)
    return root / "store", image, text

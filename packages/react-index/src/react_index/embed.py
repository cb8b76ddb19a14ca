"""`react-index embed`: corpus → embedding store. Torch is imported only when images must be embedded.

Precomputed embeddings (clip-retrieval / LAION layout) are ingested without torch; everything else
is embedded with open_clip by `clip_embed` (the `[clip]` extra).
"""

from __future__ import annotations

import json

import fsspec

from ._manifests import resolve_model, write_bytes_atomic
from .precomputed import ingest_precomputed
from .sources import SourceError, discover, expand_inputs, is_precomputed
from .store import finalize, shard_done

CLIP_EXTRA_HINT = "embedding images and text needs the [clip] extra: pip install 'react-index[clip]'"


def _check_same_model(out: str, record: dict) -> None:
    """A store is embedded by one model: refuse to resume it with another."""
    uri = out.rstrip("/") + "/embedding-model.json"
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            before = json.loads(f.read())
        if before != record:
            raise SourceError(f"{out}: this store was embedded with {before}, not {record}; "
                              "resume with the same --model/--pretrained or write to a new --out")
    else:
        write_bytes_atomic(uri, json.dumps(record).encode())


def embed(sources, out: str, model: str = "ViT-B-32", pretrained: str | None = None, batch_size: int = 256,
          workers: int = 4, device: str | None = None, skip_bad_shards: bool = False, image_column: str = "image",
          caption_column: str = "caption") -> dict | None:
    """Embed `sources` into the store `out`; returns its manifest (None on torchrun ranks other than 0)."""
    uris = expand_inputs(list(sources))
    precomputed = [u for u in uris if is_precomputed(u)]
    if precomputed:
        if len(uris) != 1:
            raise SourceError("give one folder of precomputed embeddings at a time, and nothing else")
        return ingest_precomputed(uris[0], out, {"name": model or "unknown", "pretrained": pretrained or "unknown",
                                                 "pretrained_sha256": None})
    shards = discover(uris)
    try:
        from . import clip_embed
    except ImportError as e:
        raise SourceError(f"{CLIP_EXTRA_HINT} ({e})") from None
    rank, world, _ = clip_embed.distributed_rank()
    record, weights = resolve_model(model, pretrained)
    if rank == 0:
        _check_same_model(out, record)
    mine = [s for i, s in enumerate(shards) if i % world == rank and not shard_done(out, s.name)]
    clip_embed.embed_shards(mine, out, model, weights, batch_size, workers, device, skip_bad_shards,
                            image_column, caption_column)
    clip_embed.barrier_if_distributed()
    if rank != 0:
        return None
    return finalize(out, [s.name for s in shards], record, uris)

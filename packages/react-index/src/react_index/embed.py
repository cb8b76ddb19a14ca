"""`react-index embed`: corpus → embedding store. Torch is imported only when images must be embedded.

Precomputed embeddings (clip-retrieval / LAION layout) are ingested without torch; everything else
is embedded with open_clip by `clip_embed` (the `[clip]` extra).
"""

from __future__ import annotations

import json
import logging

import fsspec

from ._cliopts import default_workers
from ._manifests import require, resolve_model, write_bytes_atomic
from ._openclip import check_model_name
from .precomputed import ingest_in_place, ingest_precomputed
from .sources import SourceError, discover, expand_inputs, is_precomputed
from .store import UNKNOWN, finalize, shard_done

DEFAULT_MODEL = "ViT-B-32"  # what embedding images uses when --model is not given
CLIP_INSTALL = "pip install 'react-index[clip]'"
log = logging.getLogger("react_index")


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


def precomputed_model(model: str | None, pretrained: str | None) -> dict:
    """The model record of precomputed embeddings: what the user said, and `unknown` for what they did not.

    Nothing here can tell which model made the vectors, so no default is recorded as if it were known."""
    missing = [option for option, value in (("--model", model), ("--pretrained", pretrained)) if not value]
    if missing:
        log.warning("precomputed embeddings: %s not given, so the store records the model as %r; `react-index "
                    "query` will then need --model/--pretrained or --query-embeddings. Pass the model that made "
                    "these embeddings (e.g. --model ViT-B-32 --pretrained laion400m_e32) to record it",
                    " and ".join(missing), f"{model or UNKNOWN} / {pretrained or UNKNOWN}")
    return {"name": model or UNKNOWN, "pretrained": pretrained or UNKNOWN, "pretrained_sha256": None}


def embed(sources, out: str, *, model: str | None = None, pretrained: str | None = None, batch_size: int = 256,
          workers: int | None = None, device: str | None = None, skip_bad_shards: bool = False,
          image_column: str = "image", caption_column: str = "caption", images_root: str | None = None,
          in_place: bool = False, model_config: str | None = None) -> dict | None:
    """Embed `sources` (tar shards, an img2dataset output folder, image folders, parquet files, or a folder of
    precomputed embeddings; paths, fsspec URIs, brace patterns or globs) into the store `out`; returns its manifest
    (None on torchrun ranks other than 0). `react-index embed` runs this.

    `model` defaults to ViT-B-32 for images embedded here; for precomputed embeddings it is only recorded, and
    recorded as unknown when not given. `images_root`: where the images named by precomputed metadata's
    `image_path` live (relative paths are resolved against it; paths that name no file are not locators).
    `in_place`: a precomputed folder becomes a store without copying (precomputed.ingest_in_place).
    `workers`: DataLoader worker processes decoding input shards (default min(4, CPU count)); `device`: None picks
    CUDA when present; `model_config`: an open_clip model config JSON (or folder of them) registered first."""
    if model_config:
        require("open_clip", CLIP_INSTALL).add_model_config(model_config)
    workers = default_workers() if workers is None else workers
    uris = expand_inputs(list(sources))
    precomputed = [u for u in uris if is_precomputed(u)]
    if precomputed:
        if len(uris) != 1:
            raise SourceError("give one folder of precomputed embeddings at a time, and nothing else")
        ingest = ingest_in_place if in_place else ingest_precomputed
        return ingest(uris[0], out, precomputed_model(model, pretrained), images_root)
    if in_place:
        raise SourceError("--in-place applies to a folder of precomputed embeddings (holding img_emb/): other "
                          "inputs are embedded into the store")
    if images_root:
        raise SourceError("--images-root applies to precomputed embeddings (their metadata's image_path); "
                          "other inputs carry their own image locations")
    model = model or DEFAULT_MODEL
    shards = discover(uris)
    print("react-index: importing torch and open_clip ...", flush=True)  # seconds of silence otherwise
    clip_embed = require(".clip_embed", CLIP_INSTALL, "ingest precomputed embeddings (a folder holding img_emb/) "
                         "instead", package="react_index")
    rank, world, _ = clip_embed.distributed_rank()
    record, weights = resolve_model(model, pretrained)
    check_model_name(model, weights, is_file=record["pretrained_sha256"] is not None)  # before any work
    if rank == 0:
        _check_same_model(out, record)
    mine = [s for i, s in enumerate(shards) if i % world == rank and not shard_done(out, s.name)]
    clip_embed.embed_shards(mine, out, model, weights, batch_size, workers, device, skip_bad_shards,
                            image_column, caption_column, resolved=(record, weights))
    clip_embed.barrier_if_distributed()
    if rank != 0:
        return None
    return finalize(out, [s.name for s in shards], record, uris)

"""Embed image-text corpora with open_clip (the `[clip]` extra: torch, open_clip_torch, pillow).

DataLoader workers read and decode whole input shards (worker w takes shards w, w+n, …) and
hand over preprocessed batches, so JPEG decoding runs beside the model instead of before it.
Each input shard becomes one store shard, written atomically when its last batch is embedded;
a rerun skips shards already written. Under torchrun, rank r takes every WORLD_SIZE-th shard.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from ._imagerows import CorruptImage, decode_rgb
from ._manifests import UserError
from ._openclip import create
from .sources import InputShard, SourceError, read_samples
from .store import metadata_table, write_shard

log = logging.getLogger("react_index")


def load_clip(model_name: str, pretrained: str | None, device: torch.device, resolved=None):
    """(model in eval mode on `device`, eval preprocess, tokenizer); mistakes in the name or weights are named."""
    print(f"react-index: loading {model_name} ({pretrained or 'random weights'}) with open_clip ...", flush=True)
    started = time.perf_counter()
    model, _, preprocess, tokenizer, _ = create(model_name, pretrained, resolved)
    model = model.eval().to(device)
    print(f"react-index: {model_name} loaded on {device} in {time.perf_counter() - started:.1f}s", flush=True)
    return model, preprocess, tokenizer


class ShardBatches(IterableDataset):
    """Yields preprocessed batches of whole input shards; every shard ends with one batch marked `last`."""

    def __init__(self, shards: list[InputShard], preprocess, tokenizer, batch_size: int,
                 image_column: str = "image", caption_column: str = "caption"):
        self.shards, self.preprocess, self.tokenizer = shards, preprocess, tokenizer
        self.batch_size, self.columns = batch_size, (image_column, caption_column)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for i in range(worker, len(self.shards), workers):
            yield from self._shard(i)

    def _batch(self, i, images, texts, meta, last, skipped=None):
        return {"shard": i, "last": last, "error": None, "meta": meta, "skipped": dict(skipped or {}),
                "images": torch.stack(images) if images else None,
                "tokens": self.tokenizer(texts) if texts else None}

    def _shard(self, i: int):
        shard = self.shards[i]
        skipped, images, texts, meta = Counter(), [], [], []
        try:
            for s in read_samples(shard, *self.columns):
                caption = (s["caption"] or "").strip()
                reason = "missing_image" if s["image"] is None else "empty_caption" if not caption else None
                if reason is None:
                    try:  # one decoder everywhere: 16-bit images keep their tones, bombs are refused
                        x = self.preprocess(decode_rgb(s["image"], f"{shard.uri}: sample {s['key']}"))
                    except CorruptImage as e:  # the sample is skipped, never fatal
                        reason = "corrupt_image"
                        log.warning("%s: sample %s skipped: corrupt image (%s)", shard.uri, s["key"], e)
                else:
                    log.warning("%s: sample %s skipped: %s", shard.uri, s["key"], reason.replace("_", " "))
                if reason:
                    skipped[reason] += 1
                    continue
                images.append(x)
                texts.append(caption)
                meta.append({k: v for k, v in s.items() if k != "image"} | {"caption": caption,
                                                                            "source": shard.uri})
                if len(images) == self.batch_size:
                    yield self._batch(i, images, texts, meta, last=False)
                    images, texts, meta = [], [], []
        except SourceError as e:
            yield {"shard": i, "last": True, "error": str(e)}
            return
        yield self._batch(i, images, texts, meta, last=True, skipped=skipped)


def distributed_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(device: str | None, local_rank: int) -> torch.device:
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def embed_shards(shards: list[InputShard], out: str, model_name: str, pretrained: str | None,
                 batch_size: int = 256, workers: int = 4, device: str | None = None,
                 skip_bad_shards: bool = False, image_column: str = "image", caption_column: str = "caption",
                 resolved: tuple[dict, str | None] | None = None) -> None:
    """Embed `shards` (this rank's pending ones) into the store at `out`."""
    if not shards:
        return
    _, _, local_rank = distributed_rank()
    dev = pick_device(device, local_rank)
    model, preprocess, tokenizer = load_clip(model_name, pretrained, dev, resolved)
    dim = model.visual.output_dim
    amp = torch.autocast(dev.type, dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) \
        if dev.type == "cuda" else nullcontext()
    print(f"react-index embed: {model_name} on {dev}{' with AMP' if dev.type == 'cuda' else ''}, "
          f"{len(shards)} shard(s), {min(workers, len(shards))} decoding worker(s)")
    dataset = ShardBatches(shards, preprocess, tokenizer, batch_size, image_column, caption_column)
    n_workers = min(workers, len(shards))
    loader = DataLoader(dataset, batch_size=None, num_workers=n_workers, pin_memory=dev.type == "cuda",
                        prefetch_factor=4 if n_workers else None)
    pending: dict[int, dict] = {}
    known = [s.samples for s in shards]  # known up front for image folders, parquet, img2dataset shards
    total = sum(known) if all(n is not None for n in known) else None
    bar = tqdm(total=total, desc=f"embed {len(shards)} shard(s)", unit="img", dynamic_ncols=True)
    done_shards = 0
    with torch.inference_mode():
        for item in loader:
            shard = shards[item["shard"]]
            if item["error"]:
                if not skip_bad_shards:
                    raise SourceError(f"{item['error']}; rerun with --skip-bad-shards to skip it "
                                      "(it is recorded in the store manifest)")
                log.warning("%s; skipped (--skip-bad-shards)", item["error"])
                empty = np.zeros((0, dim), np.float32)
                write_shard(out, shard.name, shard.uri, {"image": empty, "text": empty}, metadata_table([]),
                            {"unreadable_shard": 1})
                continue
            acc = pending.setdefault(item["shard"], {"image": [], "text": [], "meta": []})
            if item["meta"]:
                with amp:
                    image = model.encode_image(item["images"].to(dev, non_blocking=True))
                    text = model.encode_text(item["tokens"].to(dev, non_blocking=True))
                acc["image"].append(image.float().cpu().numpy())
                acc["text"].append(text.float().cpu().numpy())
                acc["meta"] += item["meta"]
                bar.update(len(item["meta"]))
            if item["last"]:
                embeddings = {m: np.concatenate(acc[m]) if acc[m] else np.zeros((0, dim), np.float32)
                              for m in ("image", "text")}
                write_shard(out, shard.name, shard.uri, embeddings, metadata_table(acc["meta"]), item["skipped"])
                del pending[item["shard"]]
                done_shards += 1
                bar.set_postfix_str(f"{done_shards}/{len(shards)} shards written")
    bar.close()


def barrier_if_distributed() -> None:
    """Wait for every torchrun rank (gloo works for CPU and GPU runs alike)."""
    _, world, _ = distributed_rank()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()


class QueryEncoder:
    """Encodes prompt texts and example images into normalised float32 query vectors."""

    def __init__(self, model_name: str, pretrained: str | None, device: str | None = None, batch_size: int = 256):
        self.device = pick_device(device, 0)
        self.model, self.preprocess, self.tokenizer = load_clip(model_name, pretrained, self.device)
        self.batch_size = batch_size

    def _run(self, items, encode, what: str = "queries") -> np.ndarray:
        out = []
        with torch.inference_mode():
            for lo in tqdm(range(0, len(items), self.batch_size), desc=f"encode {what}", unit="batch",
                           dynamic_ncols=True, leave=False, disable=len(items) <= self.batch_size):
                out.append(encode(items[lo:lo + self.batch_size]).float().cpu().numpy())
        x = np.concatenate(out) if out else np.zeros((0, self.model.visual.output_dim), np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def texts(self, texts: list[str]) -> np.ndarray:
        return self._run(texts, lambda batch: self.model.encode_text(self.tokenizer(batch).to(self.device)),
                         f"{len(texts):,} prompts")

    def images(self, images: list[bytes], names: list[str] | None = None) -> np.ndarray:
        """Example images (bytes; `names` say where each came from, for errors)."""
        names = names or [f"example image {j}" for j in range(len(images))]

        def decode(data: bytes, name: str):
            try:
                return decode_rgb(data, name)
            except CorruptImage as e:  # the user's own example: say which one, do not skip it silently
                raise UserError(f"{e}; replace or remove this example image") from None

        def encode(batch):
            tensors = [self.preprocess(decode(data, name)) for data, name in batch]
            return self.model.encode_image(torch.stack(tensors).to(self.device))
        return self._run(list(zip(images, names, strict=True)), encode, f"{len(images):,} example images")

"""`react-tune train`: retrieval set → gated blocks on a frozen open_clip model → checkpoint.

One readable loop: symmetric InfoNCE (open_clip's ClipLoss) with a learned temperature clamped at
ln 100; AdamW (β 0.9/0.98, eps 1e-6, no decay on biases, norms, gates, logit_scale); linear warmup
then cosine; gradient accumulation; AMP on GPU; optional gradient checkpointing of the blocks;
DDP under torchrun with features gathered across ranks; periodic, atomic, exactly resumable saves.
Captions go through the frozen text tower once (the text cache), not every step.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from .blocks import gate_values, set_gradient_checkpointing
from .checkpoint import has_state, load_state, save_state, write_checkpoint
from .data import EpochSampler, RetrievalImages, collate, load_rows, react_augmentation
from .manifest import lineage_entry
from .model import customize, load_base, optimizer_groups, parameter_counts, trainable_state
from .text_cache import cache_key, caption_features

LOGIT_SCALE_MAX = math.log(100)


@dataclass
class TrainConfig:
    manifest: str
    model: str
    pretrained: str | None
    out: str
    variant: str = "gated-image"
    k: int | None = None
    steps: int | None = None  # default: one epoch
    epochs: float | None = None
    batch_size: int = 256  # global, per optimizer step
    accum: int = 1  # micro-batches per step (each micro-batch is its own contrastive batch)
    lr: float | None = None  # default: 5e-4 gated-image, 5e-5 locked-text (REACT)
    weight_decay: float = 0.1
    warmup: int | None = None  # default: min(5000, 10 % of the steps)
    augment: str = "open_clip"  # or "react"
    workers: int = 4
    precision: str = "auto"  # auto: bf16/fp16 AMP on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    text_cache: bool = True
    cache_dir: str | None = None  # default: OUT/text-cache
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str | None = None
    resume: bool = False  # continue from OUT's latest saved state; without it, a saved state is an error


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def _distributed() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _log(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig) -> dict | None:
    """Train and write the checkpoint to `cfg.out`; returns its manifest (None on ranks other than 0)."""
    rank, world, local_rank = _distributed()
    device = torch.device(cfg.device) if cfg.device else \
        torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)
    main = rank == 0

    doc, rows = load_rows(cfg.manifest)
    model, preprocess_train, _, tokenizer, base = load_base(cfg.model, cfg.pretrained)
    blocks = customize(model, cfg.variant, cfg.k, seed=cfg.seed)
    model.to(device)
    set_gradient_checkpointing(model, cfg.grad_checkpointing)
    trainable, frozen = parameter_counts(model)
    if main:
        print(f"react-tune: {cfg.variant} on {cfg.model}: {trainable:,} trainable / {frozen:,} frozen parameters; "
              f"{len(rows['sample_id']):,} rows; {world} process(es) on {device}")

    micro = cfg.batch_size // cfg.accum  # one contrastive batch, across all ranks
    if micro % world or micro < 2:
        raise ValueError(f"batch size {cfg.batch_size} / accum {cfg.accum} must be a multiple of the "
                         f"{world} process(es) and at least 2")
    n = len(rows["sample_id"])
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{cfg.manifest}: {n} rows is less than one batch of {cfg.batch_size}")
    total = cfg.steps or max(1, round((cfg.epochs or 1) * steps_per_epoch))
    warmup = cfg.warmup if cfg.warmup is not None else min(5000, total // 10)
    peak = cfg.lr or (5e-4 if cfg.variant == "gated-image" else 5e-5)

    cache_dir = cfg.cache_dir or os.path.join(cfg.out, "text-cache")
    if cfg.text_cache:
        texts = caption_features(model, tokenizer, rows["caption"], cache_dir if main or world == 1 else None,
                                 cache_key(base, doc["id"]), device)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    transform = react_augmentation(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple)
                                   else model.visual.image_size, mean, std) if cfg.augment == "react" \
        else preprocess_train
    dataset = RetrievalImages(rows, transform, cfg.seed)

    opt = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=peak, betas=(0.9, 0.98), eps=1e-6)
    position = load_state(cfg.out, model, opt) if cfg.resume else None
    if position is None and has_state(cfg.out) and not cfg.resume:
        raise ValueError(f"{cfg.out} holds a saved training state; pass --resume to continue it, or use a new --out")
    position = position or {"step": 0, "skipped": {}}
    step = position["step"]
    skipped: dict[str, int] = dict(position.get("skipped", {}))
    if step and main:
        print(f"resuming at step {step} of {total}")
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    loss_fn = ClipLoss(local_loss=world > 1, gather_with_grad=world > 1, rank=rank, world_size=world)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = device.type == "cuda" and cfg.precision in ("auto", "amp", "bf16", "fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    log_path = os.path.join(cfg.out, "log.jsonl")
    os.makedirs(cfg.out, exist_ok=True)

    model.train()
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
    last_loss, seen, t0 = None, 0, time.perf_counter()
    epoch, in_epoch = divmod(step, steps_per_epoch)
    sampler = EpochSampler(n, cfg.seed, epoch, in_epoch * cfg.batch_size, rank, world, micro,
                           epochs=math.ceil((total - step + in_epoch) / steps_per_epoch))
    loader = DataLoader(dataset, batch_size=micro // world, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, persistent_workers=False)  # one loader for the whole run
    batches = iter(loader)
    while step < total:
        lr = lr_at(step, total, warmup, peak)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.accum):
            images, row_ids, bad = next(batches)
            skipped["corrupt_image"] = skipped.get("corrupt_image", 0) + len(bad)
            if images is None:
                continue
            with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                image_features = _encode_images(ddp, images.to(device, non_blocking=True))
                if cfg.text_cache:
                    text_features = texts[row_ids].to(device)
                else:  # the uncached path, kept to measure what the cache saves
                    with torch.no_grad():
                        tokens = tokenizer([rows["caption"][i] for i in row_ids.tolist()]).to(device)
                        text_features = model.encode_text(tokens, normalize=True)
                loss = loss_fn(image_features.float(), text_features.float(), model.logit_scale.exp())
            scaler.scale(loss / cfg.accum).backward()
            step_loss += float(loss.detach()) / cfg.accum
            seen += len(row_ids) * world
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        step, last_loss = step + 1, step_loss
        if main:
            rate = seen / (time.perf_counter() - t0)
            gates = gate_values(model)
            bar.set_postfix(loss=f"{step_loss:.3f}", samples_s=f"{rate:.0f}",
                            gate=f"{np.mean(np.abs(list(gates.values()))) if gates else 0:.3f}")
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                _log(log_path, {"step": step, "loss": step_loss, "lr": lr,
                                "logit_scale": float(model.logit_scale.detach().exp()), "samples_per_s": rate,
                                "gates": gates})
        if main and (step % cfg.save_every == 0 or step == total):
            save_state(cfg.out, step, trainable_state(model), opt, {"skipped": skipped})
        if world > 1:
            dist.barrier()
    bar.close()
    del batches, loader  # stop the loader's workers before the process group goes
    if world > 1:
        totals = torch.tensor([skipped.get("corrupt_image", 0)])
        dist.all_reduce(totals)
        skipped["corrupt_image"] = int(totals[0])
    if owns_group:  # left alive, its threads may be torn down mid-exit ("terminate called without an active exception")
        dist.destroy_process_group()
    if not main:
        return None
    training = {"steps": step, "samples_seen": step * cfg.batch_size, "final_loss": last_loss,
                "skipped": {k: v for k, v in skipped.items() if v}, "config": asdict(cfg) | {"lr": peak,
                                                                                             "warmup": warmup}}
    manifest = write_checkpoint(cfg.out, trainable_state(model), base, cfg.variant, blocks, training,
                                [lineage_entry(doc, doc["rows_uri"] + ".json")])
    print(f"checkpoint -> {cfg.out}  ({manifest['weights']['parameters']:,} parameters, final loss {last_loss:.4f})")
    return manifest


def _encode_images(model, images: torch.Tensor) -> torch.Tensor:
    """Normalised image features; a DDP-wrapped model goes through its own forward, which syncs gradients."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model(images, None)[0]
    return model.encode_image(images, normalize=True)

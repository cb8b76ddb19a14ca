"""`react-tune train`: retrieval set → gated blocks on a frozen open_clip model → checkpoint.

One readable loop: symmetric InfoNCE (open_clip's ClipLoss) with a learned temperature clamped at
ln 100; AdamW (β 0.9/0.98, eps 1e-6, no decay on biases, norms, gates, logit_scale); linear warmup
then cosine; gradient accumulation that keeps the whole contrastive batch (open_clip's --accum-freq); AMP
on GPU; optional gradient checkpointing of the blocks;
DDP under torchrun with features gathered across ranks; periodic, atomic, exactly resumable saves.
Rows whose image is missing or undecodable are skipped and counted by reason (summed over ranks); a batch
with no readable image is no optimizer step; a run stops when the unreadable share passes --max-bad-fraction.
Captions go through the frozen text tower once (the text cache), not every step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from ._cliopts import default_workers
from ._manifests import UserError
from .blocks import gate_values, set_gradient_checkpointing
from .checkpoint import has_state, load_state, save_state, write_checkpoint
from .data import READ_ORDERS, REASONS, EpochSampler, RetrievalImages, collate, load_rows, react_augmentation
from .manifest import lineage_entry
from .model import customize, load_base, optimizer_groups, parameter_counts, trainable_state
from .text_cache import cache_key, caption_features

log = logging.getLogger("react_tune")
LOGIT_SCALE_MAX = math.log(100)
ALONE = "alone_in_batch"  # a readable row whose batch had no other: no contrastive pair, not trained on
LOGGED_PER_REASON = 5  # unreadable rows logged one by one per rank and reason; the rest are counted only
FIRST_ROWS = 1000  # --max-bad-fraction is checked from this many rows read on (or the whole run, if smaller)


@dataclass(kw_only=True)
class TrainConfig:
    """Everything `react-tune train` takes; field names are the CLI's option names (docs/cli.md)."""

    retrieval: str  # the retrieval set: .parquet or its .parquet.json manifest
    model: str
    pretrained: str | None = None
    out: str
    variant: str = "gated-image"
    blocks: int | None = None  # gated blocks (default: half the image layers)
    steps: int | None = None  # default: one epoch
    epochs: float | None = None
    batch_size: int = 256  # global, per optimizer step
    accum: int = 1  # micro-batches per step; the loss is still that of the whole --batch-size
    lr: float | None = None  # default: 5e-4 gated-image, 5e-5 locked-text (REACT)
    weight_decay: float = 0.1
    warmup: int | None = None  # default: min(5000, 10 % of the steps)
    augment: str = "open_clip"  # or "react"
    workers: int = dataclass_field(default_factory=default_workers)  # min(4, CPU count)
    read_order: str = "shuffled"  # or "grouped": runs of read_group rows that are neighbours on disk
    read_group: int = 32
    precision: str = "auto"  # auto: bf16/fp16 AMP on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    text_cache: bool = True
    cache_dir: str | None = None  # default: OUT/text-cache
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str | None = None  # None or "auto": this rank's GPU if CUDA is present, else CPU
    resume: bool = False  # continue from OUT's latest saved state; without it, a saved state is an error
    max_bad_fraction: float = 0.5  # stop when more than this share of the rows read has no usable image
    templates: str | None = None  # linear-head: prompts (built-in set or file) [the retrieval manifest's]
    held_out: float = 0.1  # linear-head: share of the images kept to choose the ensemble weight


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


def check_config(cfg: TrainConfig) -> None:
    """Refuse options that would divide by zero, loop forever or silently mean something else, naming the option."""
    for field in ("steps", "batch_size", "accum", "save_every", "log_every", "blocks", "read_group"):
        value = getattr(cfg, field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"--{field.replace('_', '-')} must be a positive integer, got {value!r}")
    for field in ("warmup", "workers"):
        value = getattr(cfg, field)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise UserError(f"--{field} must be 0 or a positive integer, got {value!r}")
    for field in ("epochs", "lr"):
        value = getattr(cfg, field)
        if value is not None and not value > 0:  # also refuses NaN
            raise UserError(f"--{field} must be a positive number, got {value!r}")
    if not cfg.weight_decay >= 0:
        raise UserError(f"--weight-decay must be 0 or positive, got {cfg.weight_decay!r}")
    if not 0 <= cfg.max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction must be between 0 and 1, got {cfg.max_bad_fraction!r}")
    if cfg.steps is not None and cfg.epochs is not None:
        raise UserError("--steps and --epochs both set the run's length; give one of them")
    if cfg.read_order not in READ_ORDERS:
        raise UserError(f"--read-order must be one of {', '.join(READ_ORDERS)}, got {cfg.read_order!r}")
    if cfg.batch_size % cfg.accum:
        raise UserError(f"--batch-size {cfg.batch_size} must be a multiple of --accum {cfg.accum}")


def train(config: TrainConfig | None = None, /, **options) -> dict | None:
    """Train and write the checkpoint to `out`; returns its manifest (None on ranks other than 0).

    Either a TrainConfig, or its fields by keyword: `train(retrieval="set.parquet", model="ViT-B-32",
    pretrained="openai", out="ckpt", steps=1000)`. Under torchrun every rank calls it (RANK / WORLD_SIZE)."""
    if config is not None and options:
        raise TypeError("train() takes a TrainConfig or keyword options, not both")
    cfg = config if config is not None else TrainConfig(**options)
    check_config(cfg)
    if cfg.variant == "linear-head":  # REAL-Linear: a classifier over frozen features (linear_head.py)
        from .linear_head import train_linear_head

        return train_linear_head(cfg)
    rank, world, local_rank = _distributed()
    device = torch.device(cfg.device) if cfg.device not in (None, "auto") else \
        torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)
    main = rank == 0

    doc, rows = load_rows(cfg.retrieval)
    model, preprocess_train, _, tokenizer, base = load_base(cfg.model, cfg.pretrained)
    blocks = customize(model, cfg.variant, cfg.blocks, seed=cfg.seed)
    model.to(device)
    set_gradient_checkpointing(model, cfg.grad_checkpointing)
    trainable, frozen = parameter_counts(model)
    if main:
        print(f"react-tune: {cfg.variant} on {cfg.model}: {trainable:,} trainable / {frozen:,} frozen parameters; "
              f"{len(rows):,} rows; {world} process(es) on {device}")

    micro = cfg.batch_size // cfg.accum  # rows of one micro-batch, across all ranks
    if micro % world or cfg.batch_size < 2:
        raise UserError(f"--batch-size {cfg.batch_size} / --accum {cfg.accum} must be a multiple of the "
                        f"{world} process(es), and --batch-size at least 2")
    n = len(rows)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{cfg.retrieval}: {n} rows is less than one batch of --batch-size {cfg.batch_size}")
    total = cfg.steps or max(1, round((cfg.epochs or 1) * steps_per_epoch))
    warmup = cfg.warmup if cfg.warmup is not None else min(5000, total // 10)
    peak = cfg.lr or (5e-4 if cfg.variant == "gated-image" else 5e-5)

    cache_dir = cfg.cache_dir or os.path.join(cfg.out, "text-cache")
    if cfg.text_cache:  # one memory-mapped cache for every rank: rank 0 writes it, the others wait for it
        texts = caption_features(model, tokenizer, rows.caption_batches, cache_dir, cache_key(base, doc["id"]),
                                 device, rank)
    else:  # the uncached path, kept to measure what the cache saves: captions tokenised per batch
        texts = UncachedTexts(model, tokenizer, rows.captions(), device)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    transform = react_augmentation(size, mean, std) if cfg.augment == "react" else preprocess_train
    grouped = cfg.read_order == "grouped"
    dataset = RetrievalImages(rows, transform, cfg.seed, coalesce=grouped)

    opt = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=peak, betas=(0.9, 0.98), eps=1e-6)
    position = load_state(cfg.out, model, opt) if cfg.resume else None
    if position is None and has_state(cfg.out) and not cfg.resume:
        raise UserError(f"{cfg.out} holds a saved training state; pass --resume to continue it, or use a new --out")
    position = position or {"step": 0}
    # The loop's position, saved with every state (exact resume): optimizer steps taken, global batches drawn
    # (more than the steps when a batch had no readable image), and counts summed over all ranks.
    step = position["step"]
    drawn = position.get("batches", step)
    skipped = {r: int(position.get("skipped", {}).get(r, 0)) for r in REASONS}
    if position.get("skipped", {}).get(ALONE):
        skipped[ALONE] = int(position["skipped"][ALONE])
    rows_read = position.get("rows_read", drawn * cfg.batch_size)
    samples_seen = position.get("samples_seen", rows_read - sum(skipped.values()))
    empty_batches = position.get("empty_batches", 0)
    last_loss = position.get("loss")
    if step and main:
        print(f"resuming at step {step} of {total}")
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    loss_fn = ClipLoss()
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    use_amp = device.type == "cuda" and cfg.precision in ("auto", "amp", "bf16", "fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if use_amp else nullcontext
    log_path = os.path.join(cfg.out, "log.jsonl")
    os.makedirs(cfg.out, exist_ok=True)

    model.train()
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
    seen, t0 = 0, time.perf_counter()
    epoch, in_epoch = divmod(drawn, steps_per_epoch)
    sampler = EpochSampler(n, cfg.seed, epoch, in_epoch * cfg.batch_size, rank, world, micro, epochs=None,
                           epoch_batch=cfg.batch_size,  # without end: batches with no readable image are redrawn
                           location=rows.location_order() if grouped else None, group=cfg.read_group)
    loader = DataLoader(dataset, batch_size=micro // world, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, persistent_workers=False)  # one loader for the whole run
    batches = iter(loader)
    first_rows = min(FIRST_ROWS, total * cfg.batch_size)
    example: dict[str, str] = {}  # the first skipped row of each reason (this rank), for error messages
    logged: dict[str, int] = {}  # unreadable rows logged so far per reason (this rank)
    placeholder = torch.zeros(1, 3, *(model.visual.image_size if isinstance(model.visual.image_size, tuple)
                                      else (size, size)))
    consecutive_empty = 0
    while step < total:
        lr = lr_at(step, total, warmup, peak)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        parts, counts = [], []  # every micro-batch of the step: (images, rows) here; readable rows per rank
        for _ in range(cfg.accum):
            images, row_ids, bad = next(batches)
            _note_unreadable(bad, example, logged, rank)
            per_rank = _gather_counts(len(row_ids), [reason for _, reason, _ in bad], world, device)
            for i, reason in enumerate(REASONS, 1):
                skipped[reason] += sum(c[i] for c in per_rank)
            rows_read += sum(map(sum, per_rank))
            parts.append((images if images is not None else placeholder, row_ids))
            counts.append([c[0] for c in per_rank])
        drawn += 1
        good = sum(map(sum, counts))  # the same on every rank: each decides from the same numbers
        if good < 2:  # no contrastive pair, nothing to learn from: no optimizer step, the schedule does not move
            if good:
                skipped[ALONE] = skipped.get(ALONE, 0) + good
            empty_batches, consecutive_empty = empty_batches + 1, consecutive_empty + 1
            if cfg.max_bad_fraction < 1 and not good:
                raise _unreadable(cfg, f"no image of a whole batch of {cfg.batch_size} rows could be read "
                                       f"(batch {drawn}, before step {step + 1})", rows_read, skipped, example)
            if consecutive_empty >= steps_per_epoch:
                raise _unreadable(cfg, f"no batch had two readable images in {consecutive_empty} batches in a row "
                                       "(an epoch)", rows_read, skipped, example)
            continue
        loss = full_batch_backward(ddp, model, parts, counts, texts, rank, loss_fn, autocast, scaler, device)
        step_samples = good
        consecutive_empty = 0
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        step, last_loss = step + 1, loss
        samples_seen, seen = samples_seen + step_samples, seen + step_samples
        bad_rows = sum(skipped[r] for r in REASONS)
        if rows_read >= first_rows and bad_rows > cfg.max_bad_fraction * rows_read:
            raise _unreadable(cfg, f"more than --max-bad-fraction {cfg.max_bad_fraction:g} of the rows read could "
                                   "not be used", rows_read, skipped, example)
        if main:
            rate = seen / (time.perf_counter() - t0)
            gates = gate_values(model)
            bar.set_postfix(loss=f"{last_loss:.3f}", samples_s=f"{rate:.0f}", skipped=bad_rows,
                            gate=f"{np.mean(np.abs(list(gates.values()))) if gates else 0:.3f}")
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                _log(log_path, {"step": step, "loss": last_loss, "lr": lr,
                                "logit_scale": float(model.logit_scale.detach().exp()), "samples_per_s": rate,
                                "rows_read": rows_read, "skipped": skipped, "empty_batches": empty_batches,
                                "gates": gates})
        if main and (step % cfg.save_every == 0 or step == total):
            save_state(cfg.out, step, trainable_state(model), opt,
                       {"batches": drawn, "rows_read": rows_read, "samples_seen": samples_seen,
                        "skipped": skipped, "empty_batches": empty_batches, "loss": last_loss})
        if world > 1:
            dist.barrier()
    bar.close()
    del batches, loader  # stop the loader's workers before the process group goes
    if owns_group:  # left alive, its threads may be torn down mid-exit ("terminate called without an active exception")
        dist.destroy_process_group()
    if not main:
        return None
    training = {"steps": step, "samples_seen": samples_seen, "final_loss": last_loss, "skipped": skipped,
                "config": asdict(cfg) | {"lr": peak, "warmup": warmup}}
    manifest = write_checkpoint(cfg.out, trainable_state(model), base, cfg.variant, blocks, training,
                                [lineage_entry(doc, doc["rows_uri"] + ".json")])
    loss_text = "n/a" if last_loss is None else f"{last_loss:.4f}"
    empty = f", {empty_batches:,} batches with no readable image redrawn" if empty_batches else ""
    print(f"checkpoint -> {cfg.out}  ({manifest['weights']['parameters']:,} parameters, final loss {loss_text}; "
          f"{rows_read:,} rows read, {samples_seen:,} trained on, skipped: "
          + ", ".join(f"{v:,} {r}" for r, v in skipped.items()) + f"{empty})")
    return manifest


def full_batch_backward(ddp, model, parts, counts, texts, rank: int, loss_fn, autocast, scaler, device) -> float:
    """Accumulate the gradient of the contrastive loss of the WHOLE batch over its micro-batches (open_clip's
    --accum-freq); returns the loss (mean over ranks).

    `parts` are this rank's (images, rows) per micro-batch, `counts[j][r]` the readable rows rank r holds in
    micro-batch j. First every micro-batch's image features are computed without gradients; then, for each
    micro-batch in turn, its features are recomputed with gradients, put in place of their cached copy, and the
    loss of all rows (of every micro-batch, on every rank) is back-propagated. The frozen text features are
    constants, so the sum of these gradients is exactly the gradient of the whole batch's loss: --accum trades
    compute for memory without changing the objective. logit_scale takes its gradient in one pass only (it sees
    the whole loss in each). Under DDP only the last backward synchronises gradients (no_sync before it)."""
    world = len(counts[0])
    local = [c[rank] for c in counts]
    active = [j for j, c in enumerate(counts) if sum(c)]  # micro-batches with a readable row on some rank
    totals = [sum(c[r] for c in counts) for r in range(world)]
    text = texts[torch.cat([rows for _, rows in parts])].to(device)
    cached: list = [None] * len(parts)
    if len(active) > 1:  # with one micro-batch, its fresh features are the whole batch's
        with torch.no_grad(), autocast():
            for j in active:
                cached[j] = model.encode_image(parts[j][0][:max(local[j], 1)].to(device), normalize=True)[:local[j]]
    for j in active:
        last = j == active[-1]
        sync = nullcontext() if last or ddp is model else ddp.no_sync()
        with sync:
            with autocast():
                fresh = _encode_images(ddp, parts[j][0].to(device, non_blocking=True))[:local[j]]
                features = torch.cat([fresh if k == j else cached[k] for k in active])
                scale = model.logit_scale.exp() if last else model.logit_scale.exp().detach()
                loss = contrastive_loss(features.float(), text.float(), scale, totals, rank, loss_fn)
            scaler.scale(loss).backward()
    return _global_mean(loss.detach(), world)


class UncachedTexts:
    """Rows → caption features through the frozen text tower every time (--no-text-cache)."""

    def __init__(self, model, tokenizer, captions, device):
        self.model, self.tokenizer, self.captions, self.device = model, tokenizer, captions, device

    @torch.no_grad()
    def __getitem__(self, row_ids: torch.Tensor) -> torch.Tensor:
        # a rank with no readable row in the step still needs a block of the right width (zero rows)
        captions = self.captions.take(row_ids.numpy()).to_pylist() if len(row_ids) else [""]
        features = self.model.encode_text(self.tokenizer(captions).to(self.device), normalize=True)
        return features[:len(row_ids)]


def _note_unreadable(bad: list, example: dict, logged: dict, rank: int) -> None:
    """Log the first LOGGED_PER_REASON unreadable rows of each reason (this rank), then say that the rest are
    only counted: at 10M rows one warning per row would bury the log. The counts are in log.jsonl and the
    checkpoint's manifest."""
    for row, reason, message in bad:
        example.setdefault(reason, message)
        seen = logged[reason] = logged.get(reason, 0) + 1
        if seen <= LOGGED_PER_REASON:
            log.warning("rank %d, row %d: image skipped (%s): %s", rank, row, reason, message)
        if seen == LOGGED_PER_REASON:
            log.warning("rank %d: further %s rows are counted (log.jsonl: skipped), not logged one by one",
                        rank, reason)


def _gather_counts(good: int, reasons: list[str], world: int, device) -> list[list[int]]:
    """[good, then one count per reason in REASONS] of every rank: each rank decides from the same numbers."""
    local = torch.tensor([good, *(reasons.count(r) for r in REASONS)], dtype=torch.long, device=device)
    if world == 1:
        return [local.tolist()]
    out = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(out, local)
    return [t.tolist() for t in out]


def _global_mean(loss: torch.Tensor, world: int) -> float:
    if world > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= world
    return float(loss)


def contrastive_loss(image_features, text_features, logit_scale, counts: list[int], rank: int, loss_fn):
    """Symmetric InfoNCE over the global batch; `counts` is how many rows each rank holds (they may differ once
    unreadable images are dropped, and may be 0: a rank's rows beyond its count are placeholders).

    One process: open_clip's ClipLoss. Several: like ClipLoss(local_loss, gather_with_grad) — each rank scores
    its rows against every rank's — but gathered at each rank's own size, and scaled so that DDP's gradient mean
    equals the gradient of the mean loss over all rows of the global batch."""
    world = len(counts)
    if world == 1:
        return loss_fn(image_features, text_features, logit_scale)
    n, most, everyone = counts[rank], max(counts), sum(counts)

    def pad(x):
        x = x[:n]
        return torch.cat([x, x.new_zeros(most - n, x.shape[1])]) if n < most else x

    images = _GatherWithGrad.apply(pad(image_features))  # like open_clip's gather_with_grad
    texts = [torch.empty_like(pad(text_features)) for _ in counts]
    dist.all_gather(texts, pad(text_features).contiguous())  # the text tower is frozen: no gradients
    all_images = torch.cat([g[:c] for g, c in zip(images, counts, strict=True)])
    all_texts = torch.cat([g[:c] for g, c in zip(texts, counts, strict=True)])
    labels = torch.arange(sum(counts[:rank]), sum(counts[:rank]) + n, device=image_features.device)
    per_image = F.cross_entropy(logit_scale * image_features[:n] @ all_texts.T, labels, reduction="sum")
    per_text = F.cross_entropy(logit_scale * text_features[:n] @ all_images.T, labels, reduction="sum")
    return (per_image + per_text) * world / (2 * everyone)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' equally shaped tensors, stacked; the backward pass sums every rank's gradient for this rank's
    part (an all-reduce: gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def _unreadable(cfg: TrainConfig, why: str, rows_read: int, skipped: dict, example: dict) -> UserError:
    counts = ", ".join(f"{skipped[r]:,} {r}" for r in REASONS)
    unreadable = sum(skipped[r] for r in REASONS)
    first = f"; e.g. {next(iter(example.values()))}" if example else ""
    return UserError(
        f"{cfg.retrieval}: {why}: {unreadable:,} of the {rows_read:,} rows read so far could not be used "
        f"({counts}){first}. missing_image: the file is not there or is shorter than the row says (a moved or "
        "unmounted folder, a deleted or rewritten shard); corrupt_image: the bytes do not decode. Fix the images "
        f"or the set; --max-bad-fraction (now {cfg.max_bad_fraction:g}) is the share of unreadable rows a run "
        "accepts")


def _encode_images(model, images: torch.Tensor) -> torch.Tensor:
    """Normalised image features; a DDP-wrapped model goes through its own forward, which syncs gradients."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model(images, None)[0]
    return model.encode_image(images, normalize=True)

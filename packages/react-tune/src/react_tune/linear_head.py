"""`react-tune train --variant linear-head`: REAL-Linear (Parashar et al., CVPR 2024, "The Neglected Tails in
Vision-Language Models") on a retrieval set.

1. Every distinct image of the retrieval set goes once through the FROZEN image tower (the eval transform, no
   augmentation), L2-normalised. Unreadable images are skipped and counted by reason, as in the other variants.
2. The rows are split by sample (all rows of one image on the same side; seeded): `held_out` of the samples are
   kept for choosing the ensemble weight, the rest train the head.
3. The zero-shot classifier Z of the retrieval set's classes (its manifest's class list, in its order): per class,
   every template's prompt embedding normalised, averaged, renormalised.
4. The head (logits = x @ W.T + b) starts as the zero-shot classifier, W = s * Z (s: the model's logit scale),
   b = 0, and is trained by full-batch AdamW on the training images (label: the row's class_name) plus every
   class's prompt embeddings as extra samples (cross-modal), class-balanced: every class's images weigh as much
   as any other class's, and every class's prompts too; images and prompts each carry half the loss.
5. Ensemble: logits = (1 - w) * s * x @ Z.T + w * (x @ W.T + b). Both are linear in the same frozen feature, so
   this is also the weight interpolation (1 - w) * s * Z + w * W (WiSE-FT); it is applied to the logits so that
   w = 0 is bit for bit the zero-shot classifier. w is the grid value (0, 0.05, ..., 1) with the best
   class-balanced accuracy on the held-out slice (ties: the smaller w, closer to zero-shot); eval data is never
   read.

The checkpoint is `head.safetensors` (`weight`, `bias`) + manifest.json (react.checkpoint, `head` section).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ._domainfiles import load_templates
from ._loader_protocol import TrainedClassifier
from ._manifests import UserError, manifest_uri
from .checkpoint import load_checked_base, read_weights, write_checkpoint
from .data import REASONS, RetrievalImages, _read_columns, collate, load_rows
from .manifest import CHECKPOINT, ManifestError, lineage_entry, read_manifest
from .model import load_base

log = logging.getLogger("react_tune")
VARIANT = "linear-head"
HEAD_FILE = "head.safetensors"
GRID = tuple(round(0.05 * i, 2) for i in range(21))  # the ensemble weights tried on the held-out slice
DEFAULT_STEPS, DEFAULT_LR = 300, 1e-3


@torch.no_grad()
def prompt_features(model, tokenizer, classes: list[str], templates: list[str], device) -> torch.Tensor:
    """(classes x templates x d): every prompt's L2-normalised text embedding."""
    texts = [t.replace("{c}", c) for c in classes for t in templates]
    out = [model.encode_text(tokenizer(texts[lo:lo + 256]).to(device)).float() for lo in range(0, len(texts), 256)]
    features = torch.cat(out)
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.reshape(len(classes), len(templates), -1).cpu()


def zero_shot(prompts: torch.Tensor) -> torch.Tensor:
    """The zero-shot classifier (classes x d): per class the mean of its normalised prompts, renormalised."""
    mean = prompts.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


@torch.no_grad()
def image_features(model, rows, transform, sample_rows: np.ndarray, cfg, device):
    """Features of the rows `sample_rows` (one row per distinct image); (features, ok mask, skipped counts, first
    example per reason). Rows whose image cannot be used are counted, not raised."""
    dataset = RetrievalImages(rows, transform, cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sample_rows.tolist(), num_workers=cfg.workers,
                        collate_fn=collate)
    position = {int(r): i for i, r in enumerate(sample_rows)}
    features = None
    ok = np.zeros(len(sample_rows), bool)
    bad: dict[int, tuple[str, str]] = {}
    for images, row_ids, skipped in loader:
        for row, reason, message in skipped:
            bad[position[row]] = (reason, message)
        if images is None:
            continue
        x = model.encode_image(images.to(device)).float()
        x = (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu()
        if features is None:
            features = torch.zeros(len(sample_rows), x.shape[1])
        where = torch.tensor([position[int(r)] for r in row_ids])
        features[where] = x
        ok[where.numpy()] = True
    return features, ok, bad


def held_out_samples(n_samples: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded boolean mask over the distinct samples: round(fraction * n) of them (at least 1) are held out."""
    count = min(n_samples - 1, max(1, round(fraction * n_samples)))
    mask = np.zeros(n_samples, bool)
    mask[np.random.default_rng([seed, 16]).permutation(n_samples)[:count]] = True
    return mask


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes present of each class's top-1 accuracy."""
    right = (logits.argmax(dim=1) == labels).float()
    per_class = [float(right[labels == c].mean()) for c in range(n_classes) if bool((labels == c).any())]
    return float(np.mean(per_class)) if per_class else float("nan")


def ensemble(zs_logits: torch.Tensor, head_logits: torch.Tensor, w: float) -> torch.Tensor:
    return zs_logits if w == 0 else (1 - w) * zs_logits + w * head_logits


def fit_head(x: torch.Tensor, y: torch.Tensor, prompts: torch.Tensor, zs: torch.Tensor, scale: float, steps: int,
             lr: float, weight_decay: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Full-batch AdamW on images + prompts, class-balanced; returns (W = scale * V, b, final loss)."""
    torch.manual_seed(seed)
    n_classes, n_templates, d = prompts.shape
    counts = torch.bincount(y, minlength=n_classes).float()
    present = int((counts > 0).sum())
    image_w = torch.where(counts[y] > 0, 1.0 / (counts[y] * max(present, 1) * 2), torch.zeros(()))
    text_x = prompts.reshape(-1, d)
    text_y = torch.arange(n_classes).repeat_interleave(n_templates)
    text_w = torch.full((len(text_y),), 1.0 / (n_templates * n_classes * (2 if len(y) else 1)))
    xs, ys, ws = torch.cat([x, text_x]), torch.cat([y, text_y]), torch.cat([image_w, text_w])
    v = zs.clone().requires_grad_(True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.AdamW([{"params": [v], "weight_decay": weight_decay}, {"params": [b], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999))
    loss = torch.zeros(())
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (F.cross_entropy(scale * xs @ v.T + b, ys, reduction="none") * ws).sum()
        loss.backward()
        opt.step()
    return (scale * v).detach(), b.detach(), float(loss.detach())


def check_linear_config(cfg) -> None:
    if cfg.blocks is not None:
        raise UserError("--blocks places gated blocks; --variant linear-head trains no blocks")
    if cfg.epochs is not None:
        raise UserError("--variant linear-head trains full batch (one step is one pass): give --steps, not --epochs")
    if cfg.resume:
        raise UserError("--variant linear-head takes minutes and saves no intermediate state: --resume does not apply")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("--variant linear-head runs in one process (minutes on CPU); run it without torchrun")
    if not 0 < cfg.held_out < 1:
        raise UserError(f"--held-out must be between 0 and 1 (exclusive), got {cfg.held_out!r}")


def train_linear_head(cfg) -> dict:
    """REAL-Linear on `cfg.retrieval`; writes OUT/head.safetensors + OUT/manifest.json and returns the manifest."""
    check_linear_config(cfg)
    start = time.perf_counter()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    doc, rows = load_rows(cfg.retrieval)
    classes = list(doc["classes"])
    if not classes:
        raise ManifestError(f"{cfg.retrieval}: field 'classes' is empty: a linear head needs the retrieval classes")
    if cfg.templates is not None:
        templates, source = load_templates(cfg.templates), cfg.templates
    elif doc["templates"]:
        templates, source = load_templates(None, doc["templates"]), "retrieval manifest"
    else:
        templates, source = load_templates(None), "openai_imagenet"
    names = _read_columns(doc["rows_uri"], ["class_name"]).column("class_name").combine_chunks()
    index = {c: i for i, c in enumerate(classes)}
    unknown = pc.unique(pc.filter(names, pc.invert(pc.is_in(names, value_set=pa_array(classes))))).to_pylist()
    if unknown:
        raise ManifestError(f"{doc['rows_uri']}: class_name {unknown[0]!r} (and {len(unknown) - 1} more) is not in "
                            "the manifest's 'classes'; the set is inconsistent, write it again with the tool")
    labels = np.array([index[c] for c in names.to_pylist()], np.int64)

    model, _, preprocess, tokenizer, base = load_base(cfg.model, cfg.pretrained)
    model.requires_grad_(False)
    model.eval().to(device)
    scale = float(model.logit_scale.exp())
    print(f"react-tune: linear-head on {cfg.model}: {len(classes)} classes x {len(templates)} templates "
          f"({source}); {len(rows):,} rows; on {device}")

    # one forward per distinct image; its rows share the feature (a sample retrieved for several classes)
    distinct, first_row, sample_of_row = np.unique(rows.sample_id, return_index=True, return_inverse=True)
    features, ok, bad = image_features(model, rows, preprocess, first_row, cfg, device)
    skipped = {r: 0 for r in REASONS}
    row_bad = np.array([i in bad for i in range(len(distinct))])[sample_of_row]
    for i, (reason, _) in bad.items():
        skipped[reason] += int((sample_of_row == i).sum())
    for reason in REASONS:
        examples = [m for r, m in bad.values() if r == reason][:5]
        for message in examples:
            log.warning("image skipped (%s): %s", reason, message)
    unreadable = int(row_bad.sum())
    if features is None or not ok.any():
        raise UserError(f"{cfg.retrieval}: none of the {len(rows):,} rows' images could be read ({skipped}); "
                        f"e.g. {next(iter(bad.values()))[1] if bad else 'no rows'}. Fix the images or the set")
    if unreadable > cfg.max_bad_fraction * len(rows):  # every row is read up front: the share is final
        raise UserError(f"{cfg.retrieval}: {unreadable:,} of {len(rows):,} rows could not be used ({skipped}), more "
                        f"than --max-bad-fraction {cfg.max_bad_fraction:g}; e.g. {next(iter(bad.values()))[1]}")

    held_sample = held_out_samples(len(distinct), cfg.held_out, cfg.seed)
    usable = ~row_bad
    held_rows = np.flatnonzero(held_sample[sample_of_row] & usable)
    train_rows = np.flatnonzero(~held_sample[sample_of_row] & usable)
    if not len(held_rows):
        raise UserError(f"{cfg.retrieval}: no readable image is in the held-out slice ({cfg.held_out:g} of "
                        f"{len(distinct):,} images): the set is too small to choose the ensemble weight; retrieve "
                        "more rows or raise --held-out")
    x_rows = features[torch.from_numpy(sample_of_row)]
    y_rows = torch.from_numpy(labels)

    prompts = prompt_features(model, tokenizer, classes, templates, device)
    zs = zero_shot(prompts)
    steps = cfg.steps or DEFAULT_STEPS
    weight, bias, loss = fit_head(x_rows[train_rows], y_rows[train_rows], prompts, zs, scale, steps,
                                  cfg.lr or DEFAULT_LR, cfg.weight_decay, cfg.seed)

    xh, yh = x_rows[held_rows], y_rows[held_rows]
    zs_logits, head_logits = scale * xh @ zs.T, xh @ weight.T + bias
    scores = [balanced_accuracy(ensemble(zs_logits, head_logits, w), yh, len(classes)) for w in GRID]
    best = max(range(len(GRID)), key=lambda i: (scores[i], -i))
    w = GRID[best]
    head = {"classes": classes, "templates": templates, "templates_source": source, "dim": int(weight.shape[1]),
            "logit_scale": scale, "ensemble_weight": w,
            "held_out": {"fraction": cfg.held_out, "seed": cfg.seed, "rows": len(held_rows),
                         "samples": int(held_sample.sum()), "metric": "class-balanced top-1",
                         "accuracy": {"zero_shot": scores[0], "head": scores[-1], "ensemble": scores[best]},
                         "grid": list(GRID), "scores": scores},
            "train": {"rows": len(train_rows), "samples": len(np.unique(sample_of_row[train_rows])),
                      "text_samples": int(prompts.shape[0] * prompts.shape[1]),
                      "rows_per_class": np.bincount(labels[train_rows], minlength=len(classes)).tolist(),
                      "balance": "class-weighted loss; images and prompts half each"}}
    training = {"steps": steps, "samples_seen": len(train_rows), "final_loss": loss, "skipped": skipped,
                "config": asdict(cfg) | {"lr": cfg.lr or DEFAULT_LR, "steps": steps,
                                         "seconds": round(time.perf_counter() - start, 3)}}
    manifest = write_checkpoint(cfg.out, {"weight": weight.contiguous(), "bias": bias.contiguous()}, base, VARIANT,
                                None, training, [lineage_entry(doc, doc["rows_uri"] + ".json")], weights_file=HEAD_FILE,
                                head=head)
    acc = head["held_out"]["accuracy"]
    print(f"checkpoint -> {cfg.out}  (linear head {len(classes)} x {weight.shape[1]}; ensemble weight {w:g} chosen "
          f"on {len(held_rows):,} held-out rows: zero-shot {acc['zero_shot']:.4f}, head {acc['head']:.4f}, "
          f"ensemble {acc['ensemble']:.4f}; {len(rows):,} rows read, {len(train_rows):,} trained on, skipped: "
          + ", ".join(f"{v:,} {r}" for r, v in skipped.items()) + f"; {time.perf_counter() - start:.1f} s)")
    return manifest


def pa_array(values):
    import pyarrow as pa

    return pa.array(values, pa.string())


def load_head(checkpoint_dir: str, device: str = "cpu", pretrained: str | None = None):
    """(frozen base model in eval mode, eval preprocess, tokenizer, TrainedClassifier, manifest) of a linear-head
    checkpoint; the head file must have the sha256 its manifest records and fit the base model's feature width."""
    manifest = read_manifest(manifest_uri(checkpoint_dir), CHECKPOINT)
    if manifest["variant"] != VARIANT or "head" not in manifest:
        raise ManifestError(f"{checkpoint_dir}: a {manifest['variant']} checkpoint, not a linear-head one")
    base, head = manifest["base_model"], manifest["head"]
    weights_uri, tensors = read_weights(checkpoint_dir, manifest)
    model, preprocess, tokenizer = load_checked_base(checkpoint_dir, manifest, pretrained, "head")
    model.requires_grad_(False)
    width = getattr(model.visual, "output_dim", None) or head["dim"]
    want = {"weight": (len(head["classes"]), head["dim"]), "bias": (len(head["classes"]),)}
    for name, shape in want.items():
        if name not in tensors or tuple(tensors[name].shape) != shape or head["dim"] != width:
            got = list(tensors[name].shape) if name in tensors else "missing"
            raise ManifestError(f"{weights_uri}: tensor {name} is {got}, expected {list(shape)} for "
                                f"{len(head['classes'])} classes over {base['name']}'s {width}-d features")
    classifier = TrainedClassifier(classes=head["classes"], weight=tensors["weight"].float().numpy(),
                                   bias=tensors["bias"].float().numpy(), ensemble_weight=head["ensemble_weight"],
                                   logit_scale=head["logit_scale"], templates=head["templates"])
    return model.eval().to(device), preprocess, tokenizer, classifier, manifest

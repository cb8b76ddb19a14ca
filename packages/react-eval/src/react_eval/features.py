"""Embeddings for evaluation: images decoded in DataLoader workers, AMP on GPU; the zero-shot classifier."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ._imagerows import CorruptImage, MissingImage, decode_rgb
from ._loader_protocol import LoadedModel
from .datasets import DatasetError, read_image, ref_name


class BadImageError(DatasetError):
    """Images of an eval set that cannot be read or decoded: every one is named, none is skipped."""


class _Images(Dataset):
    """Preprocessed images; an image that cannot be read or decoded comes back as its error message (a sentinel),
    so the main process can name it instead of a DataLoader worker dying with a traceback."""

    def __init__(self, refs, preprocess, crops=None):
        self.refs, self.preprocess, self.crops = refs, preprocess, crops

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        where = ref_name(self.refs[i])
        try:
            img = decode_rgb(read_image(self.refs[i]), where)
        except (MissingImage, CorruptImage) as e:
            return str(e) if where in str(e) else f"{where}: {e}"
        if self.crops is not None:
            img = img.crop(self.crops[i])
        return self.preprocess(img)


def _collate(items):
    """(stacked tensors of the good images, error messages of the bad ones)."""
    good = [x for x in items if not isinstance(x, str)]
    return (torch.stack(good) if good else None), [x for x in items if isinstance(x, str)]


def _amp(device: torch.device):
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _normalized(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


@torch.inference_mode()
def encode_images(loaded: LoadedModel, refs: list, batch_size: int = 64, workers: int = 2, device: str = "cpu",
                  crops: list | None = None, desc: str = "images") -> np.ndarray:
    """L2-normalised image embeddings; `crops` optionally gives a (left, top, right, bottom) box per image."""
    dev = torch.device(device)
    loader = DataLoader(_Images(refs, loaded.preprocess, crops), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate)
    out, bad = [], []
    for batch, errors in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True):
        bad += errors
        if bad or batch is None:
            continue  # the result will not be used: only collect every unreadable image
        with _amp(dev):
            out.append(_normalized(loaded.model.encode_image(batch.to(dev))))
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  … and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise BadImageError(f"{len(bad)} of {len(refs)} images cannot be read or decoded:\n  {shown}\nreplace or "
                            "remove them (and their labels/annotations): skipping them would silently change the "
                            "metric")
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def encode_texts(loaded: LoadedModel, texts: list[str], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    dev = torch.device(device)
    out = []
    for lo in range(0, len(texts), batch_size):
        with _amp(dev):
            out.append(_normalized(loaded.model.encode_text(loaded.tokenizer(texts[lo:lo + batch_size]).to(dev))))
    return np.concatenate(out)


def zeroshot_classifier(loaded: LoadedModel, classnames: list[str], templates: list[str],
                        device: str = "cpu") -> np.ndarray:
    """(classes × d): per class, embed every template, normalise each, average, renormalise."""
    texts = [t.replace("{c}", c) for c in classnames for t in templates]
    emb = encode_texts(loaded, texts, device=device).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)

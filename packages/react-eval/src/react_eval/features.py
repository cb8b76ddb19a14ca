"""Embeddings for evaluation: images decoded in DataLoader workers, AMP on GPU; the zero-shot classifier."""

from __future__ import annotations

import io
from contextlib import nullcontext

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .datasets import read_image


class _Images(Dataset):
    def __init__(self, refs, preprocess, crops=None):
        self.refs, self.preprocess, self.crops = refs, preprocess, crops

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        with Image.open(io.BytesIO(read_image(self.refs[i]))) as img:
            img = img.convert("RGB")
            if self.crops is not None:
                img = img.crop(self.crops[i])
            return self.preprocess(img)


def _amp(device: torch.device):
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _normalized(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


@torch.inference_mode()
def encode_images(loaded: dict, refs: list, batch_size: int = 64, workers: int = 2, device: str = "cpu",
                  crops: list | None = None, desc: str = "images") -> np.ndarray:
    """L2-normalised image embeddings; `crops` optionally gives a (left, top, right, bottom) box per image."""
    dev = torch.device(device)
    loader = DataLoader(_Images(refs, loaded["preprocess"], crops), batch_size=batch_size, num_workers=workers)
    out = []
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True):
        with _amp(dev):
            out.append(_normalized(loaded["model"].encode_image(batch.to(dev))))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def encode_texts(loaded: dict, texts: list[str], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    dev = torch.device(device)
    out = []
    for lo in range(0, len(texts), batch_size):
        with _amp(dev):
            out.append(_normalized(loaded["model"].encode_text(loaded["tokenizer"](texts[lo:lo + batch_size]).to(dev))))
    return np.concatenate(out)


def zeroshot_classifier(loaded: dict, classnames: list[str], templates: list[str], device: str = "cpu") -> np.ndarray:
    """(classes × d): per class, embed every template, normalise each, average, renormalise."""
    texts = [t.replace("{c}", c) for c in classnames for t in templates]
    emb = encode_texts(loaded, texts, device=device).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)

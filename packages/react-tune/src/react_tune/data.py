"""Training data from a retrieval set: rows → image bytes (ranged tar reads, files) → augmented tensors.

react-tune reads the retrieval manifest itself (docs/manifests.md); it never imports react-index.
A row shared by several classes (REACT keeps such duplicates) is trained on once per class row.
An image that is not there (missing_image: no such file, short read) or does not decode (corrupt_image) is
skipped and counted by reason; the trainer decides when too many are missing to go on. Shuffling is a seeded
permutation per epoch, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import itertools
import logging

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from ._imagerows import CorruptImage, MissingImage, decode_rgb, read_image_bytes
from .manifest import ManifestError, read_retrieval_manifest

log = logging.getLogger("react_tune")
REASONS = (MissingImage.reason, CorruptImage.reason)  # why a row's image was skipped, counted apart
COLUMNS = ["sample_id", "caption", "image_uri", "image_offset", "image_length", "url", "class_name"]


def load_rows(retrieval: str) -> tuple[dict, dict]:
    """(manifest, columns as python lists) of a retrieval set; URL-only rows are an error with the fix."""
    doc = read_retrieval_manifest(retrieval)
    with fsspec.open(doc["rows_uri"], "rb") as f:
        table = pq.read_table(f, columns=COLUMNS)
    rows = {c: table.column(c).to_pylist() for c in COLUMNS}
    url_only = [i for i, u in enumerate(rows["image_uri"]) if u is None]
    if url_only:
        raise ManifestError(
            f"{doc['rows_uri']}: {len(url_only)} of {table.num_rows} rows (first: row {url_only[0]}, "
            f"{rows['url'][url_only[0]]}) are known only by their URL; download them first — `react-index "
            "download SET.parquet --out DIR`, or img2dataset on `react-index query --export-urls` output then "
            "`react-index attach SET.parquet DOWNLOAD_DIR --out NEW.parquet` — and train on the resulting "
            "retrieval set")
    return doc, rows


def react_augmentation(image_size: int, mean, std):
    """The REACT recipe: RandomResizedCrop(0.08–1), flip, colour jitter 0.4, RandAugment m9, random erasing 0.25."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.4, 0.4, 0.4),
        T.RandAugment(magnitude=9),
        T.ToTensor(),
        T.Normalize(mean, std),
        T.RandomErasing(p=0.25),
    ])


class RetrievalImages(Dataset):
    """Item `epoch * rows + row`: (transformed image or None, row, None or (reason, message)). Captions are looked
    up by the trainer. Encoding the epoch in the index lets one DataLoader (one set of workers) serve the whole run."""

    def __init__(self, rows: dict, transform, seed: int = 0):
        self.rows, self.transform, self.seed = rows, transform, seed

    def _seed(self, epoch: int, i: int) -> None:
        """Augmentation randomness depends only on (seed, epoch, row): any worker, any resume, same crops."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))

    def __len__(self) -> int:
        return len(self.rows["sample_id"])

    def __getitem__(self, index: int):
        r = self.rows
        epoch, i = divmod(index, len(self))
        self._seed(epoch, i)
        try:
            data = read_image_bytes(r["image_uri"][i], r["image_offset"][i], r["image_length"][i])
            image = decode_rgb(data, f"{r['image_uri'][i]} (row {i}, sample {r['sample_id'][i]})")
        except (MissingImage, CorruptImage) as e:  # counted by reason; anything else is a bug and propagates
            log.warning("row %d (sample %s): image skipped (%s): %s", i, r["sample_id"][i], e.reason, e)
            return None, i, (e.reason, str(e))
        return self.transform(image), i, None


def collate(items):
    """(stacked decodable images or None, their rows, [(row, reason, message)] of the rows that were skipped)."""
    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, *why) for x, i, why in items if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, torch.tensor([i for _, i in good], dtype=torch.long), bad


class EpochSampler(Sampler):
    """A seeded permutation per epoch, for `epochs` epochs (None: without end) from `epoch` on, starting `skip`
    positions into the first (for exact resume); yields `epoch * n + row`. Each torchrun rank takes an interleaved
    share of every global (micro-)batch of `global_batch` rows, so it is the same for any number of ranks. Each
    epoch ends at a multiple of `epoch_batch` (the rows of one optimizer step; default `global_batch`): its last
    partial step is dropped, so a step never straddles two epochs and a resume skips whole steps' rows."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int = 0, rank: int = 0, world: int = 1,
                 global_batch: int = 1, epochs: int | None = 1, epoch_batch: int | None = None):
        self.n, self.seed, self.epoch, self.skip, self.epochs = n, seed, epoch, skip, epochs
        self.rank, self.world, self.global_batch = rank, world, global_batch
        self.epoch_batch = epoch_batch or global_batch
        if self.epoch_batch % global_batch:
            raise ValueError(f"epoch_batch {self.epoch_batch} is not a multiple of global_batch {global_batch}")

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _usable(self) -> int:
        return (self.n // self.epoch_batch) * self.epoch_batch

    def __iter__(self):
        epochs = itertools.count(self.epoch) if self.epochs is None else range(self.epoch, self.epoch + self.epochs)
        for epoch in epochs:
            start = self.skip if epoch == self.epoch else 0
            batches = self.order(epoch)[start:self._usable()].reshape(-1, self.global_batch)
            yield from (epoch * self.n + batches[:, self.rank::self.world].ravel()).tolist()

    def __len__(self) -> int:
        if self.epochs is None:
            raise TypeError("an EpochSampler without an end has no length")
        return (max(0, self._usable() - self.skip) + (self.epochs - 1) * self._usable()) // self.world

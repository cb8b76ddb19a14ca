"""Training data from a retrieval set: rows → image bytes (ranged tar reads, files) → augmented tensors.

react-tune reads the retrieval manifest itself (docs/manifests.md); it never imports react-index.
A row shared by several classes (REACT keeps such duplicates) is trained on once per class row.
An image that is not there (missing_image: no such file, short read) or does not decode (corrupt_image) is
skipped and counted by reason; the trainer decides when too many are missing to go on. Shuffling is a seeded
permutation per epoch, so a resumed run sees exactly the batches an uninterrupted one would.

At REACT's scale (10M rows) the rows are never Python objects: the locator columns are read once into Arrow
buffers (image_uri dictionary-encoded: a few thousand shard names, one int32 per row; offsets, lengths and
sample ids as flat int64 arrays). Forked DataLoader workers index them without touching a reference count, so
they share the parent's pages instead of gradually copying them (PyTorch's copy-on-read growth with lists).
Captions are read only to build the text cache (text_cache.py), or per batch without it.
"""

from __future__ import annotations

import itertools

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from ._imagerows import CorruptImage, MissingImage, decode_rgb, read_image_bytes
from .manifest import ManifestError, read_retrieval_manifest

REASONS = (MissingImage.reason, CorruptImage.reason)  # why a row's image was skipped, counted apart
LOCATORS = ["sample_id", "image_uri", "image_offset", "image_length"]
READ_ORDERS = ("shuffled", "grouped")
COALESCE_GAP = 1 << 20  # grouped reads: members of one shard at most this far apart are fetched in one request
COALESCE_MAX = 64 << 20  # … up to this many bytes per request


class Rows:
    """The rows' image locators as flat arrays (no per-row Python objects), indexed per sample.

    `uris` holds each distinct image_uri once; `uri_index[i]` is row i's, `offset[i]` / `length[i]` its tar
    member (-1: a whole file). `captions()` reads the caption column only when it is asked for."""

    def __init__(self, rows_uri: str, table: pa.Table):
        self.rows_uri = rows_uri
        uri = table.column("image_uri").combine_chunks()
        if not pa.types.is_dictionary(uri.type):
            uri = pc.dictionary_encode(uri)
        self.uris: list[str] = uri.dictionary.to_pylist()
        self.uri_index = uri.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False)
        self.offset = _int64(table.column("image_offset"))
        self.length = _int64(table.column("image_length"))
        self.sample_id = _int64(table.column("sample_id"))

    def __len__(self) -> int:
        return len(self.sample_id)

    def locator(self, i: int) -> tuple[str, int | None, int | None]:
        """(image_uri, offset or None, length or None) of row i."""
        offset = int(self.offset[i])
        return self.uris[self.uri_index[i]], (None if offset < 0 else offset), \
            (None if offset < 0 else int(self.length[i]))

    def captions(self) -> pa.Array:
        """The caption column (one Arrow string array; read when the text cache is built, or without a cache)."""
        return _read_columns(self.rows_uri, ["caption"]).column("caption").combine_chunks()

    def caption_batches(self, rows: int = 1 << 20):
        """The caption column in Arrow batches of `rows` (the text cache's index is built batch by batch)."""
        with fsspec.open(self.rows_uri, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=["caption"]):
                yield batch.column(0)

    def location_order(self) -> np.ndarray:
        """Rows sorted by (shard, offset): neighbours in this order are neighbours on disk."""
        return np.lexsort((self.offset, self.uri_index)).astype(np.int64)


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    """A nullable integer column as a flat int64 array, -1 for null."""
    return column.combine_chunks().fill_null(-1).to_numpy().astype(np.int64, copy=False)


def _read_columns(rows_uri: str, columns: list[str]) -> pa.Table:
    """Some columns of the rows, image_uri dictionary-encoded while decoding (never 10M Python strings); a local
    file is memory-mapped rather than read through a Python file object."""
    fs, path = fsspec.core.url_to_fs(rows_uri)
    dictionary = [c for c in columns if c == "image_uri"]
    if type(fs).__name__ == "LocalFileSystem":
        return pq.read_table(path, columns=columns, read_dictionary=dictionary, memory_map=True)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns, read_dictionary=dictionary)


def load_rows(retrieval: str) -> tuple[dict, Rows]:
    """(manifest, the rows' locators) of a retrieval set; URL-only rows are an error with the fix."""
    doc = read_retrieval_manifest(retrieval)
    table = _read_columns(doc["rows_uri"], LOCATORS)
    url_only = pc.is_null(table.column("image_uri"))
    first = pc.index(url_only, True).as_py()
    if first >= 0:
        url = _read_columns(doc["rows_uri"], ["url"]).column("url")[first].as_py()
        raise ManifestError(
            f"{doc['rows_uri']}: {pc.sum(url_only).as_py()} of {table.num_rows} rows (first: row {first}, "
            f"{url}) are known only by their URL; download them first — `react-index "
            "download SET.parquet --out DIR`, or img2dataset on `react-index query --export-urls` output then "
            "`react-index attach SET.parquet DOWNLOAD_DIR --out NEW.parquet` — and train on the resulting "
            "retrieval set")
    rows = Rows(doc["rows_uri"], table)
    del table, url_only
    pa.default_memory_pool().release_unused()  # the decoded columns' pages go back before workers fork
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
    up by the trainer. Encoding the epoch in the index lets one DataLoader (one set of workers) serve the whole run.

    A batch is fetched through `__getitems__`: with `coalesce`, the members of one shard that lie close together
    are read in one ranged request (what `--read-order grouped` is for); each row's bytes, decoding and
    augmentation are the same either way."""

    def __init__(self, rows: Rows, transform, seed: int = 0, coalesce: bool = False):
        self.rows, self.transform, self.seed, self.coalesce = rows, transform, seed, coalesce

    def _seed(self, epoch: int, i: int) -> None:
        """Augmentation randomness depends only on (seed, epoch, row): any worker, any resume, same crops."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self._item(index, None)

    def __getitems__(self, indices: list[int]) -> list:
        prefetched = self._read_grouped([divmod(int(x), len(self))[1] for x in indices]) if self.coalesce else {}
        return [self._item(int(x), prefetched) for x in indices]

    def _item(self, index: int, prefetched: dict | None):
        epoch, i = divmod(index, len(self))
        self._seed(epoch, i)
        uri, offset, length = self.rows.locator(i)
        where = f"{uri} (row {i}, sample {self.rows.sample_id[i]})"
        try:
            data = prefetched.get(i) if prefetched else None
            if data is None:
                data = read_image_bytes(uri, offset, length)
            image = decode_rgb(data, where)
        except (MissingImage, CorruptImage) as e:  # counted by reason; anything else is a bug and propagates
            return None, i, (e.reason, str(e))
        return self.transform(image), i, None

    def _read_grouped(self, rows: list[int]) -> dict[int, bytes]:
        """{row: image bytes} of the tar members among `rows`, read by (shard, offset) with members at most
        COALESCE_GAP apart fetched in one request. A request that fails or comes back short is left out: those
        rows are read one by one, so each is counted under its own reason."""
        found: dict[int, bytes] = {}
        members = sorted((int(self.rows.uri_index[i]), int(self.rows.offset[i]), i) for i in set(rows)
                         if self.rows.offset[i] >= 0)
        for _, group in itertools.groupby(members, key=lambda m: m[0]):
            for run in _runs(list(group), self.rows.length):
                start, end = int(run[0][1]), max(int(o + self.rows.length[i]) for _, o, i in run)
                try:
                    data = read_image_bytes(self.rows.uris[run[0][0]], start, end - start)
                except MissingImage:
                    continue
                for _, o, i in run:
                    found[i] = data[o - start:o - start + self.rows.length[i]]
        return found


def _runs(members: list, length: np.ndarray) -> list[list]:
    """Sorted (shard, offset, row) of one shard cut into runs a single request may cover: a member joins the
    current run when it starts at most COALESCE_GAP after the run's end and the run stays within COALESCE_MAX."""
    runs: list[list] = []
    end = 0
    for m in members:
        offset, i = m[1], m[2]
        if runs and offset - end <= COALESCE_GAP and offset + length[i] - runs[-1][0][1] <= COALESCE_MAX:
            runs[-1].append(m)
        else:
            runs.append([m])
        end = max(end, offset + int(length[i])) if len(runs[-1]) > 1 else offset + int(length[i])
    return runs


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
    partial step is dropped, so a step never straddles two epochs and a resume skips whole steps' rows.

    With `location` (rows sorted by shard and offset) and `group` > 1 (--read-order grouped), the permutation is
    of runs of `group` rows that are neighbours on disk, so a batch's reads can be coalesced; the order still
    depends only on (seed, epoch), so resume stays exact."""

    def __init__(self, n: int, seed: int, epoch: int, skip: int = 0, rank: int = 0, world: int = 1,
                 global_batch: int = 1, epochs: int | None = 1, epoch_batch: int | None = None,
                 location: np.ndarray | None = None, group: int = 1):
        self.n, self.seed, self.epoch, self.skip, self.epochs = n, seed, epoch, skip, epochs
        self.rank, self.world, self.global_batch = rank, world, global_batch
        self.epoch_batch = epoch_batch or global_batch
        self.location, self.group = location, group
        if self.epoch_batch % global_batch:
            raise ValueError(f"epoch_batch {self.epoch_batch} is not a multiple of global_batch {global_batch}")

    def order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.location is None or self.group <= 1:
            return rng.permutation(self.n)
        starts = np.arange(0, self.n, self.group)[rng.permutation(-(-self.n // self.group))]
        lengths = np.minimum(self.group, self.n - starts)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)  # where each run begins in the output
        return self.location[np.repeat(starts, lengths) + np.arange(self.n) - first]

    def _usable(self) -> int:
        return (self.n // self.epoch_batch) * self.epoch_batch

    def __iter__(self):
        epochs = itertools.count(self.epoch) if self.epochs is None else range(self.epoch, self.epoch + self.epochs)
        for epoch in epochs:
            start = self.skip if epoch == self.epoch else 0
            batches = self.order(epoch)[start:self._usable()].reshape(-1, self.global_batch)
            for batch in batches:  # a batch at a time: 10M rows as one list of Python ints would be ~0.4 GB
                yield from (epoch * self.n + batch[self.rank::self.world]).tolist()

    def __len__(self) -> int:
        if self.epochs is None:
            raise TypeError("an EpochSampler without an end has no length")
        return (max(0, self._usable() - self.skip) + (self.epochs - 1) * self._usable()) // self.world

"""The training sampler: one DataLoader serves every epoch, with exact resume positions."""

import numpy as np

from react_tune.data import EpochSampler


def test_sampler_spans_epochs_and_encodes_the_epoch_in_each_index():
    n, batch = 10, 4
    items = list(EpochSampler(n, seed=3, epoch=0, global_batch=batch, epochs=3))
    assert len(items) == len(EpochSampler(n, seed=3, epoch=0, global_batch=batch, epochs=3)) == 3 * 8
    epochs, rows = np.divmod(items, n)
    assert epochs.tolist() == [0] * 8 + [1] * 8 + [2] * 8  # each epoch drops its last partial batch
    first, second = rows[:8], rows[8:16]
    assert len(set(first)) == 8 and not np.array_equal(first, second)  # a fresh permutation per epoch
    assert first.tolist() == np.random.default_rng([3, 0]).permutation(n)[:8].tolist()


def test_resume_position_continues_the_same_sequence():
    full = list(EpochSampler(10, seed=0, epoch=0, global_batch=4, epochs=3))
    # resuming at step 3 = epoch 1, one batch in
    resumed = list(EpochSampler(10, seed=0, epoch=1, skip=4, global_batch=4, epochs=2))
    assert resumed == full[12:]


def test_ranks_split_every_global_batch():
    whole = list(EpochSampler(12, seed=1, epoch=0, global_batch=4, epochs=2))
    shards = [list(EpochSampler(12, seed=1, epoch=0, rank=r, world=2, global_batch=4, epochs=2)) for r in (0, 1)]
    for b in range(len(whole) // 4):
        assert sorted(shards[0][2 * b:2 * b + 2] + shards[1][2 * b:2 * b + 2]) == sorted(whole[4 * b:4 * b + 4])

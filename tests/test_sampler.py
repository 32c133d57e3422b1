"""Training windows: hand-computed padding, agreement with the obvious implementation."""

from __future__ import annotations

import numpy as np
import pytest

from bench.naive_sampler import NaiveSequenceSampler
from policy_runtime.data import SequenceSampler, split_episodes


def test_padding_at_both_ends_matches_a_hand_computed_example():
    # One episode of 5 steps with values 10..14, horizon 4, pad_before 1, pad_after 2.
    # Window starts run from -1 to 5 - 4 + 2 = 3: five windows.
    data = {"x": np.arange(10, 15, dtype=np.float32)[:, None]}
    sampler = SequenceSampler(data, np.array([5]), horizon=4, pad_before=1, pad_after=2)
    windows = [sampler[i]["x"][:, 0].tolist() for i in range(len(sampler))]
    assert windows == [
        [10, 10, 11, 12],  # starts one step early: the first step repeats
        [10, 11, 12, 13],
        [11, 12, 13, 14],
        [12, 13, 14, 14],  # runs one step past the end: the last step repeats
        [13, 14, 14, 14],  # two steps past
    ]


def test_windows_never_cross_episode_borders():
    # Two episodes: [0, 1, 2] and [100, 101, 102, 103].
    data = {"x": np.array([0, 1, 2, 100, 101, 102, 103])}
    sampler = SequenceSampler(data, np.array([3, 7]), horizon=3, pad_before=1, pad_after=1)
    got = sampler.sample_batch(np.arange(len(sampler)))["x"].tolist()
    assert got == [
        [0, 0, 1],
        [0, 1, 2],
        [1, 2, 2],
        [100, 100, 101],
        [100, 101, 102],
        [101, 102, 103],
        [102, 103, 103],
    ]


def test_episode_shorter_than_horizon_is_padded_not_dropped():
    sampler = SequenceSampler({"x": np.array([7, 8])}, np.array([2]), horizon=5, pad_after=4)
    assert sampler.sample_batch(np.arange(len(sampler)))["x"].tolist() == [
        [7, 8, 8, 8, 8],
        [8, 8, 8, 8, 8],
    ]
    assert len(SequenceSampler({"x": np.array([7, 8])}, np.array([2]), horizon=5)) == 0


def test_key_first_k_returns_only_the_observation_steps():
    data = {"obs": np.arange(20.0)[:, None], "action": np.arange(20.0)[:, None]}
    sampler = SequenceSampler.for_policy(
        data, np.array([20]), horizon=16, n_obs_steps=2, n_action_steps=8, obs_keys=["obs"]
    )
    first = sampler[0]
    assert first["obs"][:, 0].tolist() == [0.0, 0.0]
    assert first["action"][:, 0].tolist() == [0.0] * 2 + list(range(1, 15))
    assert (sampler.pad_before, sampler.pad_after) == (1, 7)


def test_matches_the_obvious_implementation_on_random_episodes():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, size=30)
    ends = np.cumsum(lengths)
    n = int(ends[-1])
    data = {
        "action": rng.normal(size=(n, 2)).astype(np.float32),
        "img": rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
        "state": rng.normal(size=(n, 5)),
    }
    for horizon, pad_before, pad_after in [(16, 1, 7), (1, 0, 0), (8, 7, 7), (10, 30, -2)]:
        first_k = {"img": 2, "state": 3}
        ours = SequenceSampler(data, ends, horizon, pad_before, pad_after, key_first_k=first_k)
        naive = NaiveSequenceSampler(data, ends, horizon, pad_before, pad_after, first_k)
        assert len(ours) == len(naive)
        ids = np.arange(len(ours))
        got, want = ours.sample_batch(ids), naive.sample_batch(ids)
        for key in data:
            k = min(first_k.get(key, horizon), horizon)
            assert got[key].shape == (len(ids), k, *data[key].shape[1:])
            assert got[key].dtype == data[key].dtype
            np.testing.assert_array_equal(got[key], want[key][:, :k], err_msg=key)


def test_episode_mask_selects_episodes():
    data = {"x": np.arange(10)}
    mask = np.array([False, True])
    sampler = SequenceSampler(data, np.array([4, 10]), horizon=2, episode_mask=mask)
    windows = sampler.sample_batch(np.arange(len(sampler)))["x"]
    assert windows.min() >= 4 and len(sampler) == 5


def test_bad_arguments_are_named():
    data = {"x": np.arange(4)}
    with pytest.raises(ValueError, match="horizon"):
        SequenceSampler(data, np.array([4]), horizon=0)
    with pytest.raises(ValueError, match="episode_mask"):
        SequenceSampler(data, np.array([4]), horizon=2, episode_mask=np.ones(2, bool))
    with pytest.raises(ValueError, match="key 'x' has 4 rows"):
        SequenceSampler(data, np.array([6]), horizon=2)
    with pytest.raises(KeyError, match="'obs'"):
        SequenceSampler(data, np.array([4]), horizon=2, key_first_k={"obs": 1})
    with pytest.raises(IndexError, match="window 3 out of range"):
        SequenceSampler(data, np.array([4]), horizon=2)[3]


def test_split_is_by_episode_reproducible_and_bounded():
    mask = split_episodes(50, 0.1, seed=42)
    assert mask.sum() == 5
    np.testing.assert_array_equal(mask, split_episodes(50, 0.1, seed=42))
    assert not np.array_equal(mask, split_episodes(50, 0.1, seed=43))
    assert split_episodes(3, 0.9).sum() == 2  # at least one training episode stays
    assert split_episodes(10, 0.0).sum() == 0
    assert split_episodes(10, 0.01).sum() == 1


def test_prefetched_batches_are_the_ones_drawn_in_order_and_resume_where_the_run_stopped():
    """Gathering ahead on a thread changes neither the batches nor, after a stop, the
    generator state a checkpoint saves: a new prefetcher from it continues the same sequence."""
    import torch

    from policy_runtime.training.prefetch import BatchPrefetcher

    rng = np.random.default_rng(0)
    data = {
        "obs": rng.normal(size=(300, 3)).astype(np.float64),
        "rgb": rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8),
    }
    sampler = SequenceSampler.for_policy(data, np.array([100, 220, 300]), 6, 2, 3, ["obs", "rgb"])
    cpu = torch.device("cpu")

    def run(depth: int, steps: int, seed_state: dict | None = None) -> tuple[list, dict]:
        generator = np.random.default_rng(7)
        if seed_state is not None:
            generator.bit_generator.state = seed_state
        prefetcher = BatchPrefetcher(sampler, generator, 4, cpu, depth)
        batches = [prefetcher.next() for _ in range(steps)]
        state = prefetcher.rng_state()
        prefetcher.close()
        return batches, state

    straight, _ = run(0, 10)
    ahead, _ = run(3, 10)
    first, state = run(3, 4)
    rest, _ = run(0, 6, state)
    for a, b, c in zip(straight, ahead, first + rest, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert straight[0]["obs"].dtype == torch.float32 and straight[0]["rgb"].dtype == torch.uint8
    # The same windows the sampler gives for the generator's draws.
    ids = np.random.default_rng(7).integers(len(sampler), size=4)
    np.testing.assert_array_equal(straight[0]["rgb"].numpy(), sampler.sample_batch(ids)["rgb"])

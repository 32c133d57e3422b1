"""LeRobot's dataset statistics, computed as LeRobot computes them (numpy only).

Ported from huggingface/lerobot ``src/lerobot/datasets/compute_stats.py`` (Apache-2.0) at
commit 7427f31801f944f5ec9ce53cda02862ce7d1638b, the code paths a dataset writer takes:

- per episode and feature: min, max, mean, std (population), count, and the quantiles q01,
  q10, q50, q90, q99 from a 5000-bin histogram (``RunningQuantileStats``); vectors reduce over
  time (a ``(T,)`` column keeps a ``(1,)`` shape), images per channel over a sample of frames
  (``sample_indices``; frames of 300 px or more are strided down to ~150 px first), in
  ``[0, 1]`` (divided by 255) with shape ``(3, 1, 1)`` and ``count`` the number of frames
  sampled;
- over episodes (``meta/stats.json``): means and variances merged weighted by count, min of
  mins, max of maxes, and quantiles as an envelope (min of the lower ones, max of the upper
  ones), folded one episode at a time as ``LeRobotDatasetMetadata.save_episode`` does.

Arithmetic keeps LeRobot's dtypes (float32 data stays float32), so values match its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_QUANTILES = [0.01, 0.10, 0.50, 0.90, 0.99]
QUANTILE_KEYS = [f"q{int(q * 100):02d}" for q in DEFAULT_QUANTILES]

Stats = dict[str, np.ndarray]


class RunningQuantileStats:
    """LeRobot's running statistics of vectors (one update per episode here)."""

    def __init__(self, num_quantile_bins: int = 5000) -> None:
        self._count = 0
        self._num_quantile_bins = num_quantile_bins
        self._mean: np.ndarray
        self._mean_of_squares: np.ndarray
        self._min: np.ndarray
        self._max: np.ndarray
        self._histograms: list[np.ndarray] = []
        self._bin_edges: list[np.ndarray] = []

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(-1, batch.shape[-1])
        batch = batch.astype(np.result_type(batch.dtype, np.float32), copy=False)
        num_elements, vector_length = batch.shape
        if self._count == 0:
            self._mean = np.mean(batch, axis=0)
            self._mean_of_squares = np.mean(batch**2, axis=0)
            self._min = np.min(batch, axis=0)
            self._max = np.max(batch, axis=0)
            self._histograms = [np.zeros(self._num_quantile_bins) for _ in range(vector_length)]
            self._bin_edges = [
                np.linspace(self._min[i] - 1e-10, self._max[i] + 1e-10, self._num_quantile_bins + 1)
                for i in range(vector_length)
            ]
        else:
            if vector_length != self._mean.size:
                raise ValueError("vector length changed between updates")
            new_max, new_min = np.max(batch, axis=0), np.min(batch, axis=0)
            changed = np.any(new_max > self._max) or np.any(new_min < self._min)
            self._max = np.maximum(self._max, new_max)
            self._min = np.minimum(self._min, new_min)
            if changed:
                self._adjust_histograms()
        self._count += num_elements
        batch_mean = np.mean(batch, axis=0)
        batch_mean_of_squares = np.mean(batch**2, axis=0)
        self._mean += (batch_mean - self._mean) * (num_elements / self._count)
        self._mean_of_squares += (batch_mean_of_squares - self._mean_of_squares) * (
            num_elements / self._count
        )
        for i in range(batch.shape[1]):
            hist, _ = np.histogram(batch[:, i], bins=self._bin_edges[i])
            self._histograms[i] += hist

    def get_statistics(self) -> Stats:
        if self._count < 2:
            raise ValueError("cannot compute statistics of fewer than 2 vectors")
        variance = self._mean_of_squares - self._mean**2
        stats: Stats = {
            "min": self._min.copy(),
            "max": self._max.copy(),
            "mean": self._mean.copy(),
            "std": np.sqrt(np.maximum(0, variance)),
            "count": np.array([self._count]),
        }
        for key, q in zip(QUANTILE_KEYS, DEFAULT_QUANTILES, strict=True):
            stats[key] = np.array(
                [
                    _quantile(hist, edges, q * self._count)
                    for hist, edges in zip(self._histograms, self._bin_edges, strict=True)
                ]
            )
        return stats

    def _adjust_histograms(self) -> None:
        for i in range(len(self._histograms)):
            old_edges, old_hist = self._bin_edges[i], self._histograms[i]
            padding = (self._max[i] - self._min[i]) * 1e-10
            new_edges = np.linspace(
                self._min[i] - padding, self._max[i] + padding, self._num_quantile_bins + 1
            )
            old_centers = (old_edges[:-1] + old_edges[1:]) / 2
            new_hist = np.zeros(self._num_quantile_bins)
            for center, count in zip(old_centers, old_hist, strict=False):
                if count > 0:
                    index = np.searchsorted(new_edges, center) - 1
                    new_hist[max(0, min(index, self._num_quantile_bins - 1))] += count
            self._histograms[i], self._bin_edges[i] = new_hist, new_edges


def _quantile(hist: np.ndarray, edges: np.ndarray, target_count: float) -> Any:
    cumsum = np.cumsum(hist)
    idx = np.searchsorted(cumsum, target_count)
    if idx == 0:
        return edges[0]
    if idx >= len(cumsum):
        return edges[-1]
    count_before = cumsum[idx - 1]
    count_in_bin = cumsum[idx] - count_before
    if count_in_bin == 0:
        return edges[idx]
    fraction = (target_count - count_before) / count_in_bin
    return edges[idx] + fraction * (edges[idx + 1] - edges[idx])


def _basic_stats(array: np.ndarray, sample_count: int) -> Stats:
    """Fewer than two rows: no histogram; quantiles are the mean."""
    stats: Stats = {
        "min": np.min(array, axis=0),
        "max": np.max(array, axis=0),
        "mean": np.mean(array, axis=0),
        "std": np.std(array, axis=0),
        "count": np.array([sample_count]),
    }
    for key in QUANTILE_KEYS:
        stats[key] = stats["mean"].copy()
    return stats


def _running_stats(reshaped: np.ndarray, sample_count: int) -> Stats:
    if reshaped.shape[0] < 2:
        return _basic_stats(reshaped, sample_count)
    running = RunningQuantileStats()
    running.update(reshaped)
    stats = running.get_statistics()
    stats["count"] = np.array([sample_count])
    return stats


def vector_stats(data: np.ndarray) -> Stats:
    """A numeric feature's episode stats: ``data`` is ``(T,)`` (stats shaped ``(1,)``) or
    ``(T, D)`` (stats shaped ``(D,)``)."""
    reshaped = data.reshape(-1, 1) if data.ndim == 1 else data
    stats = _running_stats(reshaped, data.shape[0])
    if data.ndim == 1:
        stats = {k: v if k == "count" else v.reshape(1) for k, v in stats.items()}
    return stats


def sample_indices(data_len: int) -> list[int]:
    """The frames LeRobot samples for image stats (100 up to ~500 frames, growing as T^0.75
    to at most 10000)."""
    min_samples, max_samples = 100, 10_000
    if data_len < min_samples:
        min_samples = data_len
    num_samples = max(min_samples, min(int(data_len**0.75), max_samples))
    return np.round(np.linspace(0, data_len - 1, num_samples)).astype(int).tolist()


def _downsample(img: np.ndarray, target_size: int = 150, max_size_threshold: int = 300) -> Any:
    _, height, width = img.shape
    if max(width, height) < max_size_threshold:
        return img
    factor = int(width / target_size) if width > height else int(height / target_size)
    return img[:, ::factor, ::factor]


def image_stats(frames: np.ndarray) -> Stats:
    """A camera's episode stats from its frames ``(T, H, W, C)`` uint8: per channel, in
    ``[0, 1]``, shaped ``(C, 1, 1)``."""
    sampled = np.stack(
        [_downsample(frames[i].transpose(2, 0, 1)) for i in sample_indices(len(frames))]
    )
    batch, channels = sampled.shape[0], sampled.shape[1]
    pixels = sampled.transpose(0, 2, 3, 1).reshape(-1, channels)
    stats = _running_stats(pixels, batch)
    return {
        k: v if k == "count" else np.squeeze(v.reshape(1, -1, 1, 1) / 255.0, axis=0)
        for k, v in stats.items()
    }


def aggregate_feature_stats(stats_list: list[Stats]) -> Stats:
    means = np.stack([s["mean"] for s in stats_list])
    variances = np.stack([s["std"] ** 2 for s in stats_list])
    counts = np.stack([s["count"] for s in stats_list])
    total_count = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    total_mean = (means * counts).sum(axis=0) / total_count
    delta_means = means - total_mean
    total_variance = ((variances + delta_means**2) * counts).sum(axis=0) / total_count
    aggregated: Stats = {
        "min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
        "mean": total_mean,
        "std": np.sqrt(total_variance),
        "count": total_count,
    }
    for key in [k for k in stats_list[0] if k.startswith("q") and k[1:].isdigit()]:
        if all(key in s for s in stats_list):
            values = np.stack([s[key] for s in stats_list])
            aggregated[key] = (
                np.min(values, axis=0) if int(key[1:]) <= 50 else np.max(values, axis=0)
            )
    return aggregated


def aggregate_stats(stats_list: list[dict[str, Stats]]) -> dict[str, Stats]:
    """Merge per-episode stats of every feature (the union of the features)."""
    keys = {key for stats in stats_list for key in stats}
    return {
        key: aggregate_feature_stats([stats[key] for stats in stats_list if key in stats])
        for key in keys
    }


def to_json(stats: dict[str, Stats]) -> dict[str, dict[str, Any]]:
    """Nested lists, as LeRobot's ``serialize_dict`` writes them."""
    return {key: {k: np.asarray(v).tolist() for k, v in s.items()} for key, s in stats.items()}

"""Normalisation: Diffusion Policy's min-max rule, numpy and torch agree, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from policy_runtime.data import compute_stats
from policy_runtime.normalization import AffineMap, Normalizer


def test_min_max_maps_the_range_to_minus_one_one_and_constant_dims_to_zero():
    data = np.array([[0.0, 5.0, 3.0], [10.0, 5.0, -1.0], [4.0, 5.0, 1.0]])
    norm = Normalizer.fit({"x": compute_stats(data)})
    out = norm.normalize("x", data)
    np.testing.assert_allclose(out.min(axis=0), [-1, 0, -1], atol=1e-6)
    np.testing.assert_allclose(out.max(axis=0), [1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(norm.maps["x"].scale[1], 1.0)  # constant dim: scale 1
    np.testing.assert_allclose(norm.unnormalize("x", out), data, atol=1e-5)


def test_a_range_narrower_than_min_range_is_widened_about_its_midpoint():
    rng = np.random.default_rng(0)
    # Metres along x, and a rotation entry that only wobbles (sensor noise of a top-down tool).
    data = np.stack([rng.uniform(0.2, 0.8, 500), rng.uniform(-0.003, 0.003, 500)], axis=1)
    data[:, 1] -= data[:, 1].mean() - 0.5
    plain = Normalizer.fit({"x": compute_stats(data)})
    floored = Normalizer.fit({"x": compute_stats(data)}, min_range=0.02)
    np.testing.assert_allclose(floored.maps["x"].scale[0], plain.maps["x"].scale[0], rtol=1e-6)
    out = floored.normalize("x", data)
    np.testing.assert_allclose([out[:, 0].min(), out[:, 0].max()], [-1, 1], atol=1e-5)
    # The wobble of 0.006 fills [-0.3, 0.3], not all of [-1, 1]; a tilt of 0.01 away from the
    # middle reads as 1, where plain min-max reads it as about 3.3.
    assert abs(out[:, 1].mean()) < 0.05 and 0.55 < np.ptp(out[:, 1]) <= 0.6 + 1e-6
    middle = (data[:, 1].min() + data[:, 1].max()) / 2
    tilted = np.array([[0.5, middle + 0.01]])
    np.testing.assert_allclose(floored.normalize("x", tilted)[0, 1], 1.0, atol=1e-4)
    assert plain.normalize("x", tilted)[0, 1] > 3.0
    np.testing.assert_allclose(floored.unnormalize("x", out), data, atol=1e-6)


def test_with_min_range_a_constant_dim_maps_to_zero_and_network_error_stays_small():
    data = np.array([[0.0, -1.0], [10.0, -1.0]])
    norm = Normalizer.fit({"a": compute_stats(data)}, min_range=0.02)
    np.testing.assert_allclose(norm.normalize("a", data)[:, 1], 0.0, atol=1e-6)
    # An error of 0.1 in the normalised output moves the constant by 0.001, not by 0.1.
    np.testing.assert_allclose(norm.unnormalize("a", np.array([0.0, 0.1]))[1], -0.999, atol=1e-6)


def test_images_map_0_255_to_minus_one_one():
    norm = Normalizer.fit({}, image_keys=("front_rgb",))
    image = np.array([0, 255, 127.5], np.float32)
    np.testing.assert_allclose(norm.normalize("front_rgb", image), [-1, 1, 0], atol=1e-6)


def test_numpy_and_torch_give_the_same_numbers_and_state_round_trips():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(100, 4)).astype(np.float32)
    norm = Normalizer.fit({"a": compute_stats(data)})
    restored = Normalizer.from_state(norm.state())
    via_numpy = restored.normalize("a", data)
    via_torch = norm.normalize("a", torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(via_numpy, via_torch, atol=1e-6)
    back = norm.unnormalize("a", torch.from_numpy(via_numpy)).numpy()
    np.testing.assert_allclose(back, data, atol=1e-5)


def test_missing_key_and_broken_state_are_named():
    norm = Normalizer({"a": AffineMap.image()})
    with pytest.raises(KeyError, match="no normalisation for key 'b'"):
        norm.normalize("b", np.zeros(1))
    with pytest.raises(ValueError, match=r"missing 'a.offset'"):
        Normalizer.from_state({"a.scale": np.ones(1)})

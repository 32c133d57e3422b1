"""The drifting loss: equilibrium, direction, self-masking, per-timestep split, no mode collapse."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from policy_runtime.policies import drifting_loss as dl  # noqa: E402
from policy_runtime.policies.drifting_loss import drift_field, drifting_loss  # noqa: E402

SHIFT = torch.tensor([0.5, 0.0])


def test_the_field_balances_when_generated_and_data_agree():
    torch.manual_seed(0)
    x = torch.randn(32, 64, 2)  # 32 observations, 64 generated samples each
    # Identical sets: exact symmetry, the mean force is (numerically) zero...
    same, _ = drift_field(x, x.clone())
    shifted, _ = drift_field(x, x + SHIFT)
    assert same.mean(dim=(0, 1)).norm() < 0.02 * shifted.mean(dim=(0, 1)).norm()
    # ...and before the unit-RMS rescaling the field itself is much weaker than off equilibrium.
    # (Sampling noise keeps a local field alive, so "weaker" here is about 3x at one std.)
    _, raw_same = drift_field(x, x.clone(), rescale=False)
    _, raw_shifted = drift_field(x, x + 2 * SHIFT, rescale=False)
    for temperature in (0.02, 0.05, 0.2):
        key = f"force_rms/{temperature:g}"
        assert raw_same[key] < 0.5 * raw_shifted[key], key
    # Independent draws from one distribution: only sampling noise, no common direction.
    y = torch.randn(32, 64, 2)
    noise, _ = drift_field(x, y)
    drift, _ = drift_field(x, y + SHIFT)
    assert noise.mean(dim=(0, 1)).norm() < 0.25 * drift.mean(dim=(0, 1)).norm()
    along = lambda f: (f @ SHIFT > 0).float().mean()  # noqa: E731
    assert abs(along(noise) - 0.5) < 0.05 and along(drift) > 0.65


def test_the_force_pulls_a_generated_cluster_toward_displaced_data():
    torch.manual_seed(0)
    gen = 0.1 * torch.randn(4, 16, 2)
    pos = 0.1 * torch.randn(4, 16, 2) + torch.tensor([1.0, 0.0])
    force, _ = drift_field(gen, pos)
    direction = force / force.norm(dim=-1, keepdim=True)
    assert (direction[..., 0] > 0.5).all()  # every sample heads toward +x
    assert direction[..., 0].mean() > 0.9
    # The loss's gradient is the force reversed: a gradient step on the samples follows it.
    params = gen.clone().requires_grad_(True)
    loss, _ = drifting_loss(params, pos)
    loss.backward()
    assert params.grad is not None
    cosine = torch.nn.functional.cosine_similarity(-params.grad, force, dim=-1)
    assert (cosine > 0.999).all()


def test_an_observation_whose_samples_sit_far_from_its_demo_is_still_pulled_back():
    """With one positive per observation, a row whose generated chunks all sit several mean
    distances from its demo sees only its siblings through the paper's short-range kernels:
    its force is zero and training never corrects it. The long-range default temperature
    keeps a pull toward the demo there."""
    torch.manual_seed(0)
    gen = 0.1 * torch.randn(2, 8, 4)
    pos = torch.zeros(2, 1, 4)
    gen[1] += 3.0  # row 1: a tight cluster 6 away from its demo; row 0: around its demo
    paper, _ = drift_field(gen, pos, temperatures=(0.02, 0.05, 0.2))
    assert paper[1].norm(dim=-1).max() < 1e-6 * paper[0].norm(dim=-1).mean()
    force, _ = drift_field(gen, pos)
    toward_demo = torch.nn.functional.cosine_similarity(force[1], pos[1] - gen[1], dim=-1)
    assert (toward_demo > 0.9).all()
    # Of the same order as the force on the row near its demo (about half of it here).
    assert force[1].norm(dim=-1).mean() > 0.3 * force[0].norm(dim=-1).mean()


def test_a_sample_is_not_its_own_neighbour(monkeypatch):
    x, y = torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]])
    # Alone, a sample has no negatives (its only pair with itself is masked): no force at all,
    # neither a push from itself nor an attraction weighted by its own affinity.
    force, _ = drift_field(x, y, rescale=False)
    assert torch.isfinite(force).all() and force.abs().max() < 1e-12
    loss, _ = drifting_loss(x.clone().requires_grad_(True), y)
    assert torch.isfinite(loss) and loss < 1e-12
    # Without the mask, its zero distance to itself would count as a (heavy) negative.
    monkeypatch.setattr(dl, "SELF_MASK", 0.0)
    unmasked, _ = drift_field(x, y, rescale=False)
    assert unmasked[0, 0, 0] > 1e-3
    # With a second generated sample, the force depends on that one, not on itself.
    monkeypatch.undo()
    two = torch.tensor([[[0.0, 0.0], [0.0, 0.5]]])
    force, _ = drift_field(two, y)
    assert force[0, 0, 0] > 0 and force[0, 0, 1] < 0  # toward y, away from the other sample


def test_per_timestep_treats_each_step_as_its_own_problem():
    torch.manual_seed(0)
    horizon, action_dim = 4, 3
    gen = torch.randn(5, 6, horizon * action_dim)
    pos = torch.randn(5, 1, horizon * action_dim)
    force, _ = drift_field(gen, pos, per_timestep=True, action_dim=action_dim)
    assert force.shape == gen.shape
    for t in range(horizon):
        cols = slice(t * action_dim, (t + 1) * action_dim)
        alone, _ = drift_field(gen[..., cols], pos[..., cols])
        torch.testing.assert_close(force[..., cols], alone)
    losses = [
        drifting_loss(gen[..., t * 3 : t * 3 + 3], pos[..., t * 3 : t * 3 + 3])[0] for t in range(4)
    ]
    loss, _ = drifting_loss(gen, pos, per_timestep=True, action_dim=action_dim)
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    with pytest.raises(ValueError, match="action_dim"):
        drifting_loss(gen, pos, per_timestep=True, action_dim=5)


def test_bad_shapes_and_temperatures_are_refused():
    with pytest.raises(ValueError, match="3-D"):
        drifting_loss(torch.zeros(4, 2), torch.zeros(4, 1, 2))
    with pytest.raises(ValueError, match="agree"):
        drifting_loss(torch.zeros(4, 2, 3), torch.zeros(4, 1, 2))
    with pytest.raises(ValueError, match="positive"):
        drifting_loss(torch.zeros(4, 2, 3), torch.zeros(4, 1, 3), temperatures=(0.0,))


def test_a_generator_trained_on_a_mixture_covers_every_mode():
    """Toy 2-D check of the paper's claim: drifting does not collapse onto a few modes."""
    torch.manual_seed(0)
    modes = 8
    angles = torch.arange(modes) * 2 * math.pi / modes
    centres = 2 * torch.stack([angles.cos(), angles.sin()], dim=1)

    def data(n: int) -> torch.Tensor:
        return centres[torch.randint(0, modes, (n,))] + 0.1 * torch.randn(n, 2)

    net = torch.nn.Sequential(
        torch.nn.Linear(2, 128),
        torch.nn.SiLU(),
        torch.nn.Linear(128, 128),
        torch.nn.SiLU(),
        torch.nn.Linear(128, 2),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(400):
        loss, _ = drifting_loss(net(torch.randn(256, 2))[None], data(256)[None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        samples = net(torch.randn(4000, 2))
    distance = torch.cdist(samples, centres)
    share = torch.bincount(distance.argmin(dim=1), minlength=modes).float() / len(samples)
    print(f"share of samples nearest each mode: {[round(float(s), 3) for s in share]}")
    assert (share >= 0.05).all(), share
    assert (distance.min(dim=1).values < 0.5).float().mean() > 0.3  # near the modes, not spread

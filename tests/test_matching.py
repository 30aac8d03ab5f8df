"""Hungarian matching: host (scipy via callback) and device (optax) agree with scipy."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy.optimize import linear_sum_assignment

from ifc_jax.train import matching


def _random_case(seed, layers=2, clips=3, queries=7, slots=4):
    rng = np.random.RandomState(seed)
    scores = rng.rand(layers, clips, queries, slots).astype(np.float32)
    valid = rng.rand(clips, slots) > 0.3
    valid[0] = True  # one full clip
    valid[-1] = False  # and one clip with no targets at all
    return scores, valid


def _scipy_reference(scores, valid):
    expected = {}
    for layer in range(scores.shape[0]):
        for clip in range(scores.shape[1]):
            columns = np.flatnonzero(valid[clip])
            if columns.size:
                rows, cols = linear_sum_assignment(scores[layer, clip][:, columns],
                                                   maximize=True)
                for row, col in zip(rows, cols, strict=True):
                    expected[(layer, clip, columns[col])] = row
    return expected


@pytest.mark.parametrize("method", ["host", "device"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matchers_equal_scipy_on_random_rectangular_costs(method, seed):
    scores, valid = _random_case(seed)
    result = np.asarray(jax.jit(
        lambda s, v: matching.hungarian_match(s, v, method))(scores, valid))
    expected = _scipy_reference(scores, valid)
    assert result.shape == (2, 3, 4)
    for (layer, clip, slot), row in expected.items():
        assert result[layer, clip, slot] == row
    # Invalid slots report query 0 and were not solved for.
    assert np.all(result[:, ~valid] == 0)


def test_matchers_agree_with_more_queries_and_slots():
    scores, valid = _random_case(5, layers=3, clips=2, queries=20, slots=9)
    host = np.asarray(matching.hungarian_match(scores, valid, "host"))
    device = np.asarray(matching.hungarian_match(scores, valid, "device"))
    np.testing.assert_array_equal(host, device)


def test_host_matcher_survives_non_finite_scores():
    """A diverged step must reach the loop's NaN check, not die in scipy."""
    scores, valid = _random_case(3)
    scores[0, 0, 2, 1] = np.nan
    scores[1, 1] = np.inf
    result = np.asarray(matching.hungarian_match(scores, valid, "host"))
    for layer in range(2):
        for clip in range(3):
            matched = result[layer, clip, valid[clip]]
            assert len(set(matched.tolist())) == len(matched)  # still a matching
    finite = _scipy_reference(np.where(np.isfinite(scores), scores, -1e9), valid)
    assert all(result[key] == row for key, row in finite.items())


def test_host_matcher_makes_one_callback_per_device(monkeypatch):
    devices = np.array(jax.devices()[:8])
    assert devices.size == 8, "conftest sets 8 virtual CPU devices"
    mesh = Mesh(devices, ("data",))
    calls = []
    original = matching._solve_on_host

    def recording_solver(scores, valid):
        calls.append(np.shape(scores))
        return original(scores, valid)

    monkeypatch.setattr(matching, "_solve_on_host", recording_solver)
    scores, valid = _random_case(3, layers=3, clips=16, queries=6, slots=3)
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
    scores_global = jax.device_put(scores, sharding)
    valid_global = jax.device_put(valid, NamedSharding(mesh, PartitionSpec("data")))
    result = jax.jit(lambda s, v: matching.hungarian_match(s, v, "host", mesh))(
        scores_global, valid_global)
    result = np.asarray(result)
    assert len(calls) == 8  # one host call per device, all layers at once
    assert all(shape == (3, 2, 6, 3) for shape in calls)  # each sees only its 2 clips
    expected = _scipy_reference(scores, valid)
    for (layer, clip, slot), row in expected.items():
        assert result[layer, clip, slot] == row


def test_matching_scores_equal_numpy():
    rng = np.random.RandomState(0)
    logits = rng.randn(1, 2, 4, 3)
    masks = rng.randn(1, 2, 4, 2, 3, 3)
    labels = np.array([[0, 1], [2, 1]])
    targets = (rng.rand(2, 2, 2, 3, 3) > 0.5).astype(np.float32)
    ours = np.asarray(matching.matching_scores(logits, masks, labels, targets))
    for b in range(2):
        probs = np.exp(logits[0, b]) / np.exp(logits[0, b]).sum(-1, keepdims=True)
        for n in range(4):
            for g in range(2):
                s = 1 / (1 + np.exp(-masks[0, b, n].ravel()))
                t = targets[b, g].ravel()
                dice = (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
                expected = probs[n, labels[b, g]] + 3 * dice
                assert abs(ours[0, b, n, g] - expected) < 1e-5

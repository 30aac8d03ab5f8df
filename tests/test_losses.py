"""The set criterion against a numpy reference on a small hand-built case."""

import itertools

import jax.numpy as jnp
import numpy as np

from ifc_jax.data.clips import stride4_counts
from ifc_jax.train import losses, matching
from ifc_jax.train.targets import soft_targets, upsample_predictions
from tests import numpy_reference as ref


def test_prediction_upsampling_matches_pytorch_bilinear():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 3, 5, 7)
    np.testing.assert_allclose(upsample_predictions(jnp.asarray(logits), 10, 14),
                               ref.torch_bilinear(logits, 10, 14), atol=1e-5)
    # The targets' downsampling, on the host: tests/test_targets.py.


def _numpy_criterion(class_logits, mask_logits, labels, valid, masks):
    """Brute-force matching over permutations + the docs/training.md#losses formulas, in float64."""
    num_layers, clips, queries, outputs = class_logits.shape
    no_object = outputs - 1
    h4, w4 = masks.shape[-2] // 4, masks.shape[-1] // 4
    targets = ref.torch_bilinear(masks.astype(float), h4, w4)
    num_masks = max(valid.sum(), 1)
    terms, total = {}, 0.0
    for layer in range(num_layers):
        suffix = "" if layer == num_layers - 1 else f"_{layer}"
        upsampled = ref.torch_bilinear(mask_logits[layer], h4, w4)  # (B, N, T, h4, w4)
        ce_num = ce_den = focal_sum = dice_sum = 0.0
        for b in range(clips):
            slots = np.flatnonzero(valid[b])
            probs = np.exp(class_logits[layer, b])
            probs /= probs.sum(-1, keepdims=True)
            sig = 1 / (1 + np.exp(-upsampled[b]))

            def dice_coef(n, g, sig=sig, b=b):
                s, t = sig[n].ravel(), targets[b, g].ravel()
                return (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)

            best, best_perm = -np.inf, None
            for perm in itertools.permutations(range(queries), len(slots)):
                score = sum(probs[n, labels[b, g]] + 3 * dice_coef(n, g)
                            for n, g in zip(perm, slots, strict=True))
                if score > best:
                    best, best_perm = score, perm
            query_class = np.full(queries, no_object)
            for n, g in zip(best_perm, slots, strict=True):
                query_class[n] = labels[b, g]
                x, t = upsampled[b, n], targets[b, g]
                p = 1 / (1 + np.exp(-x))
                bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
                p_t = p * t + (1 - p) * (1 - t)
                focal = (0.25 * t + 0.75 * (1 - t)) * bce * (1 - p_t) ** 2
                focal_sum += focal.mean()
                dice_sum += 1 - dice_coef(n, g)
            log_probs = np.log(probs)
            for n in range(queries):
                w = 0.1 if query_class[n] == no_object else 1.0
                ce_num += -w * log_probs[n, query_class[n]]
                ce_den += w
        terms[f"loss_ce{suffix}"] = ce_num / ce_den
        terms[f"loss_mask{suffix}"] = focal_sum / num_masks
        terms[f"loss_dice{suffix}"] = dice_sum / num_masks
        total += terms[f"loss_ce{suffix}"] + 3 * terms[f"loss_mask{suffix}"] + 3 * terms[
            f"loss_dice{suffix}"]
    return total, terms


def test_set_criterion_equals_numpy_reference():
    rng = np.random.RandomState(0)
    layers, clips, queries, classes, slots, frames = 3, 2, 4, 3, 3, 2
    class_logits = rng.randn(layers, clips, queries, classes + 1)
    mask_logits = rng.randn(layers, clips, queries, frames, 2, 3) * 2
    masks = np.zeros((clips, slots, frames, 8, 12), bool)
    masks[0, 0, :, :4, :6] = True
    masks[0, 1, 0, 3:, 5:] = True  # present in frame 0 only
    masks[1, 0, :, 2:7, 1:9] = True
    masks[1, 2] = rng.rand(frames, 8, 12) > 0.6  # slot 2 is padding: must be ignored
    labels = np.array([[0, 2, 1], [1, 0, 2]])
    valid = np.array([[True, True, False], [True, False, False]])

    targets = soft_targets(jnp.asarray(stride4_counts(masks)))
    scores = matching.matching_scores(
        jnp.asarray(class_logits, jnp.float32),
        upsample_predictions(jnp.asarray(mask_logits, jnp.float32), 2, 3),
        jnp.asarray(labels), targets)
    query_index = matching.hungarian_match(scores, jnp.asarray(valid), "host")
    total, terms = losses.set_criterion(
        jnp.asarray(class_logits, jnp.float32), jnp.asarray(mask_logits, jnp.float32),
        jnp.asarray(labels), jnp.asarray(valid), targets, query_index)

    expected_total, expected_terms = _numpy_criterion(class_logits, mask_logits, labels, valid,
                                                      masks)
    assert set(terms) == set(expected_terms) == {
        "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0",
        "loss_ce_1", "loss_mask_1", "loss_dice_1"}
    for name, value in expected_terms.items():
        assert abs(float(terms[name]) - value) < 1e-5 * max(1.0, abs(value)), name
    assert abs(float(total) - expected_total) < 1e-4


def test_no_targets_gives_pure_no_object_ce():
    class_logits = jnp.asarray(np.random.RandomState(1).randn(1, 1, 3, 3), jnp.float32)
    mask_logits = jnp.zeros((1, 1, 3, 1, 2, 2))
    total, terms = losses.set_criterion(
        class_logits, mask_logits, jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), bool),
        jnp.zeros((1, 2, 1, 4, 4)), jnp.zeros((1, 1, 2), jnp.int32))
    log_probs = np.log(np.exp(class_logits[0, 0]) / np.exp(class_logits[0, 0]).sum(-1,
                                                                                   keepdims=True))
    assert abs(float(terms["loss_ce"]) + log_probs[:, 2].mean()) < 1e-5
    assert float(terms["loss_mask"]) == 0 and float(terms["loss_dice"]) == 0

"""Loss groups (docs/training.md#loss-groups): the set criterion normalises like the authors' code.

A float64 numpy transcription of the authors' criterion, written from the description: each
group of consecutive clips is padded to its largest frame (no size divisibility), targets are
that canvas's masks bilinearly downsampled to ceil(H/4) x ceil(W/4), predictions the stride-8
logits of that canvas (ceil(H/8) x ceil(W/8)) bilinearly upsampled to the targets' size;
scipy matching on that canvas; CE weighted mean per group averaged over groups; focal mean
and dice sums over the group canvas, both / the global mask count. Loss terms and their
gradients (analytic, checked by finite differences) against ours on 1 and 8 devices.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy.optimize import linear_sum_assignment

from ifc_jax.config import load_config
from ifc_jax.data.clips import stride4_counts
from ifc_jax.train.losses import PAPER_LOSS_WEIGHTS
from ifc_jax.train.step import BATCH_AXIS, loss_from_outputs
from tests import numpy_reference as ref

LAYERS, QUERIES, CLASSES, FRAMES, SLOTS = 3, 6, 3, 2, 3
HEIGHT, WIDTH = 48, 64  # the static canvas: stride-8 6 x 8, stride-4 12 x 16
# (height, width) of each clip (sides multiples of 8, see targets.py: the canvases where the
# authors' grids are exactly ours) and its number of instances.
CLIP_SIZES = [(48, 40), (32, 64), (24, 40), (40, 24), (16, 56), (48, 64), (32, 32), (24, 48)]
INSTANCES = [2, 3, 1, 0, 3, 1, 2, 3]
ALPHA, GAMMA = PAPER_LOSS_WEIGHTS.focal_alpha, PAPER_LOSS_WEIGHTS.focal_gamma
TERMS = [f"{kind}{suffix}" for suffix in ("_0", "_1", "")
         for kind in ("loss_ce", "loss_mask", "loss_dice")]
MEASURED: dict[str, float] = {}  # largest relative differences, printed by -s


def make_batch(sizes, instances, height, width, frames, seed):
    """Clips of the given valid sizes placed top-left in (height, width), with random
    rectangles as instances (some absent in a frame). Returns (batch of MODEL_INPUTS but
    frames, full-resolution masks (B, G, T, H, W))."""
    rng = np.random.RandomState(seed)
    clips = len(sizes)
    masks = np.zeros((clips, SLOTS, frames, height, width), bool)
    labels = np.zeros((clips, SLOTS), np.int32)
    valid = np.zeros((clips, SLOTS), bool)
    padding = np.ones((clips, frames, height, width), bool)
    for b, ((h, w), count) in enumerate(zip(sizes, instances, strict=True)):
        padding[b, :, :h, :w] = False
        for g in range(count):
            labels[b, g], valid[b, g] = rng.randint(CLASSES), True
            for t in range(frames):
                if g == 1 and t == 0:
                    continue  # absent in frame 0
                y0, x0 = rng.randint(0, h - 4), rng.randint(0, w - 4)
                y1, x1 = rng.randint(y0 + 2, h + 1), rng.randint(x0 + 2, w + 1)
                masks[b, g, t, y0:y1, x0:x1] = True
    batch = {"padding_mask": padding, "labels": labels, "instance_valid": valid,
             "target_counts": stride4_counts(masks)}
    return batch, masks


def random_outputs(clips, frames, height8, width8, seed):
    rng = np.random.RandomState(seed)
    class_logits = rng.randn(LAYERS, clips, QUERIES, CLASSES + 1)
    mask_logits = rng.randn(LAYERS, clips, QUERIES, frames, height8, width8) * 2
    return class_logits, mask_logits


# ------------------------------------------------------------------------------------------
# The authors' criterion in float64 numpy, with analytic gradients.


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _focal_and_grad(x, t):
    """Elementwise sigmoid focal loss of logits x, soft targets t, and d loss / d x."""
    p = _sigmoid(x)
    ce = np.logaddexp(0, x) - x * t  # binary cross-entropy with logits
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = ALPHA * t + (1 - ALPHA) * (1 - t)
    loss = alpha_t * ce * (1 - p_t) ** GAMMA
    d_p_t = (2 * t - 1) * p * (1 - p)
    grad = alpha_t * ((p - t) * (1 - p_t) ** GAMMA
                      - ce * GAMMA * (1 - p_t) ** (GAMMA - 1) * d_p_t)
    return loss, grad


def _dice_and_grad(x, t):
    """1 - (2 sum s t + 1) / (sum s + sum t + 1), s = sigmoid(x), and d / d x."""
    s = _sigmoid(x)
    inter, total = (s * t).sum(), s.sum() + t.sum() + 1
    loss = 1 - (2 * inter + 1) / total
    d_s = -(2 * t * total - (2 * inter + 1)) / total ** 2
    return loss, d_s * s * (1 - s)


def authors_criterion(class_logits, mask_logits, labels, valid, masks, sizes, group_size):
    """{term: value}, {term: (d/d class_logits, d/d mask_logits)} of the authors' criterion.

    class_logits (L, B, N, K+1), mask_logits (L, B, N, T, H/8, W/8), masks (B, G, T, H, W)
    bool, sizes: each clip's valid (height, width).
    """
    clips = class_logits.shape[1]
    group = group_size or clips
    groups = [list(range(start, start + group)) for start in range(0, clips, group)]
    num_masks = max(int(valid.sum()), 1)
    no_object = class_logits.shape[-1] - 1
    values, grads = {}, {}
    for layer in range(LAYERS):
        suffix = "" if layer == LAYERS - 1 else f"_{layer}"
        d_class = np.zeros_like(class_logits)
        d_focal, d_dice = np.zeros_like(mask_logits), np.zeros_like(mask_logits)
        ce_of_groups, focal_sum, dice_sum = [], 0.0, 0.0
        for members in groups:
            canvas_h = max(sizes[b][0] for b in members)
            canvas_w = max(sizes[b][1] for b in members)
            h4, w4 = math.ceil(canvas_h / 4), math.ceil(canvas_w / 4)
            h8, w8 = math.ceil(canvas_h / 8), math.ceil(canvas_w / 8)
            rows = ref.torch_bilinear_1d_weights(h8, h4)  # (h4, h8)
            cols = ref.torch_bilinear_1d_weights(w8, w4)
            numerator, denominator, ce_grads = 0.0, 0.0, []
            for b in members:
                targets = ref.torch_bilinear(masks[b, :, :, :canvas_h, :canvas_w].astype(float),
                                             h4, w4)  # (G, T, h4, w4)
                logits = np.einsum("ih,ntha,ja->ntij", rows,
                                   mask_logits[layer, b, :, :, :h8, :w8], cols)
                probs = np.exp(class_logits[layer, b])
                probs /= probs.sum(-1, keepdims=True)
                slots = np.flatnonzero(valid[b])
                query_class = np.full(QUERIES, no_object)
                if slots.size:
                    dice_coef = np.array([[1 - _dice_and_grad(logits[n], targets[g])[0]
                                           for g in slots] for n in range(QUERIES)])
                    score = probs[:, labels[b, slots]] + 3 * dice_coef
                    queries, columns = linear_sum_assignment(score, maximize=True)
                    for n, g in zip(queries, slots[columns], strict=True):
                        query_class[n] = labels[b, g]
                        focal, d_f = _focal_and_grad(logits[n], targets[g])
                        dice, d_d = _dice_and_grad(logits[n], targets[g])
                        focal_sum += focal.mean()
                        dice_sum += dice
                        # Back through the upsampling (linear) onto the canvas's stride-8 cells.
                        d_focal[layer, b, n, :, :h8, :w8] += np.einsum(
                            "ih,tij,ja->tha", rows, d_f / d_f.size, cols)
                        d_dice[layer, b, n, :, :h8, :w8] += np.einsum(
                            "ih,tij,ja->tha", rows, d_d, cols)
                weights = np.where(query_class == no_object, 0.1, 1.0)
                nll = -np.log(probs[np.arange(QUERIES), query_class])
                numerator += (weights * nll).sum()
                denominator += weights.sum()
                ce_grads.append((b, weights[:, None] * (probs - np.eye(no_object + 1)[
                    query_class])))
            ce_of_groups.append(numerator / denominator)
            for b, grad in ce_grads:
                d_class[layer, b] = grad / denominator / len(groups)
        values[f"loss_ce{suffix}"] = float(np.mean(ce_of_groups))
        values[f"loss_mask{suffix}"] = focal_sum / num_masks
        values[f"loss_dice{suffix}"] = dice_sum / num_masks
        zero_class, zero_mask = np.zeros_like(class_logits), np.zeros_like(mask_logits)
        grads[f"loss_ce{suffix}"] = (d_class, zero_mask)
        grads[f"loss_mask{suffix}"] = (zero_class, d_focal / num_masks)
        grads[f"loss_dice{suffix}"] = (zero_class, d_dice / num_masks)
    return values, grads


# ------------------------------------------------------------------------------------------
# Ours: the train step's loss plumbing on given outputs.


def our_terms_and_jacobians(class_logits, mask_logits, batch, group_size, devices):
    """{term: value}, {term: (d/d class_logits, d/d mask_logits)} from `loss_from_outputs`
    with the host matcher, the clips split over `devices` as the train step splits them."""
    mesh = Mesh(np.asarray(devices), (BATCH_AXIS,))

    def terms_vector(class_logits, mask_logits, batch):
        _, terms = loss_from_outputs(class_logits, mask_logits, batch, "host", mesh,
                                     PAPER_LOSS_WEIGHTS, group_size)
        vector = jnp.stack([terms[name] for name in TERMS])
        return vector, vector

    jacobians = jax.jacrev(terms_vector, argnums=(0, 1), has_aux=True)
    outputs = NamedSharding(mesh, PartitionSpec(None, BATCH_AXIS))
    clips = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    function = jax.jit(jacobians, in_shardings=(outputs, outputs, clips))
    (d_class, d_mask), values = function(jnp.asarray(class_logits, jnp.float32),
                                         jnp.asarray(mask_logits, jnp.float32),
                                         jax.tree.map(jnp.asarray, batch))
    values, d_class, d_mask = (np.asarray(x, np.float64) for x in (values, d_class, d_mask))
    return ({name: values[i] for i, name in enumerate(TERMS)},
            {name: (d_class[i], d_mask[i]) for i, name in enumerate(TERMS)})


def relative_difference(ours, expected) -> float:
    """max |ours - expected| / max |expected| (0 when both are 0)."""
    scale = np.max(np.abs(expected))
    error = np.max(np.abs(np.asarray(ours) - expected))
    return float(error / scale) if scale > 0 else float(error)


@pytest.fixture(scope="module")
def case():
    batch, masks = make_batch(CLIP_SIZES, INSTANCES, HEIGHT, WIDTH, FRAMES, seed=0)
    class_logits, mask_logits = random_outputs(len(CLIP_SIZES), FRAMES, HEIGHT // 8, WIDTH // 8,
                                               seed=1)
    return batch, masks, class_logits, mask_logits


def test_reference_gradients_are_the_derivatives_of_its_losses(case):
    """Central differences of the numpy criterion at a few inputs (the matching does not move
    for steps of 1e-6): the analytic gradients the next test compares against are right."""
    batch, masks, class_logits, mask_logits = case
    args = (batch["labels"], batch["instance_valid"], masks, CLIP_SIZES, 2)
    _, grads = authors_criterion(class_logits, mask_logits, *args)
    rng, step = np.random.RandomState(2), 1e-6
    for name in ("loss_ce_0", "loss_mask", "loss_dice_1", "loss_dice"):
        which = 0 if name.startswith("loss_ce") else 1
        grad = grads[name][which]
        # Inputs that matter (inside a canvas, of a matched query), plus random ones.
        picks = [np.unravel_index(i, grad.shape) for i in np.argsort(-np.abs(grad.ravel()))[:3]]
        picks += [tuple(rng.randint(n) for n in grad.shape) for _ in range(3)]
        for index in picks:
            inputs = [class_logits.copy(), mask_logits.copy()]
            inputs[which][index] += step
            plus = authors_criterion(*inputs, *args)[0][name]
            inputs[which][index] -= 2 * step
            minus = authors_criterion(*inputs, *args)[0][name]
            numeric = (plus - minus) / (2 * step)
            assert abs(numeric - grad[index]) <= 1e-6 * max(1.0, abs(grad[index])), (name, index)


@pytest.mark.parametrize("group_size", [1, 2, 0])
def test_terms_and_gradients_equal_the_authors_on_1_and_8_devices(case, group_size):
    batch, masks, class_logits, mask_logits = case
    expected, expected_grads = authors_criterion(class_logits, mask_logits, batch["labels"],
                                                 batch["instance_valid"], masks, CLIP_SIZES,
                                                 group_size)
    results = {count: our_terms_and_jacobians(class_logits, mask_logits, batch, group_size,
                                              jax.devices()[:count]) for count in (1, 8)}
    for count, (values, grads) in results.items():
        for name in TERMS:
            value_error = abs(values[name] - expected[name]) / abs(expected[name])
            class_error = relative_difference(grads[name][0], expected_grads[name][0])
            mask_error = relative_difference(grads[name][1], expected_grads[name][1])
            key = f"group {group_size}, {count} device(s)"
            MEASURED[key] = max(MEASURED.get(key, 0.0), value_error, class_error, mask_error)
            assert value_error < 1e-5, (name, count, values[name], expected[name])
            assert class_error < 1e-5, (name, count, "d/d class logits")
            assert mask_error < 1e-5, (name, count, "d/d mask logits")
    # The 8-device split gives the 1-device result (up to float32 summation order).
    for name in TERMS:
        np.testing.assert_allclose(results[8][0][name], results[1][0][name], rtol=1e-6,
                                   err_msg=name)
        for one, eight in zip(results[1][1][name], results[8][1][name], strict=True):
            assert relative_difference(eight, one) < 1e-6, name
    print(MEASURED)


def test_groups_change_the_terms_as_intended(case):
    """Sanity: one group per clip, per pair and for the whole batch give different CE and mask
    terms on this batch of mixed sizes and counts (the option is not a no-op)."""
    batch, masks, class_logits, mask_logits = case
    args = (batch["labels"], batch["instance_valid"], masks, CLIP_SIZES)
    by_group = {g: authors_criterion(class_logits, mask_logits, *args, g)[0] for g in (1, 2, 0)}
    for name in ("loss_ce", "loss_mask", "loss_dice"):
        assert len({round(v[name], 9) for v in by_group.values()}) == 3, name


def test_paper_config_clip_padded_into_the_static_canvas_gives_the_unpadded_loss():
    """With the paper config (groups of 2), a group of a 360 x 640 and a 360 x 480 clip padded
    into the 480 x 864 canvas gives the terms of the same clips on a 360 x 640 canvas, whatever
    is predicted on the padding; the logits there get no gradient."""
    config = load_config("ifc_r50_ytvis19")
    group_size = config.train.loss_group_size
    assert group_size == 2
    big, small = (config.data.pad_height, config.data.pad_width), (360, 640)
    assert big == (480, 864)
    sizes, frames = [(360, 640), (360, 480)], config.data.num_frames
    padded, masks = make_batch(sizes, [3, 2], *big, frames, seed=3)
    unpadded = {"padding_mask": padded["padding_mask"][..., :360, :640],
                "labels": padded["labels"], "instance_valid": padded["instance_valid"],
                "target_counts": stride4_counts(masks[..., :360, :640])}
    class_logits, mask_logits = random_outputs(2, frames, big[0] // 8, big[1] // 8, seed=4)
    mask_logits[..., 45:, :] = -6 + np.random.RandomState(5).randn(*mask_logits[..., 45:, :].shape)
    mask_logits[..., 80:] = -6 + np.random.RandomState(6).randn(*mask_logits[..., 80:].shape)

    def terms_and_grad(class_logits, mask_logits, batch):
        def total(class_logits, mask_logits):
            return loss_from_outputs(class_logits, mask_logits, batch, "host", None,
                                     PAPER_LOSS_WEIGHTS, group_size)
        return jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
            jnp.asarray(class_logits, jnp.float32), jnp.asarray(mask_logits, jnp.float32))

    (loss_big, terms_big), (d_class_big, d_mask_big) = terms_and_grad(
        class_logits, mask_logits, padded)
    (loss_small, terms_small), (d_class_small, d_mask_small) = terms_and_grad(
        class_logits, mask_logits[..., :small[0] // 8, :small[1] // 8], unpadded)
    worst = 0.0
    for name in terms_small:
        difference = abs(float(terms_big[name]) - float(terms_small[name]))
        worst = max(worst, difference / abs(float(terms_small[name])))
        np.testing.assert_allclose(terms_big[name], terms_small[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(loss_big, loss_small, rtol=1e-5)
    worst = max(worst, relative_difference(d_class_big, np.asarray(d_class_small)),
                relative_difference(d_mask_big[..., :45, :80], np.asarray(d_mask_small)))
    assert worst < 1e-5
    assert not np.any(np.asarray(d_mask_big)[..., 45:, :])
    assert not np.any(np.asarray(d_mask_big)[..., 80:])
    MEASURED["360x640 in 480x864 vs 360x640"] = worst
    print(MEASURED)

"""IFC's set criterion: CE with a down-weighted no-object class, focal and dice.

See docs/training.md#losses.

Every decoder layer is matched on its own and contributes 1 * CE + 3 * focal + 3 * dice.
Terms are named like the original: `loss_ce`, `loss_mask`, `loss_dice` for the last layer and
`loss_ce_0`, ..., `loss_dice_1` for the auxiliary layers 0 and 1.

Normalisation is over the global batch, which `jit` on global arrays gives for free:
* CE: weighted mean sum_i w_i nll_i / sum_i w_i over all queries of all clips.
* focal: per matched instance the mean over its T*H/4*W/4 pixels, summed, / num_masks.
* dice: 1 - (2 sum s*g + 1) / (sum s + sum g + 1) per matched instance, summed, / num_masks.
with num_masks = max(1, number of valid GT tracks in the global batch). With DDP's gradient
averaging, the original's per-GPU sums over (all-reduced count / world size) equal these
global ratios for the mask terms.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ifc_jax.train.targets import upsample_predictions

Array = jax.Array


class LossWeights(NamedTuple):
    ce: float = 1.0
    mask: float = 3.0
    dice: float = 3.0
    no_object: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


PAPER_LOSS_WEIGHTS = LossWeights()


def layer_suffix(layer: int, num_layers: int) -> str:
    """'' for the last decoder layer, '_<layer>' for auxiliary layers (DETR naming)."""
    return "" if layer == num_layers - 1 else f"_{layer}"


def classification_targets(query_index: Array, labels: Array, valid: Array,
                           num_queries: int, no_object: int) -> Array:
    """(B, G) matches -> (B, N) class per query (`no_object` for unmatched queries)."""
    matched = jax.nn.one_hot(query_index, num_queries, dtype=jnp.int32) * valid[..., None]
    is_matched = matched.sum(axis=1) > 0  # (B, N)
    label = jnp.einsum("bgn,bg->bn", matched, labels.astype(jnp.int32))
    return jnp.where(is_matched, label, no_object)


def weighted_cross_entropy(class_logits: Array, targets: Array, no_object_weight: float
                           ) -> Array:
    """sum w_i * nll_i / sum w_i; w = no_object_weight on the no-object class, else 1."""
    num_classes_with_bg = class_logits.shape[-1]
    log_probs = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    weights = jnp.where(targets == num_classes_with_bg - 1, no_object_weight, 1.0)
    return jnp.sum(weights * nll) / jnp.sum(weights)


def sigmoid_focal_per_instance(logits: Array, targets: Array, alpha: float, gamma: float
                               ) -> Array:
    """Focal loss averaged over all trailing (T, H, W) axes. (..., T, H, W) -> (...)."""
    prob = jax.nn.sigmoid(logits)
    ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * ce * (1 - p_t) ** gamma
    return loss.reshape(*loss.shape[:-3], -1).mean(-1)


def dice_loss_per_instance(logits: Array, targets: Array) -> Array:
    """1 - (2 sum s*g + 1) / (sum s + sum g + 1) over trailing (T, H, W). -> (...)."""
    prob = jax.nn.sigmoid(logits).reshape(*logits.shape[:-3], -1)
    flat_targets = targets.reshape(*targets.shape[:-3], -1)
    numerator = 2 * jnp.sum(prob * flat_targets, -1) + 1
    return 1 - numerator / (prob.sum(-1) + flat_targets.sum(-1) + 1)


def set_criterion(
    class_logits: Array,
    mask_logits: Array,
    labels: Array,
    valid: Array,
    target_masks: Array,
    query_index: Array,
    weights: LossWeights = PAPER_LOSS_WEIGHTS,
) -> tuple[Array, dict[str, Array]]:
    """Total loss and its named terms.

    Args:
      class_logits: (L, B, N, K+1); mask_logits: (L, B, N, T, h8, w8).
      labels, valid: (B, G) GT class and slot validity.
      target_masks: (B, G, T, H4, W4) stride-4 soft targets.
      query_index: (L, B, G) from `hungarian_match`.
    Returns:
      (scalar total, {name: scalar}) with `loss_ce`, `loss_mask`, `loss_dice` (+ `_i` aux).
    """
    num_layers, _, num_queries, num_outputs = class_logits.shape
    no_object = num_outputs - 1
    valid_f = valid.astype(jnp.float32)
    num_masks = jnp.maximum(valid_f.sum(), 1.0)
    height, width = target_masks.shape[-2:]
    terms: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)
    for layer in range(num_layers):
        suffix = layer_suffix(layer, num_layers)
        class_targets = classification_targets(query_index[layer], labels, valid, num_queries,
                                               no_object)
        loss_ce = weighted_cross_entropy(class_logits[layer], class_targets, weights.no_object)
        matched_logits = jnp.take_along_axis(
            mask_logits[layer], query_index[layer][:, :, None, None, None], axis=1
        )  # (B, G, T, h8, w8)
        matched_logits = upsample_predictions(matched_logits, height, width)
        focal = sigmoid_focal_per_instance(matched_logits, target_masks, weights.focal_alpha,
                                           weights.focal_gamma)
        dice = dice_loss_per_instance(matched_logits, target_masks)
        loss_mask = jnp.sum(focal * valid_f) / num_masks
        loss_dice = jnp.sum(dice * valid_f) / num_masks
        terms[f"loss_ce{suffix}"] = loss_ce
        terms[f"loss_mask{suffix}"] = loss_mask
        terms[f"loss_dice{suffix}"] = loss_dice
        total = total + weights.ce * loss_ce + weights.mask * loss_mask + weights.dice * loss_dice
    return total, terms

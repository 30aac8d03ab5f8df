"""IFC's set criterion: CE with a down-weighted no-object class, focal and dice.

See docs/training.md#losses and #loss-groups.

Every decoder layer is matched on its own and contributes 1 * CE + 3 * focal + 3 * dice.
Terms are named like the original: `loss_ce`, `loss_mask`, `loss_dice` for the last layer and
`loss_ce_0`, ..., `loss_dice_1` for the auxiliary layers 0 and 1.

Normalisation follows the authors' code, whose unit is a loss group (one GPU's batch: 2
consecutive clips in their 8-GPU recipe; `group_size`, 0 = the whole global batch):
* CE: per group the weighted mean sum_i w_i nll_i / sum_i w_i over all queries of its clips,
  then the mean over groups (DDP averages the per-GPU losses' gradients).
* focal: per matched instance the mean over its T x (group canvas) stride-4 cells, summed,
  / num_masks.
* dice: 1 - (2 sum s*g + 1) / (sum s + sum g + 1) per matched instance, the sums over its
  T x (group canvas) cells, summed, / num_masks.
with num_masks = max(1, number of valid GT tracks in the global batch): the original divides
per-GPU sums by (all-reduced count / world size), which DDP's gradient averaging turns into
this global ratio. The group canvas (`targets.loss_canvas`) is the largest valid frame of the
group, so padding beyond it counts nowhere; groups are independent of the device count.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ifc_jax.train.targets import LossCanvas, num_loss_groups, upsample_in_canvas

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


def weighted_cross_entropy(class_logits: Array, targets: Array, no_object_weight: float,
                           group_size: int = 0) -> Array:
    """Per loss group sum w_i * nll_i / sum w_i, averaged over the groups; w = no_object_weight
    on the no-object class, else 1.

    class_logits: (B, N, K+1); targets: (B, N). Groups are `group_size` consecutive clips
    (0 = all B clips, one group).
    """
    num_classes_with_bg = class_logits.shape[-1]
    log_probs = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    weights = jnp.where(targets == num_classes_with_bg - 1, no_object_weight, 1.0)
    groups = num_loss_groups(targets.shape[0], group_size)
    if groups == 1:  # one sum over the batch, in the order the whole-batch mean always used
        return jnp.sum(weights * nll) / jnp.sum(weights)
    # Every group has N * clips > 0 queries and weights > 0: no empty denominator.
    numerator = jnp.sum((weights * nll).reshape(groups, -1), axis=-1)
    return jnp.mean(numerator / jnp.sum(weights.reshape(groups, -1), axis=-1))


def sigmoid_focal_per_instance(logits: Array, targets: Array, alpha: float, gamma: float,
                               canvas_mask: Array | None = None,
                               canvas_cells: Array | None = None) -> Array:
    """Focal loss averaged over the (T, H, W) cells of the canvas. (..., T, H, W) -> (...).

    canvas_mask: broadcastable to (..., 1, H, W), 1 on the canvas; canvas_cells: its number of
    (H, W) cells, broadcastable to (...). None: the whole grid.
    """
    prob = jax.nn.sigmoid(logits)
    ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * ce * (1 - p_t) ** gamma
    if canvas_mask is None:
        return loss.reshape(*loss.shape[:-3], -1).mean(-1)
    total = jnp.sum((loss * canvas_mask).reshape(*loss.shape[:-3], -1), -1)
    # max(., 1): an all-padded group (no canvas) contributes 0, not 0 / 0.
    return total / jnp.maximum(logits.shape[-3] * canvas_cells, 1.0)


def dice_loss_per_instance(logits: Array, targets: Array, canvas_mask: Array | None = None
                           ) -> Array:
    """1 - (2 sum s*g + 1) / (sum s + sum g + 1), the sums over the (T, H, W) cells of the
    canvas (canvas_mask as in `sigmoid_focal_per_instance`; None: the whole grid). -> (...)."""
    prob = jax.nn.sigmoid(logits)
    if canvas_mask is not None:
        prob, targets = prob * canvas_mask, targets * canvas_mask
    prob = prob.reshape(*logits.shape[:-3], -1)
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
    canvas: LossCanvas | None = None,
    group_size: int = 0,
) -> tuple[Array, dict[str, Array]]:
    """Total loss and its named terms.

    Args:
      class_logits: (L, B, N, K+1); mask_logits: (L, B, N, T, h8, w8).
      labels, valid: (B, G) GT class and slot validity.
      target_masks: (B, G, T, H4, W4) stride-4 soft targets.
      query_index: (L, B, G) from `hungarian_match`.
      canvas: each clip's loss-group canvas (`targets.loss_canvas` with the same group_size);
        None: the whole grid for every clip.
      group_size: clips per loss group for the CE mean (0 = the whole batch).
    Returns:
      (scalar total, {name: scalar}) with `loss_ce`, `loss_mask`, `loss_dice` (+ `_i` aux).
    """
    num_layers, _, num_queries, num_outputs = class_logits.shape
    no_object = num_outputs - 1
    valid_f = valid.astype(jnp.float32)
    num_masks = jnp.maximum(valid_f.sum(), 1.0)
    height, width = target_masks.shape[-2:]
    canvas_mask = canvas_cells = None
    if canvas is not None:
        canvas_mask = canvas.mask[:, None, None]  # (B, 1, 1, H4, W4): over slots and frames
        canvas_cells = canvas.cells[:, None]      # (B, 1)
    terms: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)
    for layer in range(num_layers):
        suffix = layer_suffix(layer, num_layers)
        class_targets = classification_targets(query_index[layer], labels, valid, num_queries,
                                               no_object)
        loss_ce = weighted_cross_entropy(class_logits[layer], class_targets, weights.no_object,
                                         group_size)
        matched_logits = jnp.take_along_axis(
            mask_logits[layer], query_index[layer][:, :, None, None, None], axis=1
        )  # (B, G, T, h8, w8)
        matched_logits = upsample_in_canvas(matched_logits, canvas, height, width, batch_axis=0)
        focal = sigmoid_focal_per_instance(matched_logits, target_masks, weights.focal_alpha,
                                           weights.focal_gamma, canvas_mask, canvas_cells)
        dice = dice_loss_per_instance(matched_logits, target_masks, canvas_mask)
        loss_mask = jnp.sum(focal * valid_f) / num_masks
        loss_dice = jnp.sum(dice * valid_f) / num_masks
        terms[f"loss_ce{suffix}"] = loss_ce
        terms[f"loss_mask{suffix}"] = loss_mask
        terms[f"loss_dice{suffix}"] = loss_dice
        total = total + weights.ce * loss_ce + weights.mask * loss_mask + weights.dice * loss_dice
    return total, terms

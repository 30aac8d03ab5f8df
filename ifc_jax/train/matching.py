"""Hungarian matching of a clip's N queries to its G ground-truth tracks.

See docs/training.md#matching.

Cost to maximise, per clip and decoder layer: p(class of the GT) + 3 * dice over the clip's
T x (loss canvas) volume: like the authors' matcher, which sees the masks of its GPU's padded
batch, the dice sums run over the clip's loss-group canvas (`targets.loss_canvas`; the whole
T x H/4 x W/4 grid without one), the same cells the losses count. Two exact solvers behind
one function:

* `host`: scipy's `linear_sum_assignment`, reached through ONE `jax.pure_callback` per step
  that carries the cost matrices of every decoder layer. The callback sits inside
  `jax.shard_map` over the batch axis, so each device ships only its own clips to the host
  (a plain callback under jit would first gather the whole batch onto one device).
* `device`: optax's JAX Hungarian algorithm, vmapped over layers and clips; no host round
  trip, for TPU pods.

Padded target slots (valid = False) are never matched: `host` drops them before solving;
`device` gives them a constant cost column, which leaves the optimum over the valid columns
unchanged (needs N >= G, checked by the config validation).

Result: `query_index` int32 (L, B, G), the query matched to each target slot (0 where the slot
is invalid), which the losses gather with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

Array = jax.Array

CLASS_COST_WEIGHT = 1.0
DICE_COST_WEIGHT = 3.0
MATCHERS = ("host", "device")


def matching_scores(class_logits: Array, mask_logits: Array, labels: Array,
                    target_masks: Array, canvas_mask: Array | None = None) -> Array:
    """Score matrices S = p(class) + 3 * dice_coefficient, to be maximised.

    Args:
      class_logits: (L, B, N, K+1).
      mask_logits: (L, B, N, T, h, w) on the stride-4 grid (already upsampled, with
        `targets.upsample_in_canvas` when there is a canvas).
      labels: (B, G) int class of each target slot.
      target_masks: (B, G, T, h, w) float soft targets in [0, 1].
      canvas_mask: (B, h, w) 1 on each clip's loss canvas (`targets.loss_canvas`); the dice
        sums cover only those cells. None: the whole grid.
    Returns:
      (L, B, N, G) float32.
    """
    probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)
    class_score = jnp.take_along_axis(probs, labels[None, :, None, :], axis=-1)  # (L,B,N,G)
    pred = jax.nn.sigmoid(mask_logits.astype(jnp.float32))
    target = target_masks.astype(jnp.float32)
    if canvas_mask is not None:
        pred = pred * canvas_mask[None, :, None, None]  # over layers, queries and frames
        target = target * canvas_mask[:, None, None]
    pred = pred.reshape(*mask_logits.shape[:3], -1)
    target = target.reshape(*target_masks.shape[:2], -1)
    numerator = 2.0 * jnp.einsum("lbnp,bgp->lbng", pred, target) + 1.0
    denominator = pred.sum(-1)[..., :, None] + target.sum(-1)[None, :, None, :] + 1.0
    dice = numerator / denominator
    return CLASS_COST_WEIGHT * class_score + DICE_COST_WEIGHT * dice


def _solve_on_host(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """scipy on every (layer, clip): scores (L, B, N, G), valid (B, G) -> (L, B, G) int32."""
    from scipy.optimize import linear_sum_assignment

    scores, valid = np.asarray(scores), np.asarray(valid)
    # A diverged model gives NaN or infinite scores, which scipy refuses with an exception
    # that would end the run with a traceback from inside the callback. Any assignment will
    # do for that step: the loop's own check then stops the run with one line naming it.
    scores = np.where(np.isfinite(scores), scores, np.float32(-1e9))
    layers, clips, _, slots = scores.shape
    query_index = np.zeros((layers, clips, slots), np.int32)
    for clip in range(clips):
        columns = np.flatnonzero(valid[clip])
        if columns.size == 0:
            continue
        for layer in range(layers):
            rows, cols = linear_sum_assignment(scores[layer, clip][:, columns], maximize=True)
            query_index[layer, clip, columns[cols]] = rows
    return query_index


def host_callback_match(scores: Array, valid: Array) -> Array:
    """One pure_callback solving all layers and clips of the arrays it is given."""
    layers, clips, _, slots = scores.shape
    result = jax.ShapeDtypeStruct((layers, clips, slots), jnp.int32)
    return jax.pure_callback(_solve_on_host, result, scores, valid)


def _device_solve_one(scores: Array, valid: Array) -> Array:
    """optax Hungarian for one (N, G) score matrix; invalid columns get a constant cost."""
    from optax import assignment

    cost = jnp.where(valid[None, :], -scores, 0.0)
    # Solve targets x queries so every target column gets exactly one query (N >= G).
    target_rows, query_cols = assignment.hungarian_algorithm(cost.T)
    slots = scores.shape[1]
    return jnp.zeros((slots,), jnp.int32).at[target_rows].set(query_cols.astype(jnp.int32))


def device_match(scores: Array, valid: Array) -> Array:
    """(L, B, N, G) scores, (B, G) valid -> (L, B, G) query index, entirely on device."""
    per_clip = jax.vmap(_device_solve_one, in_axes=(0, 0))
    per_layer = jax.vmap(per_clip, in_axes=(0, None))
    query_index = per_layer(scores, valid)
    return jnp.where(valid[None], query_index, 0)


def hungarian_match(scores: Array, valid: Array, method: str = "host",
                    mesh: Mesh | None = None, batch_axis: str = "data") -> Array:
    """Matches queries to targets for every decoder layer and clip.

    Args:
      scores: (L, B, N, G) from `matching_scores`.
      valid: (B, G) bool, False on padded target slots.
      method: 'host' (scipy) or 'device' (optax).
      mesh: when given, 'host' runs inside shard_map over `batch_axis`, one callback per
        device with only that device's clips.
    Returns:
      (L, B, G) int32 query index per target slot (0 on invalid slots).
    """
    scores = jax.lax.stop_gradient(scores)
    if method == "device":
        return device_match(scores, valid)
    if method != "host":
        raise ValueError(f"unknown matcher {method!r}; expected one of {MATCHERS}")
    if mesh is None:
        return host_callback_match(scores, valid)
    sharded = jax.shard_map(
        host_callback_match,
        mesh=mesh,
        in_specs=(PartitionSpec(None, batch_axis), PartitionSpec(batch_axis)),
        out_specs=PartitionSpec(None, batch_axis),
        check_vma=False,
    )
    return sharded(scores, valid)

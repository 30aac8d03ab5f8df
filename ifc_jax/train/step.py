"""The jitted train step: forward, matching, set criterion, gradient, optimiser update.

State is a plain dict pytree (it shards and checkpoints simply):
  step         int32 ()          number of updates done
  params       model parameters (float32)
  batch_stats  frozen BN statistics (never updated)
  opt_state    optax state
Everything in the state is replicated over the mesh; batches are split over its `data` axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifc_jax.models.ifc import IFC
from ifc_jax.train.losses import PAPER_LOSS_WEIGHTS, LossWeights, set_criterion
from ifc_jax.train.matching import hungarian_match, matching_scores
from ifc_jax.train.targets import loss_canvas, soft_targets, upsample_in_canvas

Array = jax.Array
State = dict[str, Any]
Batch = Mapping[str, Array]

BATCH_AXIS = "data"
# Fields of a training batch the step reads, all that goes to the device (the pipeline
# provides more; data/pipeline.py lists them with shapes):
#   frames uint8 (B, T, H, W, 3), padding_mask bool (B, T, H, W), labels int32 (B, G),
#   instance_valid bool (B, G), target_counts uint8 (B, G, T, H/4, W/4).
MODEL_INPUTS = ("frames", "padding_mask", "labels", "instance_valid", "target_counts")


def init_state(model: IFC, optimizer: optax.GradientTransformation, rng: Array,
               frames: Array, padding_mask: Array) -> State:
    """Fresh state from random init. frames: (B, T, H, W, 3) of the training shape."""
    variables = model.init(rng, frames, padding_mask)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": variables["params"],
        "batch_stats": variables["batch_stats"],
        "opt_state": optimizer.init(variables["params"]),
    }


def compute_loss(model: IFC, params: Any, batch_stats: Any, batch: Batch, dropout_rng: Array,
                 matcher: str, mesh: Mesh | None, weights: LossWeights,
                 loss_group_size: int = 0) -> tuple[Array, dict[str, Array]]:
    """Total loss and named terms of one global batch (fields: MODEL_INPUTS)."""
    outputs = model.apply({"params": params, "batch_stats": batch_stats}, batch["frames"],
                          batch["padding_mask"], train=True, rngs={"dropout": dropout_rng})
    return loss_from_outputs(outputs["pred_logits"], outputs["pred_masks"], batch, matcher,
                             mesh, weights, loss_group_size)


def loss_from_outputs(class_logits: Array, mask_logits: Array, batch: Batch, matcher: str,
                      mesh: Mesh | None, weights: LossWeights, loss_group_size: int = 0
                      ) -> tuple[Array, dict[str, Array]]:
    """Matching and set criterion of the model's outputs for one global batch.

    class_logits (L, B, N, K+1) and mask_logits (L, B, N, T, H/8, W/8) as the model returns
    them; batch: MODEL_INPUTS (`padding_mask` gives each clip's valid size, hence its loss
    group's canvas; docs/training.md#loss-groups).
    """
    targets = soft_targets(batch["target_counts"])  # (B, G, T, H/4, W/4) float32
    height, width = targets.shape[-2:]
    canvas = loss_canvas(batch["padding_mask"], loss_group_size, height, width)
    upsampled = upsample_in_canvas(jax.lax.stop_gradient(mask_logits), canvas, height, width,
                                   batch_axis=1)
    scores = matching_scores(jax.lax.stop_gradient(class_logits), upsampled, batch["labels"],
                             targets, canvas.mask)
    query_index = hungarian_match(scores, batch["instance_valid"], matcher, mesh, BATCH_AXIS)
    return set_criterion(class_logits, mask_logits, batch["labels"], batch["instance_valid"],
                         targets, query_index, weights, canvas, loss_group_size)


def make_train_step(model: IFC, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, base_rng: Array, mesh: Mesh,
                    matcher: str = "host", weights: LossWeights = PAPER_LOSS_WEIGHTS,
                    loss_group_size: int = 0,
                    ) -> Callable[[State, Batch], tuple[State, dict[str, Array]]]:
    """A jitted `(state, batch) -> (state, metrics)`; the input state is donated.

    loss_group_size: clips per loss group (config.train.loss_group_size; 0 = the whole batch).
    """

    def train_step(state: State, batch: Batch) -> tuple[State, dict[str, Array]]:
        dropout_rng = jax.random.fold_in(base_rng, state["step"])

        def loss_fn(params):
            return compute_loss(model, params, state["batch_stats"], batch, dropout_rng,
                                matcher, mesh, weights, loss_group_size)

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": state["batch_stats"],
            "opt_state": opt_state,
        }
        metrics = {"loss": loss, **terms, "grad_norm": optax.global_norm(grads),
                   "lr": schedule(state["step"])}
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    return jax.jit(train_step, in_shardings=(replicated, batch_sharding),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))


def select_model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a pipeline batch that the train step consumes."""
    return {name: batch[name] for name in MODEL_INPUTS}

"""The optimiser of docs/training.md#optimiser as an optax chain.

global-norm clip (0.01) -> per-group AdamW:
* `default`: every trainable parameter outside the backbone, lr = base lr;
* `backbone`: trainable backbone parameters, lr = base lr x backbone_lr_mult (0.1);
* `frozen`: frozen BN scale/bias and the stages below `freeze_at` (stem, res2): no update at
  all, not even weight decay.
Weight decay 1e-4 applies to every trainable parameter (norms, biases, embeddings, memory
tokens included), as in the original. The lr steps down by `lr_decay_factor` at each of
`lr_decay_steps` (WarmupMultiStepLR with warm-up factor 1.0, i.e. no warm-up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ifc_jax.models.resnet import STAGE_NAMES

GROUPS = ("default", "backbone", "frozen")


def _frozen_backbone_prefixes(freeze_at: int) -> tuple[str, ...]:
    """Backbone module name prefixes frozen by detectron2's freeze_at."""
    prefixes = ["stem_"] if freeze_at >= 1 else []
    prefixes += [f"{name}_" for name in STAGE_NAMES[: max(freeze_at - 1, 0)]]
    return tuple(prefixes)


def parameter_groups(params: Mapping[str, Any], freeze_at: int) -> Any:
    """A pytree like `params` holding each leaf's group name ('default'|'backbone'|'frozen')."""
    frozen_prefixes = _frozen_backbone_prefixes(freeze_at)

    def label(path, _) -> str:
        keys = [getattr(entry, "key", str(entry)) for entry in path]
        if keys[0] != "backbone":
            return "default"
        if "norm" in keys or keys[1].startswith(frozen_prefixes):
            return "frozen"
        return "backbone"

    return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(base_lr: float, decay_steps: Sequence[int], decay_factor: float,
                           warmup_steps: int) -> optax.Schedule:
    """Step decay (x decay_factor at each of decay_steps) after an optional linear warm-up.

    With warmup_steps = W > 0 the lr at step s < W is base_lr * (s + 1) / W. The paper's
    recipe has no warm-up (detectron2's WARMUP_FACTOR 1.0); training from scratch, as the toy
    demo does, is steadier with one.
    """
    decayed = optax.piecewise_constant_schedule(
        base_lr, {int(step): decay_factor for step in decay_steps}
    )
    if warmup_steps <= 0:
        return decayed

    def schedule(step):
        ramp = jnp.minimum((step + 1) / warmup_steps, 1.0)
        return decayed(step) * ramp

    return schedule


def build_optimizer(train_config: Mapping[str, Any], freeze_at: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain for `config.train` and the lr schedule (for logging).

    Parameter groups are derived from the params the optimiser is initialised with, so no
    parameter tree is needed up front.
    """
    schedule = learning_rate_schedule(train_config["lr"], train_config["lr_decay_steps"],
                                      train_config["lr_decay_factor"],
                                      train_config["warmup_steps"])
    mult = train_config["backbone_lr_mult"]

    def adamw(lr_schedule):
        # torch AdamW defaults: betas (0.9, 0.999), eps 1e-8, decoupled decay scaled by lr.
        return optax.adamw(lr_schedule, b1=0.9, b2=0.999, eps=1e-8,
                           weight_decay=train_config["weight_decay"])

    transforms = {
        "default": adamw(schedule),
        "backbone": adamw(lambda step: schedule(step) * mult),
        "frozen": optax.set_to_zero(),
    }
    optimizer = optax.chain(
        optax.clip_by_global_norm(train_config["grad_clip_norm"]),
        optax.multi_transform(transforms, lambda params: parameter_groups(params, freeze_at)),
    )
    return optimizer, schedule

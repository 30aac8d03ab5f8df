"""Config checks that run before anything is built or compiled, each failing with one clear line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ifc_jax.errors import UserError

COMMUNICATION_VARIANTS = ("ifc", "no_comm", "full_thw", "decompose_thw")
COMPUTE_DTYPES = ("float32", "bfloat16")
GROUP_NORM_GROUPS = 32


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"config.model.{key}: {message}")


def validate_model_config(model: Mapping[str, Any]) -> None:
    """Raises UserError naming the first bad `config.model` value."""
    comm = model["communication"]
    _require(comm in COMMUNICATION_VARIANTS, "communication",
             f"unknown variant {comm!r}; expected one of {', '.join(COMMUNICATION_VARIANTS)}")
    if comm == "ifc":
        _require(model["num_memory_tokens"] >= 1, "num_memory_tokens",
                 "the ifc encoder needs at least 1 memory token (use no_comm for none)")
    hidden, heads = model["hidden_dim"], model["num_heads"]
    _require(heads >= 1 and hidden % heads == 0, "num_heads",
             f"hidden_dim {hidden} must be divisible by num_heads {heads}")
    _require(hidden % GROUP_NORM_GROUPS == 0, "hidden_dim",
             f"must be a multiple of {GROUP_NORM_GROUPS} (GroupNorm groups), got {hidden}")
    for key in ("enc_layers", "dec_layers", "num_queries", "num_classes", "dim_feedforward"):
        _require(model[key] >= 1, key, f"must be >= 1, got {model[key]}")
    _require(0.0 <= model["dropout"] < 1.0, "dropout", f"must be in [0, 1), got {model['dropout']}")
    _require(model["dtype"] in COMPUTE_DTYPES, "dtype",
             f"must be one of {', '.join(COMPUTE_DTYPES)}, got {model['dtype']!r}")
    _require(model["input_format"] in ("RGB", "BGR"), "input_format",
             f"must be RGB or BGR, got {model['input_format']!r}")
    _require(len(model["pixel_mean"]) == 3, "pixel_mean", "needs 3 values (one per channel)")
    _require(len(model["pixel_std"]) == 3 and all(s > 0 for s in model["pixel_std"]),
             "pixel_std", "needs 3 positive values")
    backbone = model["backbone"]
    depth = backbone["depth"]
    _require(depth in (0, 50, 101), "backbone.depth", f"must be 50, 101 or 0, got {depth}")
    if depth == 0:
        blocks = backbone["stage_blocks"]
        _require(len(blocks) == 4 and all(b >= 1 for b in blocks), "backbone.stage_blocks",
                 f"needs 4 positive block counts when depth is 0, got {tuple(blocks)}")
    _require(backbone["width"] >= 1, "backbone.width", f"must be >= 1, got {backbone['width']}")
    _require(0 <= backbone["freeze_at"] <= 5, "backbone.freeze_at",
             f"must be in 0..5, got {backbone['freeze_at']}")

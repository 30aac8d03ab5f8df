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


def _require_train(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"config.{key}: {message}")


def validate_train_config(config: Any, device_count: int, process_count: int) -> None:
    """Raises UserError naming the first bad value of a training config (before compiling)."""
    import os

    validate_model_config(config.model)
    data, train = config.data, config.train
    _require_train(data.num_frames >= 1, "data.num_frames",
                   f"clip length T must be >= 1, got {data.num_frames}")
    batch = train.batch_size
    _require_train(batch >= 1, "train.batch_size", f"must be >= 1, got {batch}")
    _require_train(batch % device_count == 0, "train.batch_size",
                   f"{batch} clips cannot be split evenly over {device_count} devices")
    _require_train(batch % process_count == 0, "train.batch_size",
                   f"{batch} clips cannot be split evenly over {process_count} processes")
    _require_train(data.max_instances <= config.model.num_queries, "data.max_instances",
                   f"{data.max_instances} GT slots exceed the {config.model.num_queries} queries")
    _require_train(train.num_steps >= 1, "train.num_steps",
                   f"must be >= 1, got {train.num_steps}")
    _require_train(train.lr > 0, "train.lr", f"must be > 0, got {train.lr}")
    warmup = train.get("warmup_steps", 0)
    _require_train(isinstance(warmup, int) and warmup >= 0, "train.warmup_steps",
                   f"must be an integer >= 0, got {warmup!r}")
    no_object = train.get("no_object_weight", 0.1)
    _require_train(isinstance(no_object, int | float) and 0 < no_object <= 1,
                   "train.no_object_weight", f"must be in (0, 1], got {no_object!r}")
    _require_train(train.matcher in ("host", "device"), "train.matcher",
                   f"must be 'host' or 'device', got {train.matcher!r}")
    _require_train(train.checkpoint_every >= 1, "train.checkpoint_every",
                   f"must be >= 1, got {train.checkpoint_every}")
    _require_train(train.log_every >= 1, "train.log_every",
                   f"must be >= 1, got {train.log_every}")
    if data.dataset != "toy":  # the toy dataset is generated on first use
        json_path = os.path.join(data.root, data.train_json)
        _require_train(os.path.isfile(json_path), "data.root",
                       f"training annotations {json_path} not found (see data/README.md)")
    if train.init_from:
        _require_train(os.path.exists(train.init_from), "train.init_from",
                       f"{train.init_from} does not exist")

"""Load an ml_collections config file and apply `config.a.b=value` overrides.

A config file is a Python file with `get_config()` returning an `ml_collections.ConfigDict`
(big_vision / Flax-examples style). Overrides are parsed with `ast.literal_eval` when possible
(numbers, tuples, booleans) and must keep the type of the field they replace.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

from ifc_jax.io import UserError


def load_config(path: str, overrides: list[str] = ()) -> Any:
    """Returns the ConfigDict from the file at `path` with `overrides` applied."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: config file not found")
    config_dir = os.path.dirname(os.path.abspath(path))
    repo_root = os.path.dirname(config_dir)
    # Configs may import each other as `configs.<name>`; that needs the repo root on the path.
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    spec = importlib.util.spec_from_file_location(f"_ifc_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise UserError(f"{path}: not valid Python ({err.msg}, line {err.lineno})") from err
    if not hasattr(module, "get_config"):
        raise UserError(f"{path}: a config file must define get_config()")
    config = module.get_config()
    for override in overrides:
        apply_override(config, override, source=path)
    return config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as `ifc` or `bfloat16`


def apply_override(config: Any, override: str, source: str = "config") -> None:
    """Applies one `config.a.b=value` (or `a.b=value`) override in place."""
    if "=" not in override:
        raise UserError(f"--{override}: overrides are written --config.KEY=VALUE")
    dotted, text = override.split("=", 1)
    keys = dotted.split(".")
    if keys[0] == "config":
        keys = keys[1:]
    node = config
    for depth, key in enumerate(keys):
        if key not in node:
            known = ", ".join(sorted(node.keys()))
            where = ".".join(["config", *keys[:depth]])
            raise UserError(f"--{dotted}: {source} has no key '{key}' in {where} (known: {known})")
        if depth < len(keys) - 1:
            node = node[key]
    key = keys[-1]
    old, new = node[key], _parse_value(text)
    if isinstance(old, bool) and not isinstance(new, bool):
        raise UserError(f"--{dotted}={text}: expected True or False")
    if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        new = float(new)
    if isinstance(old, tuple) and isinstance(new, list):
        new = tuple(new)
    if old is not None and type(old) is not type(new):
        raise UserError(
            f"--{dotted}={text}: expected a value of type {type(old).__name__}, "
            f"got {type(new).__name__}"
        )
    node[key] = new


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

"""The config: find a recipe, apply command-line overrides, validate it once, lock it.

A config is an `ml_collections.ConfigDict` from a Python file whose `get_config()` returns it
(big_vision / Flax-examples style). `configs/base.py` holds every key with its default; the
recipes beside it derive from it, and `validate` checks any config against it: the same keys,
values of the same types, each in its range. Code reads `config.x` directly: there are no
defaults anywhere else.

Where a config comes from (`load_config(spec)`):
  configs/toy.py      a file (relative to the working directory, or to the installed recipes)
  toy                 a recipe by name: configs/toy.py of the repository or of the package
  FILE.py:ARG, toy:ARG  a variant: get_config(ARG), as ml_collections' config_flags does

Overrides are `a.b=value` (the command line's `--config.a.b=value` or `--config.a.b value`),
parsed with `ast.literal_eval` where possible (numbers, tuples, booleans) and type-checked
against the field they replace.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from ifc_jax.io import UserError

RECIPE_PACKAGE = "ifc_jax.configs"  # where `pip install` puts the repository's configs/
BASE_RECIPE = "base"

COMMUNICATION_VARIANTS = ("ifc", "no_comm", "full_thw", "decompose_thw")
COMPUTE_DTYPES = ("float32", "bfloat16")
ATTENTION_KERNELS = ("auto", "xla", "cudnn")
MODEL_KERNELS = ("auto", "xla", "cpu")  # convolution / max-pool paths (models/layers.py)
MATCHERS = ("host", "device")
MASK_RLE_PATHS = ("auto", "host", "device")  # inference/predictor.py
DISTRIBUTED_MODES = ("off", "auto", "explicit")
TOY_MASK_ENCODINGS = ("rle", "uncompressed_rle", "polygon", "mixed")
GROUP_NORM_GROUPS = 32  # the spatial decoder's GroupNorm: hidden_dim must divide into it
PAD_MULTIPLE = 32  # training clips are padded to multiples of the backbone's stride


# ----------------------------------------------------------------------------------------
# Finding and loading recipes.


def recipe_dir() -> str:
    """The folder of the recipe files: the installed `ifc_jax.configs`, else the repository's
    `configs/` beside the `ifc_jax` package (a source checkout)."""
    spec = importlib.util.find_spec(RECIPE_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    package_dir = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(package_dir), "configs")


def recipe_names() -> list[str]:
    """The recipes that can be named on their own (`--config toy`)."""
    folder = recipe_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-3] for name in os.listdir(folder)
                  if name.endswith(".py") and not name.startswith("_"))


def _split_variant(spec: str) -> tuple[str, str | None]:
    """'path.py:arg' or 'name:arg' -> (path or name, arg); no colon -> (spec, None)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    source, arg = spec.rsplit(":", 1)
    return source, arg


def resolve_recipe_path(source: str) -> str:
    """The file of a config given as a path or a recipe name; UserError if there is none.

    A relative `configs/NAME.py` that does not exist here is looked up among the installed
    recipes, so the documented command lines work from any directory after `pip install`.
    """
    if os.path.isfile(source):
        return source
    name = os.path.basename(source)
    name = name[:-3] if name.endswith(".py") else name
    is_recipe_path = os.path.dirname(os.path.normpath(source)) in ("", "configs")
    candidate = os.path.join(recipe_dir(), f"{name}.py")
    if is_recipe_path and os.path.isfile(candidate):
        return candidate
    known = ", ".join(recipe_names()) or "none found"
    raise UserError(f"{source}: config file not found (a path to a .py file, or a recipe "
                    f"name: {known})")


def _recipe_package(folder: str) -> str:
    """A package name under which the recipe files of `folder` import each other
    (`from . import base`), registered once per folder."""
    name = f"_ifc_jax_recipes_{abs(hash(os.path.abspath(folder)))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return name


def _load_module(path: str) -> Any:
    """The Python module of a config file. A file in a package folder (one with __init__.py,
    like configs/) is loaded as part of it, so relative imports between recipes work."""
    path = os.path.abspath(path)
    folder, stem = os.path.split(path)
    stem = stem[:-3] if stem.endswith(".py") else stem
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        module_name = f"{_recipe_package(folder)}.{stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
    else:
        module_name = f"_ifc_jax_config_{abs(hash(path))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise UserError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise UserError(f"{path}: not valid Python ({err.msg}, line {err.lineno})") from err
    except UserError:
        raise
    except Exception as err:  # a config file is the user's code: its error, in one line
        raise UserError(f"{path}: {_raised(path, err)} while it was loaded") from err
    return module


def _raised(path: str, err: BaseException) -> str:
    """'ExcType: message (line N)', N the last line of `path` in the traceback if any."""
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    where = f" (line {lines[-1]})" if lines else ""
    return f"{type(err).__name__}: {err}{where}"


def _call_get_config(path: str, arg: str | None) -> ml_collections.ConfigDict:
    module = _load_module(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"{path}: a config file must define get_config()")
    try:
        config = module.get_config() if arg is None else module.get_config(arg)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        shown = f"{path}:{arg}" if arg is not None else path
        raise UserError(f"{shown}: get_config failed ({err})") from err
    except Exception as err:
        shown = f"{path}:{arg}" if arg is not None else path
        raise UserError(f"{shown}: get_config raised {_raised(path, err)}") from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


def recipe(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The raw (unvalidated, unlocked) config of a recipe, for config files that derive from
    one: `config = recipe("ifc_r50_ytvis19")`."""
    return _call_get_config(resolve_recipe_path(name), arg)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The validated, locked config of `spec` (a file, a recipe name, either with `:ARG`)
    with `overrides` ('a.b=value') applied."""
    source, arg = _split_variant(spec)
    config = _call_get_config(resolve_recipe_path(source), arg)
    for override in overrides:
        apply_override(config, override, source=spec)
    return validate(config)


def config_from_json(text: str, source: str) -> ml_collections.ConfigDict:
    """A validated, locked config from its JSON form (`config.to_json()`)."""
    import json

    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{source}: not a valid config JSON ({err.msg})") from err
    base = recipe(BASE_RECIPE)
    _fill(base, values, source, ())
    return validate(base)


def _fill(node: ml_collections.ConfigDict, values: Any, source: str,
          where: tuple[str, ...]) -> None:
    """Writes a JSON object's values into a ConfigDict of the same shape (lists -> tuples)."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: config.{'.'.join(where)} must be an object")
    for key, value in values.items():
        if key not in node:
            raise UserError(f"{source}: unknown key config.{'.'.join((*where, key))}")
        if isinstance(node[key], ml_collections.ConfigDict):
            _fill(node[key], value, source, (*where, key))
        else:
            node[key] = tuple(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------------------
# Overrides.


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as `ifc` or `bfloat16`


def apply_override(config: ml_collections.ConfigDict, override: str,
                   source: str = "config") -> None:
    """Applies one `config.a.b=value` (or `a.b=value`) override in place."""
    if "=" not in override:
        raise UserError(f"--{override}: overrides are written --config.KEY=VALUE")
    dotted, text = override.split("=", 1)
    keys = dotted.split(".")
    if keys[0] == "config":
        keys = keys[1:]
    node = config
    for depth, key in enumerate(keys):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            known = ", ".join(sorted(node.keys())) if isinstance(
                node, ml_collections.ConfigDict) else "none: not a section"
            where = ".".join(["config", *keys[:depth]])
            raise UserError(f"--{dotted}: {source} has no key '{key}' in {where} (known: {known})")
        if depth < len(keys) - 1:
            node = node[key]
    key = keys[-1]
    old, new = node[key], _parse_value(text)
    if isinstance(old, ml_collections.ConfigDict):
        raise UserError(f"--{dotted}: is a section; override one of its keys "
                        f"({', '.join(sorted(old.keys()))})")
    if isinstance(old, bool) and not isinstance(new, bool):
        raise UserError(f"--{dotted}={text}: expected True or False")
    if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        new = float(new)
    if isinstance(old, tuple) and isinstance(new, list):
        new = tuple(new)
    if isinstance(old, tuple) and not isinstance(new, tuple) and isinstance(new, int | float | str):
        new = (new,)  # --config.data.train_short_sides=480
    if old is not None and type(old) is not type(new):
        raise UserError(
            f"--{dotted}={text}: expected a value of type {type(old).__name__}, "
            f"got {type(new).__name__}"
        )
    node[key] = new


# ----------------------------------------------------------------------------------------
# Validation: the structure against configs/base.py, then every value's range.

Rule = tuple[str, Callable[[Any, ml_collections.ConfigDict], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at_least(low: int) -> Callable[[Any, Any], bool]:
    return lambda value, config: _is_int(value) and value >= low


def _one_of(choices: Sequence[str]) -> Callable[[Any, Any], bool]:
    return lambda value, config: value in choices


def _positive_ints(value: Any, config: Any) -> bool:
    return isinstance(value, tuple) and len(value) > 0 and all(
        _is_int(v) and v > 0 for v in value)


def _pad_size(value: Any, config: Any) -> bool:
    return _is_int(value) and value > 0 and value % PAD_MULTIPLE == 0


def _decay_steps(value: Any, config: Any) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) and v >= 0 for v in value) and list(
        value) == sorted(value)


def _fraction(low_open: bool, high_open: bool) -> Callable[[Any, Any], bool]:
    def check(value, config):
        if not _is_number(value):
            return False
        low = value > 0 if low_open else value >= 0
        high = value < 1 if high_open else value <= 1
        return low and high
    return check


def _boolean(value: Any, config: Any) -> bool:
    return isinstance(value, bool)


# (dotted key, check(value, config), what a good value is). Checked in order; the first
# failing rule is the error. `tests/test_config.py` gives each key a bad value.
RULES: tuple[Rule, ...] = (
    ("model.communication", _one_of(COMMUNICATION_VARIANTS),
     f"unknown variant; expected one of {', '.join(COMMUNICATION_VARIANTS)}"),
    ("model.num_memory_tokens",
     lambda v, c: _is_int(v) and v >= (1 if c.model.communication == "ifc" else 0),
     "must be an integer >= 1 for the ifc encoder (use no_comm for none), >= 0 otherwise"),
    ("model.hidden_dim", lambda v, c: _is_int(v) and v > 0 and v % GROUP_NORM_GROUPS == 0,
     f"must be a positive multiple of {GROUP_NORM_GROUPS} (GroupNorm groups)"),
    ("model.num_heads",
     lambda v, c: _is_int(v) and v >= 1 and c.model.hidden_dim % v == 0,
     "must be >= 1 and divide model.hidden_dim"),
    ("model.enc_layers", _at_least(1), "must be an integer >= 1"),
    ("model.dec_layers", _at_least(1), "must be an integer >= 1"),
    ("model.num_queries", _at_least(1), "must be an integer >= 1"),
    ("model.num_classes", _at_least(1), "must be an integer >= 1"),
    ("model.dim_feedforward", _at_least(1), "must be an integer >= 1"),
    ("model.dropout", _fraction(False, True), "must be in [0, 1)"),
    ("model.dtype", _one_of(COMPUTE_DTYPES), f"must be one of {', '.join(COMPUTE_DTYPES)}"),
    ("model.attention", _one_of(ATTENTION_KERNELS),
     f"must be one of {', '.join(ATTENTION_KERNELS)}"),
    ("model.kernels", _one_of(MODEL_KERNELS), f"must be one of {', '.join(MODEL_KERNELS)}"),
    ("model.input_format", _one_of(("RGB", "BGR")), "must be RGB or BGR"),
    ("model.pixel_mean", lambda v, c: len(v) == 3 and all(_is_number(x) for x in v),
     "needs 3 numbers (one per channel)"),
    ("model.pixel_std", lambda v, c: len(v) == 3 and all(_is_number(x) and x > 0 for x in v),
     "needs 3 positive numbers"),
    ("model.backbone.depth", _one_of((0, 50, 101)), "must be 50, 101 or 0"),
    ("model.backbone.stage_blocks",
     lambda v, c: c.model.backbone.depth != 0 or (len(v) == 4 and _positive_ints(v, c)),
     "needs 4 positive block counts when depth is 0"),
    ("model.backbone.width", _at_least(1), "must be an integer >= 1"),
    ("model.backbone.freeze_at", lambda v, c: _is_int(v) and 0 <= v <= 5, "must be in 0..5"),
    ("data.dataset", lambda v, c: bool(v), "must name a dataset (toy, tfds, ytvis19, ...)"),
    ("data.num_frames", _at_least(1), "clip length T must be an integer >= 1"),
    ("data.sampling_frame_range", _at_least(1), "must be an integer >= 1"),
    ("data.train_short_sides", _positive_ints, "needs one or more positive sizes"),
    ("data.train_max_size", _at_least(1), "must be an integer >= 1"),
    ("data.train_crop", lambda v, c: isinstance(v, tuple) and (
        v == () or (len(v) == 2 and _positive_ints(v, c) and v[0] <= v[1])),
     "must be () (no crop) or (low, high) crop sides with 1 <= low <= high"),
    ("data.flip_prob", _fraction(False, False), "must be in [0, 1]"),
    ("data.test_short_side", _at_least(1), "must be an integer >= 1"),
    ("data.test_max_size", _at_least(1), "must be an integer >= 1"),
    ("data.max_instances", lambda v, c: _is_int(v) and 1 <= v <= c.model.num_queries,
     "must be >= 1 and at most model.num_queries (GT slots per clip)"),
    ("data.pad_height", _pad_size, f"must be a positive multiple of {PAD_MULTIPLE}"),
    ("data.pad_width", _pad_size, f"must be a positive multiple of {PAD_MULTIPLE}"),
    ("data.num_parallel_calls", lambda v, c: _is_int(v) and (v == -1 or v >= 1),
     "must be -1 (one per CPU core, up to 16) or >= 1"),
    ("data.prefetch_batches", _at_least(0), "must be an integer >= 0"),
    ("data.tfds_frame_stride", _at_least(0), "must be an integer >= 0"),
    ("data.toy.num_train", _at_least(1), "must be an integer >= 1"),
    ("data.toy.num_val", _at_least(1), "must be an integer >= 1"),
    ("data.toy.height", _at_least(32), "must be an integer >= 32"),
    ("data.toy.width", _at_least(32), "must be an integer >= 32"),
    ("data.toy.min_frames", _at_least(1), "must be an integer >= 1"),
    ("data.toy.max_frames", lambda v, c: _is_int(v) and v >= c.data.toy.min_frames,
     "must be an integer >= data.toy.min_frames"),
    ("data.toy.max_objects", _at_least(1), "must be an integer >= 1"),
    ("data.toy.blur_prob", _fraction(False, False), "must be in [0, 1]"),
    ("data.toy.mask_encoding", _one_of(TOY_MASK_ENCODINGS),
     f"must be one of {', '.join(TOY_MASK_ENCODINGS)}"),
    ("data.toy.jpeg_quality", lambda v, c: _is_int(v) and 1 <= v <= 100, "must be in 1..100"),
    ("train.batch_size", _at_least(1), "must be an integer >= 1"),
    ("train.num_steps", _at_least(1), "must be an integer >= 1"),
    ("train.lr", lambda v, c: _is_number(v) and v > 0, "must be > 0"),
    ("train.lr_decay_steps", _decay_steps, "must be increasing step numbers >= 0"),
    ("train.lr_decay_factor", _fraction(True, False), "must be in (0, 1]"),
    ("train.warmup_steps", _at_least(0), "must be an integer >= 0"),
    ("train.backbone_lr_mult", lambda v, c: _is_number(v) and v >= 0, "must be >= 0"),
    ("train.weight_decay", lambda v, c: _is_number(v) and v >= 0, "must be >= 0"),
    ("train.grad_clip_norm", lambda v, c: _is_number(v) and v > 0, "must be > 0"),
    ("train.no_object_weight", _fraction(True, False), "must be in (0, 1]"),
    ("train.matcher", _one_of(MATCHERS), "must be 'host' or 'device'"),
    ("train.loss_group_size",
     lambda v, c: _is_int(v) and v >= 0 and (v == 0 or c.train.batch_size % v == 0),
     "must be an integer >= 0 that divides train.batch_size (0 = the whole batch)"),
    ("train.log_every", _at_least(1), "must be an integer >= 1"),
    ("train.tensorboard", _boolean, "must be True or False"),
    ("train.checkpoint_every", _at_least(1), "must be an integer >= 1"),
    ("train.keep_checkpoints", _at_least(1), "must be an integer >= 1"),
    ("train.eval_every_steps", _at_least(0), "must be an integer >= 0"),
    ("train.init_exclude", lambda v, c: all(isinstance(x, str) for x in v),
     "must be a tuple of parameter path prefixes"),
    ("distributed.mode", _one_of(DISTRIBUTED_MODES), "expected off, auto or explicit"),
    ("distributed.coordinator_address",
     lambda v, c: c.distributed.mode != "explicit" or bool(v),
     "needed in explicit mode (host:port of process 0)"),
    ("distributed.num_processes", _at_least(1), "must be an integer >= 1"),
    ("distributed.process_id",
     lambda v, c: _is_int(v) and 0 <= v < c.distributed.num_processes,
     "must be in 0..distributed.num_processes - 1"),
    ("inference.window_frames", _at_least(1), "must be an integer >= 1"),
    ("inference.window_stride",
     lambda v, c: _is_int(v) and 1 <= v <= c.inference.window_frames,
     "must be in 1..inference.window_frames (windows must overlap or touch)"),
    ("inference.match_threshold", _fraction(False, False), "must be in [0, 1]"),
    ("inference.windows_per_call", _at_least(1), "must be an integer >= 1"),
    ("inference.pad_size_multiple",
     lambda v, c: _is_int(v) and v >= 0 and v % PAD_MULTIPLE == 0,
     f"must be 0 or a positive multiple of {PAD_MULTIPLE}"),
    ("inference.host_threads", _at_least(0), "must be an integer >= 0"),
    ("inference.overlay_threads", _at_least(0), "must be an integer >= 0"),
    ("inference.mask_rle", _one_of(MASK_RLE_PATHS), f"must be one of {', '.join(MASK_RLE_PATHS)}"),
    ("inference.class_threshold", _fraction(False, True), "must be in [0, 1)"),
    ("inference.multi_class", _boolean, "must be True or False"),
    ("inference.drop_empty_tracks", _boolean, "must be True or False"),
    ("inference.min_track_pixels", _at_least(0), "must be an integer >= 0"),
    ("inference.max_results_per_category", _at_least(0), "must be an integer >= 0"),
    ("summary.height", _at_least(1), "must be an integer >= 1"),
    ("summary.width", _at_least(1), "must be an integer >= 1"),
    ("summary.num_frames", _at_least(1), "must be an integer >= 1"),
)
VALIDATED_KEYS = tuple(key for key, _, _ in RULES)


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def _type_name(value: Any) -> str:
    return "number" if _is_number(value) and not _is_int(value) else type(value).__name__


def _check_structure(config: Any, base: ml_collections.ConfigDict,
                     where: tuple[str, ...] = ()) -> None:
    """Same keys as the base config, and values of the same types (an int where a float is
    expected is fine)."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"config.{'.'.join(where)}: must be a section "
                        f"(keys {', '.join(sorted(base.keys()))})")
    missing = sorted(set(base.keys()) - set(config.keys()))
    if missing:
        name = ".".join((*where, missing[0]))
        raise UserError(f"config.{name}: missing (every key of configs/base.py must be set; "
                        "derive the config from a recipe)")
    unknown = sorted(set(config.keys()) - set(base.keys()))
    if unknown:
        name = ".".join((*where, unknown[0]))
        raise UserError(f"config.{name}: unknown key (not in configs/base.py)")
    for key, expected in base.items():
        value = config[key]
        name = (*where, key)
        if isinstance(expected, ml_collections.ConfigDict):
            _check_structure(value, expected, name)
            continue
        same = type(value) is type(expected) or (
            isinstance(expected, float) and _is_int(value))
        if not same:
            raise UserError(f"config.{'.'.join(name)}: expected a {_type_name(expected)}, "
                            f"got {value!r}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every key of `config` (structure against configs/base.py, then each rule) and
    returns it locked (no new keys). Raises UserError naming the first bad key."""
    _check_structure(config, recipe(BASE_RECIPE))
    for key, check, message in RULES:
        value = _lookup(config, key)
        if not check(value, config):
            raise UserError(f"config.{key}: {message}, got {value!r}")
    config.lock()
    return config


def ensure_config(config: ml_collections.ConfigDict | str) -> ml_collections.ConfigDict:
    """A config for the library's entry points: a spec string is loaded, a ConfigDict that a
    notebook built or edited is validated (cheap: no file is read besides the base)."""
    if isinstance(config, str):
        return load_config(config)
    return validate(config)

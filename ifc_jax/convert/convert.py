"""Official checkpoints -> an orbax checkpoint of our IFC's {'params', 'batch_stats'}.

Which config goes with which source (docs/pretrained_weights.md, docs/model.md#input):
  IFC R-50 YouTube-VIS (base_ytvis.yaml)          configs/ifc_r50_ytvis19.py
  IFC R-101 YouTube-VIS (R101_ytvis.yaml)         configs/ifc_r101_ytvis19.py
  IFC COCO-pretrained R-50 (80 classes)           configs/ifc_r50_ytvis19.py
                                                  --config.model.num_classes=80
  ImageNetPretrained/torchvision/R-50.pkl,
  torchvision resnet50 .pth                       configs/ifc_r50_ytvis19.py  (RGB, stride in 3x3)
  ImageNetPretrained/MSRA/R-101.pkl               configs/ifc_r101_ytvis19.py (BGR, stride in 1x1)
  ImageNetPretrained/MSRA/R-50.pkl                configs/ifc_r101_ytvis19.py
                                                  --config.model.backbone.depth=50
The checkpoint fixes every shape (classes, queries, layers, widths); the number of attention
heads, the stride placement and the input format are not stored in it and come from the config.

Every source key is converted or reported as ignored; every variable of the config's model is
filled, or (for backbone-only sources) every variable of its backbone. Otherwise nothing is
written and the error lists each problem on its own line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ifc_jax.convert import key_maps
from ifc_jax.convert.torch_pickle import OpaqueObject, load_checkpoint, to_numpy
from ifc_jax.io import UserError

FROZEN_BN_EPSILON = 1e-5
FLAVOURS = {
    "ifc": "IFC checkpoint (detectron2 names)",
    "detectron2": "detectron2 ResNet backbone",
    "torchvision": "torchvision ResNet backbone",
    "caffe2": "Caffe2/MSRA ResNet backbone",
}


@dataclass
class Conversion:
    """The converted variables (nested dicts of float32 numpy arrays) and what was done."""

    variables: dict[str, Any]
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def expected_variables(model_config: Any) -> dict[str, tuple[int, ...]]:
    """'params/...' and 'batch_stats/...' path -> shape, for the config's IFC (no compute)."""
    from ifc_jax.checkpoints import model_variable_shapes
    from ifc_jax.models.ifc import IFC

    return model_variable_shapes(IFC.from_config(model_config))


def _a(noun: str) -> str:
    """'a Tensor', 'an OpaqueObject'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _state_dict(obj: Any, path: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """(state dict, ignored top-level entries, top-level metadata) of a loaded checkpoint."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds {_a(type(obj).__name__)}, not a dict of tensors")
    for container in ("model", "blobs", "state_dict"):
        if isinstance(obj.get(container), dict):
            meta = {k: v for k, v in obj.items() if isinstance(v, str | int | float | bool)}
            return obj[container], sorted(str(k) for k in obj if k != container), meta
    return obj, [], {}


def _rename(keys: list[str], flavour: str) -> dict[str, str]:
    """Original key -> canonical (detectron2 / IFC) key."""
    if flavour == "torchvision":
        return {key: key_maps.torchvision_to_detectron2(key) for key in keys}
    if flavour == "caffe2":
        return {key: key_maps.caffe2_to_detectron2(key) for key in keys}
    return {key: key for key in keys}


def _hint(target: str, file_shape: tuple[int, ...], model: Any) -> str:
    """Which config value a shape mismatch points at, if an obvious one."""
    last_class_layer = "params/class_embed/layers_1/"
    if target.startswith(last_class_layer) and file_shape:
        return (f" (the file has {file_shape[0] - 1} classes, config.model.num_classes is "
                f"{model.num_classes})")
    if target == "params/query_embed" and file_shape:
        return (f" (the file has {file_shape[0]} queries, config.model.num_queries is "
                f"{model.num_queries})")
    if target.startswith("params/encoder/memory_") and file_shape:
        return (f" (the file has {file_shape[0]} memory tokens, "
                f"config.model.num_memory_tokens is {model.num_memory_tokens})")
    return ""


def _extra_hint(target: str, model: Any) -> str:
    if "/encode_receive_" in target or "/gather_communicate_" in target:
        return f" (config.model.enc_layers is {model.enc_layers})"
    if target.startswith("params/decoder/layers_"):
        return f" (config.model.dec_layers is {model.dec_layers})"
    if "/backbone/res" in target:
        backbone = model.backbone
        blocks = tuple(backbone.stage_blocks) if backbone.depth == 0 else backbone.depth
        return f" (beyond the config's ResNet: config.model.backbone.depth/stage_blocks {blocks})"
    return ""


def _blocks_per_stage(names: list[str], pattern: str) -> tuple[int, ...]:
    found: dict[int, int] = {}
    for name in names:
        if match := re.search(pattern, name):
            stage, block = int(match[1]), int(match[2])
            found[stage] = max(found.get(stage, 0), block + 1)
    return tuple(found.get(stage, 0) for stage in range(2, 6))


def _depth_hint(source_names: list[str], expected: dict[str, Any]) -> list[str]:
    """One line comparing the ResNet depths when the file's and the config's differ."""
    in_file = _blocks_per_stage(source_names, r"(?:^|\.)res([2-5])\.(\d+)\.")
    in_config = _blocks_per_stage(list(expected), r"^params/backbone/res([2-5])_(\d+)/")
    if in_file == in_config or not any(in_file):
        return []
    depths = {(3, 4, 6, 3): " (R-50)", (3, 4, 23, 3): " (R-101)"}
    return [f"hint: the file's ResNet has {in_file} blocks in res2..res5{depths.get(in_file, '')}"
            f", the config's has {in_config}{depths.get(in_config, '')}: "
            "see config.model.backbone.depth"]


def _config_warnings(flavour: str, meta: dict[str, Any], model: Any) -> list[str]:
    """Mismatches between the source's known input conventions and the config (not fatal)."""
    backbone = model.backbone
    msra = (True, "BGR", (1.0, 1.0, 1.0))
    torchvision = (False, "RGB", (58.395, 57.120, 57.375))
    expected = None
    if flavour == "caffe2":
        expected = (msra, "MSRA/Caffe2 weights", "configs/ifc_r101_ytvis19.py")
    elif flavour == "torchvision" or str(meta.get("__author__", "")) == "torchvision":
        expected = (torchvision, "torchvision weights", "configs/ifc_r50_ytvis19.py")
    elif flavour == "ifc" and backbone.depth in (50, 101):
        released = {50: (torchvision, "configs/ifc_r50_ytvis19.py"),
                    101: (msra, "configs/ifc_r101_ytvis19.py")}[backbone.depth]
        expected = (released[0], f"the released IFC R-{backbone.depth}", released[1])
    if expected is None:
        return []
    (stride_in_1x1, input_format, std), what, config_file = expected
    found = (bool(backbone.stride_in_1x1), model.input_format,
             tuple(float(s) for s in model.pixel_std))
    if found == (stride_in_1x1, input_format, std):
        return []
    return [f"{what} expect backbone.stride_in_1x1={stride_in_1x1}, input_format="
            f"{input_format}, pixel_std={std} ({config_file}); the config has "
            f"stride_in_1x1={found[0]}, input_format={found[1]}, pixel_std={found[2]}"]


def _materialize(value: Any, key: str, path: str) -> np.ndarray:
    try:
        array = to_numpy(value)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"{path}: tensor {key} cannot be read ({err})") from err
    if array is None:
        raise UserError(f"{path}: {key} holds {_a(type(value).__name__)}, not a tensor")
    return array


def _nest(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


@dataclass
class _Source:
    """A checkpoint's arrays under canonical (detectron2 / IFC) names, and what was skipped."""

    flavour: str
    container: str
    arrays: dict[str, np.ndarray]
    shown: dict[str, str]  # canonical name -> the name to show (the file's own)
    ignored: dict[str, str]
    ignored_top_level: list[str]
    meta: dict[str, Any]
    synthesized: list[str]
    problems: list[str]


def _read_source(path: str) -> _Source:
    obj, container = load_checkpoint(path)
    state, ignored_top_level, meta = _state_dict(obj, path)
    keys = [str(key) for key in state]
    if keys and all(key.startswith("module.") for key in keys):  # DistributedDataParallel
        state = {key[len("module."):]: value for key, value in state.items()}
        keys = list(state)
    flavour = key_maps.detect_flavour(keys)
    if flavour is None:
        raise UserError(f"{path}: no IFC or ResNet weights recognised (first keys: "
                        f"{', '.join(keys[:5]) or 'none'})")
    canonical = _rename(keys, flavour)
    source = _Source(flavour, container, {}, {canonical[key]: key for key in keys}, {},
                     ignored_top_level, meta, [], [])
    for key in keys:
        reason = key_maps.ignored_reason(key) or key_maps.ignored_reason(canonical[key])
        if reason:
            source.ignored[key] = reason
        elif isinstance(state[key], OpaqueObject):
            source.problems.append(f"{key}: an object of class {state[key].qualified_name}, "
                                   "which is not loaded (only tensors and numpy arrays are)")
        else:
            source.arrays[canonical[key]] = _materialize(state[key], key, path)
    if flavour == "caffe2":
        extra = key_maps.caffe2_affine_statistics(source.arrays, FROZEN_BN_EPSILON)
        source.synthesized = sorted(extra)
        source.arrays.update(extra)
        source.shown.update({key: f"{key} (mean 0 / var 1-eps for Caffe2's affine BN)"
                             for key in extra})
    return source


def _fill(source: _Source, rules: list[key_maps.Rule], expected: dict[str, tuple[int, ...]],
          model: Any) -> tuple[dict[str, np.ndarray], set[str]]:
    """Target path -> float32 array for every key that fits; problems go to `source`.

    Also returns the targets of keys already reported (so they are not called missing too).
    """
    filled: dict[str, np.ndarray] = {}
    reported: set[str] = set()
    for name, array in source.arrays.items():
        shown = source.shown.get(name, name)
        match = next(((rule, targets) for rule in rules
                      if (targets := rule.match_source(name)) is not None), None)
        if match is None:
            source.problems.append(f"{shown}: unknown key (no variable of ours takes it; the "
                                   f"file was read as: {FLAVOURS[source.flavour]})")
            continue
        rule, targets = match
        if targets[0] not in expected:
            source.problems.append(f"{shown}: the config's model has no {targets[0]}"
                                   f"{_extra_hint(targets[0], model)}")
            continue
        layout = key_maps.LAYOUTS[rule.layout]
        wanted = tuple(layout.source_shape(expected[targets[0]]))
        if tuple(array.shape) != wanted:
            reported.update(targets)
            source.problems.append(
                f"{shown}: shape {tuple(array.shape)} in the file, the config's model needs "
                f"{wanted} for {targets[0]}{_hint(targets[0], tuple(array.shape), model)}")
        elif array.dtype.kind not in "fiu":
            reported.update(targets)
            source.problems.append(f"{shown}: dtype {array.dtype} is not numeric")
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # reported just below
                values = [np.ascontiguousarray(value, np.float32)
                          for value in layout.forward(array)]
            bad = sum(int(np.size(value) - np.isfinite(value).sum()) for value in values)
            if bad:  # NaN or inf in the file, or float64 values past float32's range
                reported.update(targets)
                source.problems.append(f"{shown}: {bad} of {array.size} values are not "
                                       "finite in float32 (NaN, inf or beyond 3.4e38)")
                continue
            filled.update(zip(targets, values, strict=True))
    return filled, reported


def convert_checkpoint(path: str, config: Any, config_name: str = "the config"
                       ) -> Conversion:
    """Reads `path` and maps it onto `config.model`'s variables, checking names and shapes."""
    model = config.model
    source = _read_source(path)
    flavour = source.flavour
    expected = expected_variables(model)
    backbone_only = flavour != "ifc"
    scope = [p for p in expected
             if not backbone_only or p.startswith(("params/backbone/", "batch_stats/backbone/"))]
    rules = key_maps.backbone_rules() if backbone_only else key_maps.ifc_rules()
    filled, reported = _fill(source, rules, expected, model)

    missing: dict[str, list[str]] = {}
    for target in scope:
        if target not in filled and target not in reported:
            key = next((found for rule in rules
                        if (found := rule.match_target(target)) is not None), "?")
            missing.setdefault(key, []).append(target)
    for key, targets in missing.items():
        name = key if flavour in ("ifc", "detectron2") else f"{key} (detectron2 name)"
        source.problems.append(f"missing {name}, needed for {', '.join(targets)}")
    problems = source.problems
    if problems:
        count = len(problems)
        problems.extend(_depth_hint(list(source.arrays), expected))
        if len(problems) == 1:
            raise UserError(f"{path}: does not fit the model of {config_name}: {problems[0]}")
        raise UserError(f"{path}: does not fit the model of {config_name} "
                        f"({count} problems):\n  " + "\n  ".join(problems))

    warnings = _config_warnings(flavour, source.meta, model)
    if backbone_only:
        warnings.append(f"{path} holds only a ResNet backbone: only params['backbone'] and "
                        "batch_stats['backbone'] are written. Use the output with "
                        "--config.train.init_from (the other modules start from their random "
                        "init); evaluate and predict need a full IFC checkpoint")
    variables = _nest(filled)
    variables.setdefault("batch_stats", {})
    counts = {collection: sum(1 for p in filled if p.startswith(collection + "/"))
              for collection in ("params", "batch_stats")}
    report = {
        "source": os.path.abspath(path),
        "source_bytes": os.path.getsize(path),
        "container": source.container,
        "flavour": FLAVOURS[flavour],
        "config": config_name,
        "converted_keys": len(source.arrays) - len(source.synthesized),
        "written_arrays": counts,
        "written_values": int(sum(value.size for value in filled.values())),
        "backbone_only": backbone_only,
        "synthesized": source.synthesized,
        "ignored_keys": source.ignored,
        "ignored_top_level": source.ignored_top_level,
        "model": {key: _plain(model[key]) for key in (
            "num_classes", "num_queries", "hidden_dim", "num_heads", "dim_feedforward",
            "enc_layers", "dec_layers", "num_memory_tokens", "input_format", "pixel_mean",
            "pixel_std")} | {"backbone": _plain(model.backbone)},
        "warnings": warnings,
    }
    return Conversion(variables, report, warnings)


def _plain(value: Any) -> Any:
    """ConfigDict / tuple values as JSON-friendly Python."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


MARKER = "conversion.json"  # written into every output folder; --overwrite needs it there


def _is_converted_checkpoint(folder: str) -> bool:
    """Whether `folder` is an earlier output of convert: a real folder (not a link) holding
    MARKER, the conversion report, as a JSON object naming its source."""
    marker = os.path.join(folder, MARKER)
    if os.path.islink(folder) or not os.path.isdir(folder) or not os.path.isfile(marker):
        return False
    try:
        with open(marker, encoding="utf-8") as stream:
            report = json.load(stream)
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "source" in report and "written_arrays" in report


def check_output(out_dir: str, overwrite: bool, source: str | None = None) -> None:
    """Fails early (before reading a large source) if `out_dir` may not be written: it exists
    and --overwrite is not given, or it is not an earlier output of convert (a folder with
    MARKER: never a file, the source or any other folder)."""
    shown = os.path.abspath(out_dir)
    if source is not None:
        source_path = os.path.realpath(source)
        target = os.path.realpath(out_dir)
        if source_path == target or source_path.startswith(target + os.sep):
            raise UserError(f"{shown}: --to is (or holds) the --from file; choose another "
                            "folder")
    if os.path.lexists(out_dir):
        if not overwrite:
            raise UserError(f"{shown}: already exists (pass --overwrite to replace an earlier "
                            "output of convert)")
        if not _is_converted_checkpoint(out_dir):
            what = "a folder" if os.path.isdir(out_dir) else "a file"
            raise UserError(f"{shown}: is {what} without {MARKER}, not an output of convert; "
                            "--overwrite replaces only those (nothing was deleted)")


def write_checkpoint(conversion: Conversion, out_dir: str, overwrite: bool = False) -> str:
    """Writes the variables as an orbax checkpoint at `out_dir`, atomically; returns its path.

    The checkpoint is written to a temp folder beside `out_dir` and renamed into place, with
    `conversion.json` (the report) inside. `ifc_jax.checkpoints.load_variables(out_dir)` reads it.
    """
    import orbax.checkpoint as ocp

    out_dir = os.path.abspath(out_dir)
    check_output(out_dir, overwrite, conversion.report.get("source"))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.converting-", dir=parent)
    try:
        written = os.path.join(staging, "checkpoint")
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(written, conversion.variables)
            checkpointer.wait_until_finished()
        with open(os.path.join(written, MARKER), "w") as stream:
            json.dump(conversion.report, stream, indent=2)
            stream.write("\n")
        if os.path.exists(out_dir):
            os.rename(out_dir, os.path.join(staging, "replaced"))
        os.rename(written, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir

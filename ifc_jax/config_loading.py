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
from typing import Any

from ifc_jax.errors import UserError


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

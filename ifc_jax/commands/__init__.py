"""One small module per subcommand: parse, call one `ifc_jax.api` function, print."""

from __future__ import annotations

import argparse
from typing import Any


def config_or_none(args: argparse.Namespace) -> Any:
    """The --config with its overrides, loaded. Without --config: None (the config recorded
    in --workdir is used), or that recorded config with the overrides applied."""
    from ifc_jax.config import apply_override, load_config, validate

    if args.config is not None:
        return load_config(args.config, args.config_overrides)
    if not args.config_overrides:
        return None
    from ifc_jax.api.model import resolve_config

    config = resolve_config(None, args.workdir)
    for override in args.config_overrides:
        apply_override(config, override, source=f"{args.workdir}/config.json")
    return validate(config)

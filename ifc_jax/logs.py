"""Logging for the command line: `ifc_jax.*` loggers print INFO lines to stderr.

absl (imported by jax, clu and orbax) takes over the root logger at WARNING, so our loggers
get their own handler and do not propagate.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("ifc_jax")
    if any(getattr(handler, "_ifc_jax", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler._ifc_jax = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

"""Command-line entry point: `ifc-jax SUBCOMMAND ...` (also `python -m ifc_jax` and
`python main.py` in a checkout).

Each subcommand lives in `ifc_jax/commands/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> int`: it parses, calls one function of `ifc_jax.api` and prints. Command
modules import heavy libraries (jax, tensorflow) inside `run`, so `--help` is instant and a
command only pays for what it uses.

Config overrides follow ml_collections' config_flags: `--config.a.b=value` or
`--config.a.b value`, and `--config FILE.py:ARG` (or `RECIPE:ARG`) for a recipe's variant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ifc_jax.io import WRITE_FAILURE_ERRNOS, UserError

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


# name -> one-line help. Order is the order shown in `--help`.
SUBCOMMANDS: dict[str, str] = {
    "demo": "the whole system on the built-in toy dataset, on a CPU (no download)",
    "train": "train a model (resumable, multi-host); checkpoints and TensorBoard in --workdir",
    "evaluate": "predict and track every val video; DIR/eval/results.json and metrics.json",
    "predict": "tracks of your videos (files, frame folders, a folder or glob of them): "
               "results.json, overlay GIF and MP4, keyframes",
    "flops": "encoder GFLOPs of the communication variants (the paper's table)",
    "summary": "parameters per module and forward GFLOPs per frame of a config's model",
    "benchmark": "measured speed: data pipeline, inference, encoder schemes (table or JSON)",
    "score": "AP/AR of a results.json against YouTube-VIS / OVIS ground truth",
    "split": "hold out labelled videos of a training JSON (by video, seeded) to score locally",
    "convert": "import pretrained PyTorch weights (IFC .pth, ImageNet R-50/R-101) as a checkpoint",
}

CONFIG_OVERRIDE_PREFIX = "--config."


def program_name(argv0: str) -> str:
    """How the user started us, for usage lines: ifc-jax, python -m ifc_jax or main.py."""
    name = os.path.basename(argv0)
    if name == "__main__.py":
        return "python -m ifc_jax"
    if name.endswith(".py"):
        return f"python {name}"
    return "ifc-jax"


class ArgumentError(Exception):
    """A command-line mistake argparse found (unknown flag, missing argument, bad choice)."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line `error: ...` (exit status 2) instead of the usage
    text and a traceback-free exit from inside parse_args; `--help` still prints the usage.
    Subcommand parsers are made of the same class (argparse uses the parent's class)."""

    def error(self, message: str):
        raise ArgumentError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=program_name(sys.argv[0]),
        description="IFC video instance segmentation in JAX/Flax.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"ifc_jax.commands.{name}")
        sub = subparsers.add_parser(name, help=help_text, description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    return parser


def split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.a.b=value` and `--config.a.b value` overrides from the other
    arguments; returns (the other arguments, ['a.b=value', ...])."""
    overrides, rest = [], []
    position = 0
    while position < len(argv):
        arg = argv[position]
        position += 1
        if not arg.startswith(CONFIG_OVERRIDE_PREFIX):
            rest.append(arg)
            continue
        if "=" not in arg:
            if position >= len(argv) or argv[position].startswith("--"):
                raise UserError(f"{arg}: needs a value (--config.KEY=VALUE or "
                                "--config.KEY VALUE)")
            arg = f"{arg}={argv[position]}"
            position += 1
        overrides.append(arg[len("--"):])
    return rest, overrides


COMPILATION_CACHE_VARIABLE = "IFC_JAX_COMPILATION_CACHE"


def default_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for the commands, so a second run with the
    same shapes loads its programs instead of compiling them again. The folder is
    $IFC_JAX_COMPILATION_CACHE (`off` disables it), else JAX's own
    $JAX_COMPILATION_CACHE_DIR, else ~/.cache/ifc_jax/xla ($XDG_CACHE_HOME respected).
    Returns the folder in use (None when off)."""
    choice = os.environ.get(COMPILATION_CACHE_VARIABLE, "")
    if choice.lower() == "off":
        return None
    folder = choice or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ifc_jax", "xla")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder  # read when jax is imported
    if "jax" in sys.modules:  # already imported (a test, a notebook): set it directly
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def storage_failure(err: BaseException) -> str | None:
    """'FILE: reason' when `err`, or an error it was raised from (libraries such as orbax
    wrap the OSError of a failed write), is a full disk, a quota, a file-size limit or a
    read-only / forbidden file; None otherwise."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_FAILURE_ERRNOS:
            reason = err.strerror or os.strerror(err.errno)
            return f"{err.filename}: {reason}" if err.filename else reason
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    # TensorFlow (data pipeline, TensorBoard writer) logs data errors raised inside tf.data as
    # C++ warnings with a Python traceback before we turn them into one clear line; keep its
    # warnings quiet unless the user asked otherwise. Must happen before TF is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF announces its oneDNN CPU kernels on import through a logger that ignores the level
    # above. We run no TF math that they speed up (only decoding, resizing and tf.data).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    default_compilation_cache()
    argv = sys.argv[1:] if argv is None else argv
    try:
        rest, overrides = split_config_overrides(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(rest)
        args.config_overrides = overrides
        if overrides and not hasattr(args, "config"):
            parser.error(f"'{args.command}' takes no --config.KEY=VALUE overrides")
    except ArgumentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"ifc_jax.commands.{args.command}")
    setup_logging()
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        print(f"error: out of host memory ({err or 'MemoryError'}); try smaller sizes",
              file=sys.stderr)
        return 2
    except Exception as err:
        failure = storage_failure(err)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

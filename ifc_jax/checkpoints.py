"""Run state on disk: the train state's orbax checkpoints and reading trained weights back.

Layout: `WORKDIR/checkpoints/<step>/` holds the whole train state (see train/step.py). The
data position needs no extra state: the pipeline's clip order is a pure function of (seed,
batch number) and the batch number equals the state's step. Weights are read from a workdir,
its checkpoints/ folder or one step folder (also what `convert` writes).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from ifc_jax import storage
from ifc_jax.io import UserError, first_line

log = logging.getLogger("ifc_jax.train")

State = dict[str, Any]


CHECKPOINT_FOLDER = "checkpoints"  # under the workdir


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for the train state."""

    def __init__(self, workdir: str, save_every: int, keep: int):
        # Absolute: orbax refuses relative paths (URLs such as gs://... are kept as they are).
        self.directory = storage.absolute(storage.join(workdir, CHECKPOINT_FOLDER))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(save_interval_steps=save_every,
                                                 max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template: State, step: int | None = None) -> State:
        """The state at `step` (default latest), laid out and sharded like `template`."""
        step = self.latest_step() if step is None else step
        quiet_abandoned_reads()  # before the reads, as in load_variables
        return self.manager.restore(step, args=ocp.args.StandardRestore(template))

    def restore_latest_intact(self, template: State) -> tuple[State, int] | None:
        """The newest checkpoint that restores, and its step; None when there is none.

        A step that fails to restore (a half-written or damaged folder) is reported in one
        line and moved aside as `corrupt_<step>` (kept for inspection, never deleted), and the
        one before it is tried.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        for position, step in enumerate(steps):
            try:
                return self.restore(template, step), step
            except MemoryError:
                raise
            # orbax and tensorstore raise many kinds of errors for a damaged checkpoint.
            except Exception as err:
                older = steps[position + 1] if position + 1 < len(steps) else None
                log.warning("checkpoint step %d in %s cannot be restored (%s); %s", step,
                            self.directory, first_line(err),
                            f"falling back to step {older}" if older is not None
                            else "no older checkpoint: starting from scratch")
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        """Moves a step that cannot be restored out of the manager's view (process 0 moves,
        every process then reloads the list of steps)."""
        if jax.process_index() == 0:
            source = storage.join(self.directory, str(step))
            target = storage.join(self.directory, f"corrupt_{step}")
            suffix = 1
            while storage.exists(target):
                target = storage.join(self.directory, f"corrupt_{step}_{suffix}")
                suffix += 1
            storage.rename_folder(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
        self.manager.reload()

    def save(self, step: int, state: State, force: bool = False) -> bool:
        """Saves if `step` is on the save interval (or `force`); returns whether it saved."""
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def is_abandoned_read_report(unraisable: Any) -> bool:
    """Whether an unraisable exception (`sys.unraisablehook`'s argument) is a late
    tensorstore read calling back into the event loop orbax closed when it gave up on a
    damaged checkpoint: RuntimeError('Event loop is closed') raised in call_soon_threadsafe."""
    error = unraisable.exc_value
    if not isinstance(error, RuntimeError) or str(error) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback or error.__traceback__)
    return any(frame.name == "call_soon_threadsafe" for frame in frames)


def quiet_abandoned_reads() -> None:
    """Keeps the reads orbax abandons on a damaged checkpoint from printing tracebacks.

    When one read of a checkpoint fails, orbax stops waiting for the others and closes its
    event loop; tensorstore still completes them and calls back into the closed loop, and
    Python prints each such failure as an 'Exception ignored' traceback, after the one line
    that already said what is wrong. Installed before the reads (a late read can report
    before the error reaches any handler), once per process: those reports are dropped;
    every other unraisable exception still reaches the hook installed before.
    """
    if getattr(sys.unraisablehook, "drops_abandoned_reads", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not is_abandoned_read_report(unraisable):
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook


def _find_state_dir(path: str) -> str:
    """Accepts a workdir, its checkpoints/ folder, or one step folder; returns the item dir.

    The result is absolute: orbax refuses to restore from a relative path.
    """
    path = storage.absolute(path)
    candidates = [path, storage.join(path, "checkpoints")]
    for candidate in candidates:
        if not storage.isdir(candidate):
            continue
        steps = sorted(int(name) for name in storage.listdir(candidate) if name.isdigit())
        if steps:
            candidate = storage.join(candidate, str(steps[-1]))
        default_item = storage.join(candidate, "default")
        if storage.isdir(default_item):
            return default_item
        if storage.isfile(storage.join(candidate, "_METADATA")):
            return candidate
    raise UserError(f"{path}: no orbax checkpoint found (expected a workdir, its checkpoints/ "
                    "folder or a step folder)")


def checkpoint_step(path: str) -> int | None:
    """The training step of the weights `load_variables(path)` reads (None for a `convert`
    output or another folder without a step)."""
    item_dir = _find_state_dir(path)
    for folder in (storage.dirname(item_dir), item_dir):
        name = storage.basename(folder)
        if name.isdigit():
            return int(name)
    return None


def load_variables(path: str) -> dict[str, Any]:
    """{'params', 'batch_stats'} of a saved train state, as numpy (the latest step)."""
    item_dir = _find_state_dir(path)
    checkpointer = ocp.StandardCheckpointer()
    # Before the reads: orbax's abandoned reads of a damaged checkpoint can report while its
    # error is still unwinding, before an except clause here runs.
    quiet_abandoned_reads()
    try:
        # Restored onto this process's first device whatever sharding the job that saved it
        # used (orbax refuses a checkpoint from another device count without a target). The
        # handler reads the item's tree metadata alone (the checkpointer would also look
        # for a step's metadata file in the item folder and warn that there is none).
        metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                sharding=device), metadata)
        restored = checkpointer.restore(item_dir, target)
    except MemoryError:
        raise
    # orbax and tensorstore raise many kinds of errors (ValueError, JSONDecodeError, ...) for
    # a damaged or half-written checkpoint.
    except Exception as err:
        raise UserError(f"{item_dir}: the checkpoint cannot be read ({first_line(err)})"
                        ) from err
    if not isinstance(restored, dict) or "params" not in restored:
        raise UserError(f"{path}: the checkpoint holds no 'params'")
    variables = {"params": restored["params"],
                 "batch_stats": restored.get("batch_stats", {})}
    return jax.tree.map(np.asarray, variables)


def path_name(path: Sequence[Any]) -> str:
    """A pytree key path as 'params/backbone/stem_conv1/conv/kernel'."""
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`path_name` -> shape of every leaf of `tree` (arrays or ShapeDtypeStructs)."""
    return {path_name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def model_variable_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """'params/...' and 'batch_stats/...' -> shape of an IFC's variables, computing nothing.

    Variable shapes do not depend on the input size, so a 1-frame 64x64 clip stands in.
    """
    variables = jax.eval_shape(model.init, jax.random.key(0),
                               jax.ShapeDtypeStruct((1, 1, 64, 64, 3), "uint8"),
                               jax.ShapeDtypeStruct((1, 1, 64, 64), "bool"))
    return flat_shapes(variables)


def merge_params(target: Any, source: Any, exclude_prefixes: Sequence[str] = ()
                 ) -> tuple[Any, list[str], list[str]]:
    """Copies `source` leaves into `target` where the paths and shapes match.

    Paths starting with one of `exclude_prefixes` (e.g. 'class_embed') are kept from
    `target`. Returns (merged, taken paths, kept-from-target paths). Shape mismatches fail.
    """
    source_flat = {jax.tree_util.keystr(path): leaf
                   for path, leaf in jax.tree_util.tree_flatten_with_path(source)[0]}
    taken, kept = [], []

    def pick(path, leaf):
        name = jax.tree_util.keystr(path)
        plain = path_name(path)
        if plain.startswith(tuple(exclude_prefixes)) or name not in source_flat:
            kept.append(plain)
            return leaf
        value = source_flat[name]
        if tuple(value.shape) != tuple(leaf.shape):
            raise UserError(f"init_from: {plain} has shape {tuple(value.shape)} in the "
                            f"checkpoint but {tuple(leaf.shape)} in the model")
        taken.append(plain)
        return jax.numpy.asarray(value, leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(pick, target)
    return merged, taken, kept


CONFIG_FILE = "config.json"  # the resolved config a training ran with, in its workdir
CONFIG_RECIPE_FILE = "config.py"  # the same, as a recipe: --config WORKDIR/config.py

_RECIPE_TEMPLATE = '''"""The resolved config of a training, recorded in its workdir by `train`.

Rebuild it with `--config` and this file's path (plus --config.KEY VALUE overrides);
config.json beside it holds the same values.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(VALUES)


VALUES = {values}
'''


def write_config_json(workdir: str, config: Any) -> str:
    """Records `config` (a ConfigDict) as WORKDIR/config.json and, in its ml_collections form,
    as the recipe WORKDIR/config.py, each atomically; returns the JSON path."""
    import pprint

    from ifc_jax.io import atomic_write_bytes

    path = storage.join(workdir, CONFIG_FILE)
    atomic_write_bytes(path, (config.to_json(indent=2, sort_keys=True) + "\n").encode())
    # repr() of plain numbers, strings, booleans and tuples reads back to equal values.
    values = pprint.pformat(config.to_dict(), indent=1, width=96, sort_dicts=True)
    recipe = _RECIPE_TEMPLATE.format(values=values)
    atomic_write_bytes(storage.join(workdir, CONFIG_RECIPE_FILE), recipe.encode())
    return path


def find_config_json(path: str) -> str | None:
    """The config.json recorded for weights at `path` (a workdir, its checkpoints/ folder or
    a step folder), or None."""
    path = storage.absolute(path)
    for folder in (path, storage.dirname(path), storage.dirname(storage.dirname(path))):
        candidate = storage.join(folder, CONFIG_FILE)
        if storage.isfile(candidate):
            return candidate
    return None

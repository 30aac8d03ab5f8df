"""Checkpoints with orbax: periodic saves, keep-K, resume from the latest, load other weights.

Layout: `WORKDIR/checkpoints/<step>/` holds the whole train state (see step.py). The data
position needs no extra state: the pipeline's clip order is a pure function of (seed, batch
number) and the batch number equals the state's step.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

State = dict[str, Any]


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for the train state."""

    def __init__(self, workdir: str, save_every: int, keep: int):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
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
        return self.manager.restore(step, args=ocp.args.StandardRestore(template))

    def save(self, step: int, state: State, force: bool = False) -> bool:
        """Saves if `step` is on the save interval (or `force`); returns whether it saved."""
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

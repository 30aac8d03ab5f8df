"""Loading weights from a checkpoint: init_from with an exclusion filter, shape checks."""

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.checkpoints import (
    Checkpoints,
    load_variables,
    merge_params,
    quiet_abandoned_reads,
)
from ifc_jax.io import UserError


def _state(value):
    return {
        "step": jnp.asarray(7, jnp.int32),
        "params": {"class_embed": {"w": jnp.full((3, 2), value)},
                   "decoder": {"w": jnp.full((4,), value), "b": jnp.full((2, 2), value)}},
        "batch_stats": {"backbone": {"mean": jnp.full((5,), value)}},
        "opt_state": {"mu": jnp.zeros((4,))},
    }


def _damage(folder, damage):
    """Overwrites the files under `folder` with garbage: its metadata files ("metadata") or
    all the others ("arrays")."""
    for parent, _, files in os.walk(folder):
        for name in files:
            if (damage == "metadata") == ("metadata" in name.lower()):
                (Path(parent) / name).write_bytes(b"\0garbage")


def test_init_from_takes_all_but_the_excluded_prefixes(tmp_path):
    checkpoints = Checkpoints(str(tmp_path / "source"), 1, 1)
    checkpoints.save(7, _state(2.0), force=True)
    checkpoints.close()
    for path in (tmp_path / "source", tmp_path / "source" / "checkpoints",
                 tmp_path / "source" / "checkpoints" / "7"):
        params = load_variables(str(path))["params"]
        np.testing.assert_array_equal(params["decoder"]["w"], np.full((4,), 2.0))
    target = _state(0.0)["params"]
    merged, taken, kept = merge_params(target, load_variables(str(tmp_path / "source"))["params"],
                                       ("class_embed",))
    np.testing.assert_array_equal(merged["class_embed"]["w"], np.zeros((3, 2)))  # excluded
    np.testing.assert_array_equal(merged["decoder"]["w"], np.full((4,), 2.0))
    assert sorted(taken) == ["decoder/b", "decoder/w"] and kept == ["class_embed/w"]
    stats = load_variables(str(tmp_path / "source"))["batch_stats"]
    np.testing.assert_array_equal(stats["backbone"]["mean"], np.full((5,), 2.0))


def test_relative_paths_load(tmp_path, monkeypatch):
    # `python main.py demo` passes its default workdir (workdirs/demo) as a relative path.
    checkpoints = Checkpoints(str(tmp_path / "run"), 1, 1)
    checkpoints.save(3, _state(5.0), force=True)
    checkpoints.close()
    monkeypatch.chdir(tmp_path)
    params = load_variables("run")["params"]
    np.testing.assert_array_equal(params["decoder"]["b"], np.full((2, 2), 5.0))


def test_mis_shaped_or_missing_checkpoints_fail_clearly(tmp_path):
    source = _state(1.0)["params"]
    target = {"decoder": {"w": jnp.zeros((5,)), "b": jnp.zeros((2, 2))}}
    with pytest.raises(UserError, match=r"decoder/w has shape \(4,\) in the checkpoint"):
        merge_params(target, source)
    with pytest.raises(UserError, match="no orbax checkpoint found"):
        load_variables(str(tmp_path))


@pytest.mark.parametrize("damage", ["metadata", "arrays"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog,
                                                                   monkeypatch, damage):
    import logging

    workdir = str(tmp_path / "run")
    checkpoints = Checkpoints(workdir, 1, 3)
    checkpoints.save(1, _state(1.0), force=True)
    checkpoints.save(2, _state(2.0), force=True)
    checkpoints.close()
    _damage(tmp_path / "run" / "checkpoints" / "2", damage)  # a half-written or damaged step
    monkeypatch.setattr(logging.getLogger("ifc_jax.train"), "propagate", True)
    checkpoints = Checkpoints(workdir, 1, 3)
    with caplog.at_level(logging.WARNING, logger="ifc_jax.train"):
        state, step = checkpoints.restore_latest_intact(_state(0.0))
    assert step == 1
    np.testing.assert_array_equal(state["params"]["decoder"]["w"], np.full((4,), 1.0))
    assert "checkpoint step 2" in caplog.text and "falling back to step 1" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "corrupt_2").is_dir()  # kept, not deleted
    assert checkpoints.latest_step() == 1
    assert checkpoints.save(2, _state(3.0), force=True)  # the step can be saved again
    checkpoints.close()
    assert Checkpoints(workdir, 1, 3).restore_latest_intact(_state(0.0))[1] == 2


@pytest.mark.parametrize("damage", ["arrays", "metadata"])
def test_a_damaged_checkpoint_given_as_weights_is_one_error_line(tmp_path, capsys, damage):
    from ifc_jax import cli

    checkpoints = Checkpoints(str(tmp_path / "run"), 1, 1)
    checkpoints.save(1, _state(1.0), force=True)
    checkpoints.close()
    item_dir = tmp_path / "run" / "checkpoints" / "1" / "default"
    _damage(item_dir, damage)
    with pytest.raises(UserError, match=f"{item_dir}: the checkpoint cannot be read"):
        load_variables(str(tmp_path / "run"))
    code = cli.main(["benchmark", "--what", "inference", "--config", "tiny", "--weights",
                     str(tmp_path / "run"), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if line.strip()]
    assert f"error: {item_dir}: the checkpoint cannot be read" in err


def test_reads_abandoned_on_a_damaged_checkpoint_print_no_traceback(monkeypatch):
    """orbax closes its event loop when a read fails; tensorstore's late callbacks into it
    (RuntimeError raised in call_soon_threadsafe) are dropped, any other unraisable error
    still reaches the previous hook."""
    import asyncio
    import sys

    reported = []
    monkeypatch.setattr(sys, "unraisablehook",
                        lambda unraisable: reported.append(str(unraisable.exc_value)))
    quiet_abandoned_reads()
    quiet_abandoned_reads()  # installed once
    loop = asyncio.new_event_loop()
    loop.close()

    class LateRead:
        def __del__(self):
            loop.call_soon_threadsafe(print)

    class OtherFailure:
        def __del__(self):
            raise RuntimeError("Event loop is closed")  # the same words, not from the loop

    LateRead()
    OtherFailure()
    assert reported == ["Event loop is closed"]
    reported.clear()
    LateRead()
    assert reported == []


def test_no_checkpoint_restores_nothing(tmp_path):
    assert Checkpoints(str(tmp_path / "empty"), 1, 1).restore_latest_intact(_state(0.0)) is None

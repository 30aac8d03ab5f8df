"""Evaluation during training: shares of the val videos merged into a one-process run's
results, and `train --config.train.eval_every_steps` writing WORKDIR/eval/step_<N> and eval/*
TensorBoard scalars."""

import json
import os
import subprocess
import threading

import jax
import numpy as np
import pytest

from tests import test_train_loop
from tests.test_train_loop import REPO, _env, _train_command

toy_root = test_train_loop.toy_root  # the fixture: a small toy dataset (6 train, 2 val videos)


def _random_model(config):
    from ifc_jax.models.ifc import IFC

    model = IFC.from_config(config.model)
    frames = np.zeros((1, config.data.num_frames, 64, 96, 3), np.uint8)
    variables = jax.jit(model.init)(jax.random.key(0), frames, np.zeros(frames.shape[:-1], bool))
    return model, variables


def _read(path):
    with open(path, "rb") as stream:
        return stream.read()


def test_shares_of_two_processes_merge_into_the_one_process_results(tiny_config, tmp_path):
    from ifc_jax.evaluation.evaluate import (
        evaluate_split,
        load_eval_split,
        merge_shares,
        predict_share,
        write_merged,
    )
    from ifc_jax.inference.predictor import VideoPredictor

    config = tiny_config
    config.data.root = str(tmp_path / "toy")
    config.data.toy.num_train = 1
    config.data.toy.num_val = 3  # shares of 2 and 1 videos: [0, 2] and [1]
    config.data.toy.min_frames = 4
    config.data.toy.max_frames = 6
    model, variables = _random_model(config)
    run = {"checkpoint_step": 7}
    single_dir = str(tmp_path / "single")
    summary = evaluate_split(config, model, variables, single_dir, run=run)
    reference = json.loads(_read(os.path.join(single_dir, "results.json")))
    assert summary["videos"] == 3 and summary["predictions"] == len(reference)

    dataset = load_eval_split(config)
    predictor = VideoPredictor.from_config(model, variables, config.inference)
    one_device = jax.local_devices()[:1]  # one device per process: every 2nd video each
    shares = [predict_share(config, predictor, dataset, process_index=index, process_count=2,
                            devices=one_device) for index in range(2)]
    assert [share.positions for share in shares] == [[0, 2], [1]]
    assert all(entries for share in shares for entries in share.results)  # every video
    # The order matters: the shares one after the other are not the dataset's order.
    one_after_the_other = shares[0].flat_results() + shares[1].flat_results()
    assert json.loads(json.dumps(one_after_the_other)) != reference
    merged = merge_shares(shares)
    assert merged.positions == [0, 1, 2]
    assert merged.frames == summary["frames"]
    assert json.loads(json.dumps(merged.flat_results())) == reference

    # The exchange between processes: process 1 (a thread here) hands its share over as a
    # part file; process 0 merges and writes the same files as the one-process run.
    sharded_dir = str(tmp_path / "sharded")
    barrier = threading.Barrier(2, timeout=120)
    returned = {}

    def process(index):
        returned[index] = write_merged(dataset, shares[index], sharded_dir, run,
                                       process_index=index, process_count=2,
                                       barrier=lambda name: barrier.wait())

    other = threading.Thread(target=process, args=(1,))
    other.start()
    process(0)
    other.join(timeout=120)
    assert returned[1] is None and returned[0]["videos"] == 3
    assert returned[0]["metrics"] == summary["metrics"]
    assert sorted(os.listdir(sharded_dir)) == ["metrics.json", "results.json"]  # parts gone
    for name in ("results.json", "metrics.json"):
        assert _read(os.path.join(sharded_dir, name)) == _read(os.path.join(single_dir, name))


def _tensorboard_scalars(workdir, tag):
    """{step: value} of `tag` in the workdir's TensorBoard event files."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        str(workdir), size_guidance={event_accumulator.TENSORS: 0,
                                     event_accumulator.SCALARS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    if tag in tags["scalars"]:
        return {event.step: event.value for event in accumulator.Scalars(tag)}
    if tag in tags["tensors"]:  # clu writes TF2 summaries: scalars as tensors
        return {event.step: float(tensor_util.make_ndarray(event.tensor_proto))
                for event in accumulator.Tensors(tag)}
    return {}


@pytest.mark.slow(80)
def test_train_evaluates_every_n_steps_into_the_workdir_and_tensorboard(tmp_path, toy_root):
    workdir = tmp_path / "run"
    command = _train_command(workdir, toy_root, 2, "--config.train.eval_every_steps=2")
    proc = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = workdir / "eval" / "step_2"
    assert sorted(os.listdir(output)) == ["metrics.json", "results.json"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    assert metrics["run"]["checkpoint_step"] == 2
    assert not (workdir / "eval" / "step_1").exists()
    line = next(line for line in proc.stderr.splitlines() if "eval at step " in line)
    assert f"eval at step 2: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f}" in line
    assert "(2 videos, " in line
    assert _tensorboard_scalars(workdir, "eval/AP") == {2: pytest.approx(metrics["AP"])}
    assert _tensorboard_scalars(workdir, "eval/AR10") == {2: pytest.approx(metrics["AR10"])}

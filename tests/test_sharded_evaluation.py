"""Evaluation spread over devices: every device predicts its own stream of whole videos, and
the merged results equal a one-device run's (bit-identical masks, equal scores). The
2-process x 4-device case runs in tests/test_train_loop.py (evaluation during training,
compared there with a one-device `evaluate` of the same checkpoint)."""

import jax
import numpy as np
import pytest

from ifc_jax.config import load_config
from ifc_jax.data.toy import generate_toy_dataset
from ifc_jax.evaluation.evaluate import load_eval_split, merge_shares, predict_share
from ifc_jax.inference.predictor import VideoPredictor
from ifc_jax.models.ifc import IFC


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sharded") / "toy")
    generate_toy_dataset(root, seed=5, num_train=1, num_val=7, min_frames=3, max_frames=9)
    config = load_config("configs/tiny.py")
    config.data.root = root
    config.data.dataset = "ytvis19"
    config.inference.window_frames = 3
    # Each device compiles its own programs: fewer transformer layers, less to compile (the
    # results' equality across devices does not depend on the depth).
    config.model.enc_layers, config.model.dec_layers = 1, 2
    model = IFC.from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(1), np.zeros((1, 1, 64, 64, 3), np.uint8),
                                    np.zeros((1, 1, 64, 64), bool))
    # Favour class 0 so that most queries are kept and every video has tracks.
    dense = variables["params"]["class_embed"]["layers_1"]["dense"]
    dense["bias"] = dense["bias"].at[0].add(6.0)
    dataset = load_eval_split(config)
    predictor = VideoPredictor.from_config(model, variables, config.inference)
    return config, dataset, predictor


def test_eight_devices_give_the_one_device_results(setting):
    config, dataset, predictor = setting
    assert jax.local_device_count() == 8  # tests/conftest.py
    one = predict_share(config, predictor, dataset, devices=jax.local_devices()[:1])
    eight = predict_share(config, predictor, dataset)
    assert one.positions == eight.positions == list(range(7))
    assert one.frames == eight.frames == sum(v.length for v in dataset.videos)
    assert sum(len(entries) for entries in one.results) > 7
    for first, second in zip(one.flat_results(), eight.flat_results(), strict=True):
        assert first["segmentations"] == second["segmentations"]  # bit-identical RLEs
        assert first["category_id"] == second["category_id"]
        assert abs(first["score"] - second["score"]) <= 1e-6
    # Two processes of four devices each: each process's share, merged, is the same again.
    shares = [predict_share(config, predictor, dataset, process_index=index, process_count=2,
                            devices=jax.local_devices()[:4]) for index in range(2)]
    assert shares[0].positions == [0, 1, 2, 3] and shares[1].positions == [4, 5, 6]
    assert merge_shares(shares).flat_results() == eight.flat_results()

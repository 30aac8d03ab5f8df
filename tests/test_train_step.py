"""The train step: same result on 8 devices as on 1, it learns, the host's stride-4 counts give
the loss of the device's downsampling, bad configs fail early."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifc_jax.config import load_config
from ifc_jax.data.clips import stride4_counts
from ifc_jax.io import UserError
from ifc_jax.models.ifc import IFC
from ifc_jax.train import losses, matching
from ifc_jax.train.optim import build_optimizer
from ifc_jax.train.step import (
    MODEL_INPUTS,
    compute_loss,
    init_state,
    make_train_step,
    select_model_inputs,
)
from ifc_jax.train.targets import upsample_predictions
from tests.test_targets import downsampled_on_device

B, T, H, W, G = 8, 2, 32, 32, 3


def synthetic_batch(seed=0):
    """Clips with 1-3 coloured rectangles; labels and targets (`target_counts`, and `masks`
    bool (B, G, T, H, W) they are made from) to match."""
    rng = np.random.RandomState(seed)
    frames = np.full((B, T, H, W, 3), 40, np.uint8)
    masks = np.zeros((B, G, T, H, W), bool)
    labels = np.zeros((B, G), np.int32)
    valid = np.zeros((B, G), bool)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230]], np.uint8)
    for b in range(B):
        for g in range(rng.randint(1, G + 1)):
            label = rng.randint(0, 3)
            y, x = rng.randint(0, H - 12), rng.randint(0, W - 12)
            for t in range(T):
                masks[b, g, t, y:y + 10, x + t:x + t + 10] = True
                frames[b, t][masks[b, g, t]] = colours[label]
            labels[b, g], valid[b, g] = label, True
    padding = np.zeros((B, T, H, W), bool)
    padding[1, :, 24:] = True  # one clip is padded
    frames[padding] = 0
    masks[1][:, padding[1]] = False
    return {"frames": frames, "padding_mask": padding, "labels": labels,
            "instance_valid": valid, "masks": masks, "target_counts": stride4_counts(masks)}


@pytest.fixture(scope="module")
def setup():
    config = load_config("configs/tiny.py")
    config.model.enc_layers = 1  # less to compile; the 3 decoder layers keep 2 aux losses
    config.model.dropout = 0.0
    config.train.lr = 1e-3
    config.train.grad_clip_norm = 1.0
    model = IFC.from_config(config.model)
    batch = synthetic_batch()
    optimizer, schedule = build_optimizer(config.train, 2)
    state = jax.jit(lambda r: init_state(model, optimizer, r, batch["frames"][:1],
                                         batch["padding_mask"][:1]))(jax.random.key(0))
    return config, model, optimizer, schedule, state, batch


# Compiled train steps by (device count, matcher), shared by the tests of one process: the
# host matcher's program (a host callback) cannot come from JAX's persistent cache, and three
# tests run it on 8 devices.
_STEPS: dict[tuple[int, str], object] = {}


def _run_steps(setup, devices, steps, matcher="host"):
    _, model, optimizer, schedule, state, batch = setup
    mesh = Mesh(np.asarray(devices), ("data",))
    key = (len(devices), matcher)
    if key not in _STEPS:
        _STEPS[key] = make_train_step(model, optimizer, schedule, jax.random.key(1), mesh,
                                      matcher)
    step_fn = _STEPS[key]
    replicated = NamedSharding(mesh, PartitionSpec())
    state = jax.device_put(jax.tree.map(jnp.copy, state), replicated)
    sharded = jax.device_put(select_model_inputs(batch),
                             NamedSharding(mesh, PartitionSpec("data")))
    losses = []
    for _ in range(steps):
        state, metrics = step_fn(state, sharded)
        losses.append(float(metrics["loss"]))
    return state, metrics, losses


@pytest.mark.slow(50)
def test_eight_devices_match_one_device(setup):
    state8, metrics8, _ = _run_steps(setup, jax.devices()[:8], 1)
    state1, metrics1, _ = _run_steps(setup, jax.devices()[:1], 1)
    for name in metrics1:
        np.testing.assert_allclose(metrics8[name], metrics1[name], rtol=2e-5, err_msg=name)
    flat8 = jax.tree_util.tree_leaves_with_path(state8["params"])
    flat1 = dict(jax.tree_util.tree_leaves_with_path(state1["params"]))
    # Adam's first step is lr * g / (|g| + eps): an element whose gradient is at float-noise
    # level (e.g. attention key biases, whose gradient is exactly zero because softmax ignores
    # a shift shared by all keys) moves by up to +-lr with a sign set by reduction order.
    # So: nearly every element must agree tightly, and every element within two lr steps.
    lr = setup[0].train.lr
    loose, total = 0, 0
    for path, leaf in flat8:
        a, b = np.asarray(leaf), np.asarray(flat1[path])
        tight = np.isclose(a, b, rtol=1e-4, atol=1e-6)
        if not jax.tree_util.keystr(path).endswith("['key']['bias']"):
            loose += int((~tight).sum())
            total += tight.size
        assert np.abs(a - b).max() <= 2.01 * lr, jax.tree_util.keystr(path)
    assert loose <= 1e-3 * total, f"{loose} of {total} elements differ"
    assert int(state8["step"]) == 1
    assert set(metrics1) >= {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0",
                             "loss_dice_1", "grad_norm", "lr"}


def test_loss_falls_when_fitting_one_batch(setup):
    _, _, losses = _run_steps(setup, jax.devices()[:8], 25)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.slow(45)
def test_device_matcher_gives_the_same_step(setup):
    _, metrics_host, _ = _run_steps(setup, jax.devices()[:8], 1, "host")
    _, metrics_device, _ = _run_steps(setup, jax.devices()[:8], 1, "device")
    np.testing.assert_allclose(metrics_device["loss"], metrics_host["loss"], rtol=1e-5)


def device_downsampled_loss(model, params, batch_stats, batch, dropout_rng):
    """compute_loss as it was before the host shipped `target_counts`: the device downsampled
    the full-resolution `masks` itself (same matcher, no mesh, paper weights)."""
    outputs = model.apply({"params": params, "batch_stats": batch_stats}, batch["frames"],
                          batch["padding_mask"], train=True, rngs={"dropout": dropout_rng})
    targets = downsampled_on_device(batch["masks"])
    height, width = targets.shape[-2:]
    upsampled = upsample_predictions(jax.lax.stop_gradient(outputs["pred_masks"]), height,
                                     width)
    scores = matching.matching_scores(jax.lax.stop_gradient(outputs["pred_logits"]), upsampled,
                                      batch["labels"], targets)
    query_index = matching.hungarian_match(scores, batch["instance_valid"], "host")
    return losses.set_criterion(outputs["pred_logits"], outputs["pred_masks"], batch["labels"],
                                batch["instance_valid"], targets, query_index)


def test_host_targets_give_the_loss_and_gradient_of_device_targets(setup):
    _, model, _, _, state, batch = setup
    assert "masks" not in MODEL_INPUTS and "target_counts" in MODEL_INPUTS
    old_inputs = {k: v for k, v in batch.items() if k != "target_counts"}
    params, stats, rng = state["params"], state["batch_stats"], jax.random.key(3)

    def new(params):
        return compute_loss(model, params, stats, select_model_inputs(batch), rng, "host", None,
                            losses.PAPER_LOSS_WEIGHTS)

    def old(params):
        return device_downsampled_loss(model, params, stats, old_inputs, rng)

    (new_loss, new_terms), new_grads = jax.jit(jax.value_and_grad(new, has_aux=True))(params)
    (old_loss, old_terms), old_grads = jax.jit(jax.value_and_grad(old, has_aux=True))(params)
    assert float(new_loss) == float(old_loss) and np.isfinite(float(new_loss))
    assert set(new_terms) == set(old_terms)
    for name in old_terms:
        assert float(new_terms[name]) == float(old_terms[name]), name
    for (path, new_grad), old_grad in zip(jax.tree_util.tree_leaves_with_path(new_grads),
                                          jax.tree.leaves(old_grads), strict=True):
        np.testing.assert_array_equal(new_grad, old_grad, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("override,needle", [
    ("data.num_frames=0", "config.data.num_frames"),
    ("train.batch_size=6", "config.train.batch_size"),
    ("model.communication=bogus", "config.model.communication"),
    ("data.root=/nonexistent", "config.data.root"),
])
def test_bad_config_refused_before_compiling(tmp_path, override, needle):
    from ifc_jax.api import train
    from ifc_jax.config import apply_override

    config = load_config("configs/tiny.py")
    config.data.dataset = "ytvis19"  # a real dataset: its files must exist
    config.train.batch_size = 8  # divisible by the 8 test devices unless overridden
    config.data.root = str(tmp_path)
    (tmp_path / config.data.train_json).write_text("{}")
    apply_override(config, override)
    with pytest.raises(UserError, match=needle):
        train(config, str(tmp_path / "workdir"))
    assert not (tmp_path / "workdir").exists()  # refused before anything was written

"""Optimiser: parameter groups, frozen parts untouched, AdamW against a numpy transcription."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ifc_jax.train.optim import build_optimizer, learning_rate_schedule, parameter_groups

TRAIN = {"lr": 1e-3, "lr_decay_steps": (2,), "lr_decay_factor": 0.1, "backbone_lr_mult": 0.1,
         "weight_decay": 1e-2, "grad_clip_norm": 1e9, "warmup_steps": 0}


def _params():
    return {
        "backbone": {
            "stem_conv1": {"conv": {"kernel": jnp.ones((2,))}, "norm": {"scale": jnp.ones((2,))}},
            "res2_0": {"conv1": {"conv": {"kernel": jnp.ones((2,))}}},
            "res3_0": {"conv1": {"conv": {"kernel": jnp.ones((2,))},
                                 "norm": {"bias": jnp.ones((2,))}}},
        },
        "decoder": {"norm": {"scale": jnp.ones((2,))}},
    }


def test_parameter_groups():
    groups = parameter_groups(_params(), freeze_at=2)
    assert groups["backbone"]["stem_conv1"]["conv"]["kernel"] == "frozen"
    assert groups["backbone"]["res2_0"]["conv1"]["conv"]["kernel"] == "frozen"
    assert groups["backbone"]["res3_0"]["conv1"]["conv"]["kernel"] == "backbone"
    assert groups["backbone"]["res3_0"]["conv1"]["norm"]["bias"] == "frozen"
    # A non-backbone LayerNorm called "norm" is trainable.
    assert groups["decoder"]["norm"]["scale"] == "default"
    assert parameter_groups(_params(), 0)["backbone"]["res2_0"]["conv1"]["conv"][
        "kernel"] == "backbone"


def _numpy_adamw(param, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW step by step."""
    m = v = 0.0
    for step, (grad, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        param = param - lr * wd * param
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
    return param


def test_updates_follow_torch_adamw_with_groups_and_schedule():
    params = _params()
    optimizer, schedule = build_optimizer(TRAIN, freeze_at=2)
    state = optimizer.init(params)
    rng = np.random.RandomState(0)
    grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.randn(*p.shape), jnp.float32), params)
                 for _ in range(4)]
    current = params
    for grads in grads_seq:
        updates, state = optimizer.update(grads, state, current)
        current = optax.apply_updates(current, updates)
    lrs = [float(schedule(step)) for step in range(4)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)

    decoder = _numpy_adamw(1.0, [np.asarray(g["decoder"]["norm"]["scale"]) for g in grads_seq],
                           lrs, TRAIN["weight_decay"])
    np.testing.assert_allclose(current["decoder"]["norm"]["scale"], decoder, rtol=1e-5)
    backbone = _numpy_adamw(
        1.0, [np.asarray(g["backbone"]["res3_0"]["conv1"]["conv"]["kernel"]) for g in grads_seq],
        [lr * 0.1 for lr in lrs], TRAIN["weight_decay"])
    np.testing.assert_allclose(current["backbone"]["res3_0"]["conv1"]["conv"]["kernel"],
                               backbone, rtol=1e-5)
    for frozen in (current["backbone"]["stem_conv1"]["conv"]["kernel"],
                   current["backbone"]["stem_conv1"]["norm"]["scale"],
                   current["backbone"]["res2_0"]["conv1"]["conv"]["kernel"],
                   current["backbone"]["res3_0"]["conv1"]["norm"]["bias"]):
        np.testing.assert_array_equal(frozen, np.ones(2))


def test_global_norm_clipping_spans_all_groups():
    """A clip norm comparable to Adam's eps makes the step size reveal the clipped gradient."""
    params = {"decoder": {"w": jnp.zeros((2,))}, "backbone": {"res3_0": {"w": jnp.zeros((2,))}}}
    clip = 1e-8
    config = dict(TRAIN, grad_clip_norm=clip, weight_decay=0.0)
    optimizer, _ = build_optimizer(config, freeze_at=2)
    grads = {"decoder": {"w": jnp.asarray([3.0, 0.0])},
             "backbone": {"res3_0": {"w": jnp.asarray([0.0, 4.0])}}}
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    scale = clip / 5.0  # global norm over both groups is 5
    expected_decoder = -1e-3 * (3.0 * scale) / (3.0 * scale + 1e-8)
    expected_backbone = -1e-4 * (4.0 * scale) / (4.0 * scale + 1e-8)
    np.testing.assert_allclose(updates["decoder"]["w"][0], expected_decoder, rtol=1e-4)
    np.testing.assert_allclose(updates["backbone"]["res3_0"]["w"][1], expected_backbone,
                               rtol=1e-4)


def test_linear_warmup_then_step_decay():
    schedule = learning_rate_schedule(1e-3, (6,), 0.1, warmup_steps=4)
    lrs = [float(schedule(step)) for step in range(8)]
    expected = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    no_warmup = learning_rate_schedule(1e-3, (6,), 0.1, warmup_steps=0)
    np.testing.assert_allclose([float(no_warmup(s)) for s in (0, 5, 6)], [1e-3, 1e-3, 1e-4],
                               rtol=1e-6)


def test_loss_weights_take_the_no_object_weight_from_the_config():
    from ifc_jax.config import load_config
    from ifc_jax.train.loop import loss_weights
    from ifc_jax.train.losses import PAPER_LOSS_WEIGHTS

    assert loss_weights(load_config("configs/ifc_r50_ytvis19.py", [])) == PAPER_LOSS_WEIGHTS
    weights = loss_weights(load_config("configs/tiny.py", ["train.no_object_weight=0.3"]))
    assert weights == PAPER_LOSS_WEIGHTS._replace(no_object=0.3)

"""The whole IFC model: output shapes, bfloat16 under jit, init and parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.config import load_config
from ifc_jax.models.ifc import IFC, dynamic_mask_logits, level_padding_mask

B, T, H, W = 2, 3, 64, 96


@pytest.fixture(scope="module")
def tiny():
    config = load_config("configs/tiny.py")
    # One encoder layer and two decoder layers (one aux output): every kind of layer, less
    # to compile than the recipe's 3 + 3.
    config.model.enc_layers, config.model.dec_layers = 1, 2
    model = IFC.from_config(config.model)
    rng = np.random.RandomState(0)
    frames = jnp.asarray(rng.randint(0, 256, (B, T, H, W, 3)), jnp.uint8)
    padding = np.zeros((B, T, H, W), bool)
    padding[1, :, 40:, :] = True  # clip 1 is a 40x96 video padded to 64x96
    padding = jnp.asarray(padding)
    variables = jax.jit(model.init)(jax.random.key(0), frames, padding)
    return config, model, variables, frames, padding


def test_output_shapes_train_and_eval(tiny):
    config, model, variables, frames, padding = tiny
    n, k = config.model.num_queries, config.model.num_classes
    train_out = jax.jit(lambda v, f, p: model.apply(
        v, f, p, train=True, rngs={"dropout": jax.random.key(1)}))(variables, frames, padding)
    layers = config.model.dec_layers  # train: every decoder layer's outputs
    assert train_out["pred_logits"].shape == (layers, B, n, k + 1)
    assert train_out["pred_masks"].shape == (layers, B, n, T, H // 8, W // 8)
    eval_out = jax.jit(model.apply)(variables, frames, padding)
    assert eval_out["pred_logits"].shape == (1, B, n, k + 1)
    assert eval_out["pred_masks"].shape == (1, B, n, T, H // 8, W // 8)
    assert all(x.dtype == jnp.float32 for x in eval_out.values())
    # Eval is deterministic and its last layer equals the all-layers output's last layer.
    all_layers = jax.jit(lambda v, f, p: model.apply(v, f, p, all_layers=True))(
        variables, frames, padding)
    np.testing.assert_allclose(all_layers["pred_logits"][-1:], eval_out["pred_logits"],
                               atol=1e-5)


def test_bfloat16_forward_under_jit_is_close_to_float32(tiny):
    config, model, variables, frames, padding = tiny
    settings = config.model.copy_and_resolve_references()  # the fixture's config stays
    settings.dtype = "bfloat16"
    model_bf16 = IFC.from_config(settings)
    out32 = jax.jit(model.apply)(variables, frames, padding)
    out16 = jax.jit(model_bf16.apply)(variables, frames, padding)  # same float32 params
    for key in ("pred_logits", "pred_masks"):
        assert out16[key].dtype == jnp.float32
        assert np.all(np.isfinite(out16[key]))
        a, b = np.asarray(out32[key]).ravel(), np.asarray(out16[key]).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.98, key
    jaxpr = str(jax.make_jaxpr(model_bf16.apply)(variables, frames, padding))
    assert "bf16" in jaxpr


@pytest.mark.slow(40)
def test_every_communication_variant_builds_and_runs(tiny):
    config, _, _, frames, padding = tiny
    for variant in ("no_comm", "full_thw", "decompose_thw"):
        # One layer of each kind: the variant is each encoder layer's; less to compile.
        settings = config.model.copy_and_resolve_references()
        settings.communication, settings.enc_layers, settings.dec_layers = variant, 1, 1
        model = IFC.from_config(settings)
        clip, clip_padding = frames[:1, :2, :32, :32], padding[:1, :2, :32, :32]
        variables = jax.jit(model.init)(jax.random.key(0), clip, clip_padding)
        out = jax.jit(model.apply)(variables, clip, clip_padding)
        assert out["pred_masks"].shape[3] == 2
        assert "memory_tokens" not in variables["params"]["encoder"]


def test_bgr_models_flip_channels_before_normalising(tiny):
    config, _, _, _, _ = tiny
    model = IFC.from_config(load_config("configs/ifc_r101_ytvis19.py").model)
    pixel = jnp.asarray([[[[10.0, 20.0, 30.0]]]])
    out = model.normalize(pixel, jnp.zeros((1, 1, 1), bool))
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.530, 20 - 116.280, 10 - 123.675],
                               rtol=1e-6)
    assert np.all(np.asarray(model.normalize(pixel, jnp.ones((1, 1, 1), bool))) == 0)


def test_level_padding_mask_is_ceil_of_valid_size():
    mask = level_padding_mask(jnp.asarray([360, 100]), jnp.asarray([640, 33]), (12, 20), 32)
    assert not np.any(mask[0])
    # ceil(100/32) = 4 valid rows, ceil(33/32) = 2 valid columns.
    expected = np.ones((12, 20), bool)
    expected[:4, :2] = False
    np.testing.assert_array_equal(mask[1], expected)


def test_dynamic_mask_logits_is_a_per_query_1x1_conv():
    rng = np.random.RandomState(0)
    kernels, features = rng.randn(2, 2, 3, 5), rng.randn(2, 4, 3, 6, 5)
    ours = np.asarray(dynamic_mask_logits(jnp.asarray(kernels), jnp.asarray(features)))
    for layer in range(2):
        for b in range(2):
            for n in range(3):
                expected = np.tensordot(features[b], kernels[layer, b, n], axes=([3], [0]))
                np.testing.assert_allclose(ours[layer, b, n], expected, atol=1e-5)


def _r50_parameter_shapes():
    model = IFC.from_config(load_config("configs/ifc_r50_ytvis19.py").model)
    return jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.uint8),
                          jax.ShapeDtypeStruct((1, 2, 64, 64), jnp.bool_))["params"]


def test_r50_parameter_counts_match_the_released_model():
    counts = {name: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
              for name, tree in _r50_parameter_shapes().items()}
    without_backbone = sum(v for k, v in counts.items() if k != "backbone")
    assert abs(without_backbone - 15.69e6) / 15.69e6 < 1e-3  # docs/model.md#parameter-counts
    assert abs(counts["backbone"] - 23.5e6) / 23.5e6 < 1e-3
    # Per-component figures (docs/model.md#parameter-counts).
    assert counts["input_proj"] == 2048 * 256 + 256
    assert counts["decoder"] == 3 * (2 * 4 * (256 * 256 + 256) + 2 * 256 * 2048 + 2048 + 256
                                     + 3 * 512) + 512
    assert counts["class_embed"] == 256 * 256 + 256 + 256 * 41 + 41
    assert counts["query_embed"] == 100 * 256


def test_head_initialisation_follows_spec(tiny):
    config = load_config("configs/tiny.py")
    config.model.hidden_dim = 64
    config.model.enc_layers, config.model.dec_layers = 1, 1  # only the heads are checked
    model = IFC.from_config(config.model)
    frames = jnp.zeros((1, 2, 64, 64, 3), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(3), frames,
                                 jnp.zeros((1, 2, 64, 64), bool))["params"]
    query = np.asarray(params["query_embed"])
    assert abs(query.std() - 1.0) < 0.1  # nn.Embedding: N(0, 1)
    lay1 = params["spatial_decoder"]["lay1"]
    bound = np.sqrt(3.0 / (9 * 64))  # kaiming_uniform(a=1), fan_in = 3*3*64
    assert np.abs(lay1["kernel"]).max() <= bound and np.abs(lay1["kernel"]).max() > 0.9 * bound
    assert not np.any(lay1["bias"])
    depthwise = params["spatial_decoder"]["out_depthwise"]["kernel"]
    assert depthwise.shape == (5, 5, 1, 64)
    assert np.abs(depthwise).max() <= np.sqrt(3.0 / 25)


@pytest.mark.parametrize("variant", ["ifc", "no_comm", "full_thw", "decompose_thw"])
def test_padding_a_clip_in_time_leaves_valid_frames_unchanged(variant):
    """A 2-frame window padded to 4 frames with frame_valid gives the 2-frame outputs."""
    config = load_config("configs/tiny.py")
    config.model.communication = variant
    # Two encoder layers (padding must not leak from one into the next), one decoder layer.
    config.model.enc_layers, config.model.dec_layers = 2, 1
    model = IFC.from_config(config.model)
    rng = np.random.RandomState(1)
    frames = jnp.asarray(rng.randint(0, 256, (2, 32, 48, 3)), jnp.uint8)
    padding = jnp.zeros((2, 32, 48), bool)
    variables = jax.jit(model.init)(jax.random.key(0), frames[None], padding[None])
    features = jax.jit(lambda v, f, p: model.apply(v, f, p, method=IFC.frame_features))(
        variables, frames, padding)
    # Two extra frames: fully padded pixels (as a padded frame would be), junk values.
    padded_frames = jnp.concatenate([frames, jnp.full((2, 32, 48, 3), 77, jnp.uint8)])
    padded_mask = jnp.concatenate([padding, jnp.ones((2, 32, 48), bool)])
    padded_features = jax.jit(lambda v, f, p: model.apply(v, f, p, method=IFC.frame_features))(
        variables, padded_frames, padded_mask)

    def clip(v, feats, valid):
        return model.apply(v, jax.tree.map(lambda x: x[None], feats), frame_valid=valid,
                           method=IFC.clip_outputs)

    short = jax.jit(lambda v, f: clip(v, f, None))(variables, features)
    long = jax.jit(lambda v, f: clip(v, f, jnp.asarray([[True, True, False, False]])))(
        variables, padded_features)
    np.testing.assert_allclose(long["pred_logits"], short["pred_logits"], atol=1e-4)
    np.testing.assert_allclose(long["pred_masks"][:, :, :, :2], short["pred_masks"], atol=1e-3)

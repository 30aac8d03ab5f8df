"""Position encoding, attention, transformer layers and resizing against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.models import layers
from ifc_jax.models.attention import DecoderLayer, EncoderLayer, MultiHeadAttention
from ifc_jax.models.position import sine_position_encoding
from ifc_jax.models.spatial_decoder import legacy_nearest_indices, legacy_nearest_resize
from tests import numpy_reference as ref


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


@pytest.mark.parametrize("valid", [(6, 9), (4, 5), (1, 1)])
def test_sine_position_matches_numpy(valid):
    mask = np.ones((6, 9), bool)
    mask[: valid[0], : valid[1]] = False
    ours = np.asarray(sine_position_encoding(jnp.asarray(mask), 32))
    expected = ref.sine_position(mask, 32)
    assert ours.shape == (6, 9, 32)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_sine_position_valid_region_does_not_depend_on_padding():
    unpadded = sine_position_encoding(jnp.zeros((4, 5), bool), 16)
    mask = np.ones((7, 8), bool)
    mask[:4, :5] = False
    padded = sine_position_encoding(jnp.asarray(mask), 16)
    np.testing.assert_allclose(padded[:4, :5], unpadded, atol=1e-6)


def test_multi_head_attention_matches_numpy_with_padding_mask():
    rng = np.random.RandomState(0)
    q, kv = rng.randn(2, 5, 16), rng.randn(2, 7, 16)
    mask = np.zeros((2, 7), bool)
    mask[0, 4:] = True
    mask[1, 6:] = True
    module = MultiHeadAttention(num_heads=4)
    params = module.init(jax.random.key(0), q, kv, kv)["params"]
    ours = np.asarray(module.apply({"params": params}, q, kv, kv, jnp.asarray(mask)))
    for b in range(2):
        expected = ref.multi_head_attention(q[b], kv[b], kv[b], _np(params), 4, mask[b])
        np.testing.assert_allclose(ours[b], expected, atol=1e-5)


def test_attention_init_matches_pytorch_packed_xavier():
    channels = 256
    module = MultiHeadAttention(num_heads=8)
    x = jnp.zeros((1, 3, channels))
    params = module.init(jax.random.key(1), x, x, x)["params"]
    # xavier_uniform over the packed (3C, C) in_proj: U(+-sqrt(6 / 4C)), biases zero.
    bound = np.sqrt(6.0 / (4 * channels))
    for name in ("query", "key", "value"):
        kernel = np.asarray(params[name]["kernel"])
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.95 * bound
        assert not np.any(params[name]["bias"])
    out_bound = np.sqrt(6.0 / (2 * channels))
    assert np.abs(params["out"]["kernel"]).max() <= out_bound
    assert np.abs(params["out"]["kernel"]).max() > 0.95 * out_bound


def test_encoder_layer_is_post_norm_detr_layer():
    rng = np.random.RandomState(1)
    x, pos = rng.randn(3, 6, 16), rng.randn(3, 6, 16)
    mask = np.zeros((3, 6), bool)
    mask[1, 3:] = True
    layer = EncoderLayer(num_heads=2, dim_feedforward=24, dropout=0.1)
    params = layer.init(jax.random.key(0), x, pos, mask)["params"]
    ours = np.asarray(layer.apply({"params": params}, x, pos, jnp.asarray(mask)))
    for b in range(3):
        expected = ref.encoder_layer(x[b], pos[b], _np(params), 2, mask[b])
        np.testing.assert_allclose(ours[b], expected, atol=1e-4)


def test_decoder_layer_matches_numpy():
    rng = np.random.RandomState(2)
    tgt, query_pos = rng.randn(2, 4, 16), rng.randn(2, 4, 16)
    memory, memory_pos = rng.randn(2, 9, 16), rng.randn(2, 9, 16)
    mask = np.zeros((2, 9), bool)
    mask[0, 5:] = True
    layer = DecoderLayer(num_heads=4, dim_feedforward=32)
    params = layer.init(jax.random.key(0), tgt, query_pos, memory, memory_pos, mask)["params"]
    ours = np.asarray(
        layer.apply({"params": params}, tgt, query_pos, memory, memory_pos, jnp.asarray(mask))
    )
    for b in range(2):
        expected = ref.decoder_layer(tgt[b], query_pos[b], memory[b], memory_pos[b],
                                     _np(params), 4, mask[b])
        np.testing.assert_allclose(ours[b], expected, atol=1e-4)


def test_dropout_is_active_only_in_training():
    x = jnp.asarray(np.random.RandomState(3).randn(2, 6, 16), jnp.float32)
    layer = EncoderLayer(num_heads=2, dim_feedforward=24, dropout=0.5)
    variables = layer.init(jax.random.key(0), x)
    eval_a = layer.apply(variables, x)
    eval_b = layer.apply(variables, x)
    train = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(5)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert np.abs(np.asarray(train) - np.asarray(eval_a)).max() > 1e-2


def test_legacy_nearest_indices_match_pytorch_examples():
    # F.interpolate(mode="nearest") source index = floor(dst * in / out).
    assert legacy_nearest_indices(12, 23).tolist() == [
        0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11]
    assert legacy_nearest_indices(2, 5).tolist() == [0, 0, 0, 1, 1]
    assert legacy_nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    # Half-pixel nearest (jax.image.resize) differs here: it maps output 11 of 12->23 to 6.
    half_pixel = np.floor((np.arange(23) + 0.5) * 12 / 23).astype(int)
    assert half_pixel[11] == 6 and legacy_nearest_indices(12, 23)[11] == 5


def test_legacy_nearest_resize_gathers_rows_and_columns():
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(1, 2, 3, 4)
    out = np.asarray(legacy_nearest_resize(x, 5, 7))
    rows, cols = legacy_nearest_indices(2, 5), legacy_nearest_indices(3, 7)
    for i in range(5):
        for j in range(7):
            np.testing.assert_array_equal(out[0, i, j], np.asarray(x)[0, rows[i], cols[j]])


def test_group_norm_matches_numpy():
    rng = np.random.RandomState(4)
    x = rng.randn(2, 3, 5, 8)
    scale, bias = rng.randn(8), rng.randn(8)
    ours = np.asarray(layers.group_norm(jnp.asarray(x, jnp.float32), scale, bias, 4, 1e-5))
    grouped = x.reshape(2, 3, 5, 4, 2)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * scale + bias
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_mlp_uses_pytorch_default_init():
    mlp = layers.MLP((64, 5))
    params = mlp.init(jax.random.key(0), jnp.zeros((1, 256)))["params"]
    first = params["layers_0"]["dense"]
    bound = 1 / np.sqrt(256)
    for leaf in (first["kernel"], first["bias"]):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.9 * bound
    second_bound = 1 / np.sqrt(64)
    assert np.abs(params["layers_1"]["dense"]["kernel"]).max() <= second_bound


@pytest.mark.parametrize("dtype,atol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_depthwise_conv_and_its_gradients_match_numpy(dtype, atol):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 7, 9, 6)
    kernel = rng.randn(5, 5, 1, 6)
    bias = rng.randn(6)
    upstream = rng.randn(2, 7, 9, 6)  # d(loss)/d(output)

    def loss(x, kernel, bias):
        out = layers.depthwise_conv(x.astype(dtype), kernel.astype(dtype), bias.astype(dtype))
        assert out.dtype == dtype
        return jnp.sum(out.astype(jnp.float32) * upstream)

    out = layers.depthwise_conv(*(jnp.asarray(a, dtype) for a in (x, kernel, bias)))
    np.testing.assert_allclose(np.asarray(out, np.float64),
                               ref.conv2d(x, kernel, pad=2, bias=bias, groups=6),
                               atol=atol * 10, rtol=atol)
    grads = jax.grad(loss, argnums=(0, 1, 2))(*(jnp.asarray(a, jnp.float32)
                                                for a in (x, kernel, bias)))
    # d/dx: the upstream gradient correlated with the flipped kernel; d/dkernel: each tap's
    # shifted input times the upstream gradient, summed over batch and positions.
    grad_x = ref.conv2d(upstream, kernel[::-1, ::-1], pad=2, groups=6)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    grad_kernel = np.array([[[np.sum(padded[:, i:i + 7, j:j + 9] * upstream, axis=(0, 1, 2))]
                             for j in range(5)] for i in range(5)])
    for ours, expected in zip(grads, (grad_x, grad_kernel, upstream.sum((0, 1, 2))),
                              strict=True):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(np.asarray(ours, np.float64) / scale, expected / scale,
                                   atol=atol)


def test_depthwise_conv_rejects_a_kernel_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        layers.depthwise_conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((4, 4, 1, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="does not fit"):
        layers.depthwise_conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 1, 5)), jnp.zeros(5))


@pytest.mark.parametrize("strides,use_bias", [(1, True), (2, False)])
def test_pointwise_conv_is_a_1x1_conv(strides, use_bias):
    rng = np.random.RandomState(1)
    x = rng.randn(2, 5, 7, 3)
    module = layers.PointwiseConv(4, strides=strides, use_bias=use_bias)
    variables = module.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
    params = variables["params"]
    assert params["kernel"].shape == (1, 1, 3, 4)  # nn.Conv's layout: checkpoints fit both
    assert ("bias" in params) == use_bias
    out = module.apply(variables, jnp.asarray(x, jnp.float32))
    expected = ref.conv2d(x, np.asarray(params["kernel"], np.float64), stride=strides,
                          bias=np.asarray(params["bias"]) if use_bias else None)
    assert out.shape == expected.shape == (2, -(-5 // strides), -(-7 // strides), 4)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)

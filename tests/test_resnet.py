"""ResNet backbone: PyTorch padding/stride semantics, frozen BN, sizes and parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.models.resnet import Bottleneck, FrozenBatchNorm, ResNet, max_pool_3x3_stride2
from tests import numpy_reference as ref


def _randomize_batch_stats(variables, seed):
    rng = np.random.RandomState(seed)

    def fill(path, leaf):
        name = path[-1].key
        values = rng.rand(*leaf.shape) + 0.5 if name == "var" else rng.randn(*leaf.shape) * 0.1
        return jnp.asarray(values, jnp.float32)

    stats = jax.tree_util.tree_map_with_path(fill, variables["batch_stats"])
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(rng.randn(*leaf.shape) * 0.1 + 1.0, jnp.float32)
        if path[-1].key == "scale" else leaf,
        variables["params"],
    )
    return {"params": params, "batch_stats": stats}


def _numpy_conv_norm(x, params, stats, stride, pad):
    y = ref.conv2d(x, np.asarray(params["conv"]["kernel"], np.float64), stride, pad)
    norm, stat = params["norm"], stats["norm"]
    return ref.frozen_bn(y, np.asarray(norm["scale"]), np.asarray(norm["bias"]),
                         np.asarray(stat["mean"]), np.asarray(stat["var"]))


@pytest.mark.parametrize("stride_in_1x1", [False, True])
def test_bottleneck_matches_numpy_reference(stride_in_1x1):
    """Stride placement (torchvision 3x3 vs MSRA 1x1), explicit padding and the shortcut."""
    x = np.random.RandomState(0).randn(2, 9, 11, 8)
    block = Bottleneck(out_channels=16, bottleneck_channels=4, stride=2,
                       stride_in_1x1=stride_in_1x1)
    variables = _randomize_batch_stats(block.init(jax.random.key(0), x), seed=1)
    ours = np.asarray(block.apply(variables, jnp.asarray(x, jnp.float32)))

    p, s = variables["params"], variables["batch_stats"]
    stride_1x1, stride_3x3 = (2, 1) if stride_in_1x1 else (1, 2)
    y = np.maximum(_numpy_conv_norm(x, p["conv1"], s["conv1"], stride_1x1, 0), 0)
    y = np.maximum(_numpy_conv_norm(y, p["conv2"], s["conv2"], stride_3x3, 1), 0)
    y = _numpy_conv_norm(y, p["conv3"], s["conv3"], 1, 0)
    shortcut = _numpy_conv_norm(x, p["shortcut"], s["shortcut"], 2, 0)
    expected = np.maximum(y + shortcut, 0)
    assert ours.shape == (2, 5, 6, 16)  # ceil(9/2), ceil(11/2)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_frozen_batch_norm_formula():
    x = np.random.RandomState(0).randn(3, 4, 5)
    bn = FrozenBatchNorm()
    variables = _randomize_batch_stats(bn.init(jax.random.key(0), x), seed=3)
    ours = np.asarray(bn.apply(variables, jnp.asarray(x, jnp.float32)))
    s, st = variables["params"], variables["batch_stats"]
    expected = ref.frozen_bn(x, np.asarray(s["scale"]), np.asarray(s["bias"]),
                             np.asarray(st["mean"]), np.asarray(st["var"]))
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_resnet():
    net = ResNet(depth=0, width=4, stage_blocks=(1, 1, 1, 1), freeze_at=2)
    x = jnp.asarray(np.random.RandomState(0).rand(2, 65, 97, 3), jnp.float32)
    variables = _randomize_batch_stats(jax.jit(net.init)(jax.random.key(0), x), seed=2)
    return net, variables, x


def test_feature_sizes_are_ceil_of_stride(tiny_resnet):
    net, variables, x = tiny_resnet
    features = net.apply(variables, x)
    for name, stride, channels in (("res2", 4, 16), ("res3", 8, 32), ("res4", 16, 64),
                                   ("res5", 32, 128)):
        assert features[name].shape == (2, -(-65 // stride), -(-97 // stride), channels)


def test_frozen_parts_get_no_gradient_and_stats_never_change(tiny_resnet):
    net, variables, x = tiny_resnet

    def loss(params):
        out, updates = net.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 x, mutable=["batch_stats"])
        return sum(jnp.sum(f**2) for f in out.values()), updates

    grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
    # BN statistics: apply() leaves them exactly as they were, even when allowed to mutate.
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"],
                 variables["batch_stats"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    for path, grad in flat:
        keys = [p.key for p in path]
        frozen = "norm" in keys or keys[0] in ("stem_conv1", "res2_0")
        if frozen:
            assert not np.any(np.asarray(grad)), f"frozen param {keys} got a gradient"
        else:
            assert np.any(np.asarray(grad)), f"trainable param {keys} got no gradient"


def _param_count(depth):
    net = ResNet(depth=depth)
    shapes = jax.eval_shape(net.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    return sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))


def test_resnet_parameter_counts_match_torchvision_trunks():
    # torchvision resnet50 / resnet101 minus the 2,049,000-parameter fc layer.
    assert _param_count(50) == 25_557_032 - 2_049_000
    assert _param_count(101) == 44_549_160 - 2_049_000


@pytest.mark.parametrize("height,width", [(8, 10), (7, 9), (1, 2)])
def test_stem_max_pool_matches_numpy_and_routes_the_gradient_to_the_maximum(height, width):
    rng = np.random.RandomState(height)
    x = rng.randn(2, height, width, 3)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    out_h, out_w = -(-height // 2), -(-width // 2)
    expected = np.full((2, out_h, out_w, 3), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            expected[:, i, j] = window.max(axis=(1, 2))
    ours = max_pool_3x3_stride2(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-6)
    # Random inputs have no ties: each output's gradient lands on its window's maximum,
    # summed where windows overlap.
    upstream = rng.randn(*expected.shape)
    grad = jax.grad(lambda v: jnp.sum(max_pool_3x3_stride2(v) * upstream))(
        jnp.asarray(x, jnp.float32))
    expected_grad = np.zeros_like(x)
    for n in range(2):
        for c in range(3):
            for i in range(out_h):
                for j in range(out_w):
                    window = padded[n, 2 * i:2 * i + 3, 2 * j:2 * j + 3, c]
                    di, dj = np.unravel_index(np.argmax(window), (3, 3))
                    expected_grad[n, 2 * i + di - 1, 2 * j + dj - 1, c] += upstream[n, i, j, c]
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-5, atol=1e-6)

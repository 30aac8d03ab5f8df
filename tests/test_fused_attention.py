"""Attention through `jax.nn.dot_product_attention` against the numpy MHA reference: padded keys,
fully padded rows, extra leading axes, bfloat16, the dropout path and the kernel choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.models import attention
from ifc_jax.models.attention import MultiHeadAttention
from tests import numpy_reference as ref

C, HEADS = 32, 4


def _setup(seed=0, lead=(2, 3), queries=5, keys=9):
    rng = np.random.RandomState(seed)
    q = rng.randn(*lead, queries, C).astype(np.float32)
    kv = rng.randn(*lead, keys, C).astype(np.float32)
    mask = np.zeros((*lead, keys), bool)
    mask[0, 0, 4:] = True
    mask[1, 2, 1:] = True  # one real key left
    mask[1, 1, :] = True  # every key padded
    module = MultiHeadAttention(num_heads=HEADS)
    params = module.init(jax.random.key(seed), q, kv, kv)["params"]
    return module, params, q, kv, mask


def _expected(params, q, kv, mask):
    """The numpy reference per (leading index); a fully padded row attends uniformly."""
    p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    out = np.zeros(q.shape)
    for index in np.ndindex(q.shape[:-2]):
        if mask[index].all():  # PyTorch gives NaN here; we keep uniform weights instead
            values = ref.dense(kv[index], p64["value"]).mean(0, keepdims=True)
            out[index] = ref.dense(np.repeat(values, q.shape[-2], 0), p64["out"])
        else:
            out[index] = ref.multi_head_attention(q[index], kv[index], kv[index], p64, HEADS,
                                                  mask[index])
    return out


def test_fused_attention_matches_numpy_with_padded_and_empty_rows():
    module, params, q, kv, mask = _setup()
    ours = np.asarray(module.apply({"params": params}, q, kv, kv, jnp.asarray(mask)))
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, _expected(params, q, kv, mask), atol=1e-5)


def test_fused_attention_bfloat16_within_tolerance():
    module, params, q, kv, mask = _setup(seed=1)
    half = MultiHeadAttention(num_heads=HEADS, dtype=jnp.bfloat16)
    ours = half.apply({"params": params}, q, kv, kv, jnp.asarray(mask))
    assert ours.dtype == jnp.bfloat16
    expected = _expected(params, q, kv, mask)
    error = np.abs(np.asarray(ours, np.float32) - expected)
    assert error.max() < 0.05 and error.mean() < 0.01


def test_fused_equals_explicit_softmax_path():
    """dropout_rate 0 in training mode and the deterministic call take the fused kernel; the
    explicit path (used with dropout) gives the same numbers when its dropout keeps all."""
    rng = np.random.RandomState(2)
    q, k, v = (jnp.asarray(rng.randn(3, 6, 2, 8), jnp.float32) for _ in range(3))
    mask = jnp.asarray(rng.rand(3, 6) < 0.3).at[1].set(True)
    fused = attention.dot_product_attention(q, k, v, mask, None, 0.0, True)
    # dropout_rate 1e-9: the explicit path, keeping every weight (scaled by 1 / (1 - 1e-9)).
    explicit = attention.dot_product_attention(q, k, v, mask, jax.random.key(0), 1e-9, False)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(explicit), atol=1e-6)


def test_dropout_is_applied_in_training_only():
    module, params, q, kv, mask = _setup(seed=3)
    module = MultiHeadAttention(num_heads=HEADS, dropout=0.5)
    args = (q, kv, kv, jnp.asarray(mask))
    eval_out = module.apply({"params": params}, *args)
    again = module.apply({"params": params}, *args, deterministic=True)
    train_out = module.apply({"params": params}, *args, deterministic=False,
                             rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(np.asarray(eval_out), np.asarray(again))
    assert np.abs(np.asarray(train_out) - np.asarray(eval_out)).max() > 1e-3


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv(attention.ENVIRONMENT_VARIABLE, raising=False)
    # On CPU "auto" is XLA's; cuDNN needs an NVIDIA GPU and 16-bit inputs.
    assert attention.select_implementation(jnp.bfloat16, 32) == "xla"
    monkeypatch.setattr(attention, "_on_cuda_gpu", lambda: True)
    assert attention.select_implementation(jnp.bfloat16, 32) == "cudnn"
    assert attention.select_implementation(jnp.float32, 32) == "xla"
    assert attention.select_implementation(jnp.bfloat16, 20) == "xla"
    with attention.attention_implementation("xla"):
        assert attention.select_implementation(jnp.bfloat16, 32) == "xla"
    monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, "xla")
    assert attention.select_implementation(jnp.bfloat16, 32) == "xla"
    monkeypatch.setattr(attention, "_on_cuda_gpu", lambda: False)
    monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, "cudnn")  # asked for: no device check
    assert attention.select_implementation(jnp.bfloat16, 32) == "cudnn"
    assert attention.select_implementation(jnp.float32, 32) == "xla"  # cuDNN cannot
    monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        attention.select_implementation(jnp.bfloat16, 32)
    with pytest.raises(ValueError, match="one of"), attention.attention_implementation("flash"):
        pass


def test_the_config_chooses_the_kernel_and_the_environment_overrides_it(monkeypatch):
    """config.model.attention reaches every attention layer of the model while it is traced;
    IFC_JAX_ATTENTION, when set, wins over it."""
    from ifc_jax.config import load_config
    from ifc_jax.models.ifc import IFC

    monkeypatch.setattr(attention, "_on_cuda_gpu", lambda: False)
    seen = []
    real = attention.select_implementation

    def spy(dtype, head_dim):
        seen.append(real(jnp.bfloat16, 32))  # what a bf16 call with a cuDNN-able head gets
        return "xla"  # trace the CPU path whatever was chosen

    monkeypatch.setattr(attention, "select_implementation", spy)
    frames = jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.uint8)
    padding = jax.ShapeDtypeStruct((1, 2, 64, 64), jnp.bool_)
    for kernel, env, expected in (("cudnn", None, "cudnn"), ("xla", None, "xla"),
                                  ("auto", None, "xla"), ("xla", "cudnn", "cudnn")):
        if env is None:
            monkeypatch.delenv(attention.ENVIRONMENT_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, env)
        model = IFC.from_config(load_config("tiny", [f"model.attention={kernel}"]).model)
        seen.clear()
        jax.eval_shape(model.init, jax.random.key(0), frames, padding)
        assert seen and set(seen) == {expected}, (kernel, env, seen)

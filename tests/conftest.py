"""Shared pytest set-up: 8 virtual CPU devices for sharding tests, quiet TensorFlow logs.

The environment variables must be set before jax (or tensorflow) is imported anywhere.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests check behaviour, not speed: a cheaper XLA backend halves CPU compile times.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()

import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
    """A fresh copy of configs/tiny.py (tests may edit it)."""
    from ifc_jax.config_loading import load_config

    return load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))

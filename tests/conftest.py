"""Shared pytest set-up: 8 virtual CPU devices for sharding tests, quiet TensorFlow logs.

The environment variables must be set before jax (or tensorflow) is imported anywhere.
"""

import os
import tempfile

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The numerical tests compare float32 results against float64 references: on a GPU, float32
# matrix products and convolutions default to TF32 (a 10-bit mantissa), which would hide
# nothing but fail them; no effect on a CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# Compiled programs are shared across tests and the subprocesses they start (the resume and
# multi-process tests run main.py several times): a per-session persistent cache, one for
# all pytest-xdist workers of the run (JAX writes its entries atomically).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"ifc-jax-xla-{_RUN}") if _RUN
    else tempfile.mkdtemp(prefix="ifc-jax-xla-"))
os.makedirs(os.environ["JAX_COMPILATION_CACHE_DIR"], exist_ok=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tests check behaviour, not speed: a cheaper XLA backend halves CPU compile times.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()

import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
    """A fresh copy of configs/tiny.py (tests may edit it)."""
    from ifc_jax.config import load_config

    return load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the slowest first (`@pytest.mark.slow(seconds)`, about what each
    takes on a quiet 2-core machine): the two workers take tests as they free up, so the long
    ones overlap at the start instead of one of them ending the run alone."""

    def expected_seconds(item) -> int:
        marker = item.get_closest_marker("slow")
        return (marker.args[0] if marker.args else 1) if marker else 0

    items.sort(key=expected_seconds, reverse=True)  # stable: the rest keep their order

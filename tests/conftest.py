"""Shared pytest set-up: 8 virtual CPU devices for sharding tests, quiet TensorFlow logs.

The environment variables must be set before jax (or tensorflow) is imported anywhere.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

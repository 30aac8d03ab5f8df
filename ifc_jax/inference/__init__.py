"""inference stage of ifc-jax."""

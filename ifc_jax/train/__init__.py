"""train stage of ifc-jax."""

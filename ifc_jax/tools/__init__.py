"""tools stage of ifc-jax."""

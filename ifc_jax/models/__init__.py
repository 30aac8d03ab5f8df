"""models stage of ifc-jax."""

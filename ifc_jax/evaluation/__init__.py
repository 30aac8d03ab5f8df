"""evaluation stage of ifc-jax."""

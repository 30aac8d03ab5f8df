"""data stage of ifc-jax."""

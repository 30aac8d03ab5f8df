"""commands stage of ifc-jax."""

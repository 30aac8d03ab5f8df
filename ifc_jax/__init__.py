"""ifc-jax: IFC (Inter-Frame Communication Transformers) for video instance segmentation in JAX."""

__version__ = "0.1.0"

"""ifc-jax: IFC (Inter-Frame Communication Transformers) for video instance segmentation in JAX.

    import ifc_jax
    model = ifc_jax.load("workdirs/demo")      # a training workdir (its config and weights)
    tracks = model.predict("clip.mp4")         # class name, score and per-frame masks each

`ifc_jax.api` has every command as a function; `ifc-jax --help` lists the commands.
"""

__version__ = "0.1.0"


def load(workdir: str, config=None, *, weights: str | None = None):
    """The trained model of a workdir (see `ifc_jax.api.load`); jax loads on first use."""
    from ifc_jax.api import load as load_model

    return load_model(workdir, config, weights=weights)

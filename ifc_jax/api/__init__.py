"""The application layer: every command's work as a plain function with keyword arguments
that returns data, and `load` for a trained model in a notebook.

    from ifc_jax import api
    history, evaluation = api.train_and_evaluate("toy", "workdirs/toy")
    model = api.load("workdirs/toy")
    tracks = model.predict("clip.mp4")

Configs are given as a recipe name ("toy"), a file ("configs/toy.py", "my.py:variant") or an
`ml_collections.ConfigDict`; each is validated once (`ifc_jax.config.validate`).
"""

from ifc_jax.api.demo import run_demo
from ifc_jax.api.experiment import (
    evaluate,
    predict_video,
    predict_videos,
    train,
    train_and_evaluate,
)
from ifc_jax.api.model import Model, Track, load
from ifc_jax.api.reports import (
    convert_weights,
    encoder_flops_table,
    run_benchmark,
    score,
    summarize,
)
from ifc_jax.api.splits import split_annotations

__all__ = ["Model", "Track", "convert_weights", "encoder_flops_table", "evaluate", "load",
           "predict_video", "predict_videos", "run_benchmark", "run_demo", "score",
           "split_annotations", "summarize", "train", "train_and_evaluate"]

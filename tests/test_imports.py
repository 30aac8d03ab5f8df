"""GPU hosts may lack TensorFlow, tfds and clu: the model, inference, metric, FLOPs and
benchmark code (the train benchmark's step, loop and batch helpers included) must import (and
the commands start) without them."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCK = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "clu", "tensorboard"):
    sys.modules[name] = None  # any import of them raises ImportError
"""
MODULES = ["ifc_jax.models.ifc", "ifc_jax.inference.predictor", "ifc_jax.evaluation.evaluate",
           "ifc_jax.inference.video", "ifc_jax.evaluation.ytvis_metric", "ifc_jax.flops",
           "ifc_jax.benchmarks.encoder", "ifc_jax.benchmarks.inference",
           "ifc_jax.benchmarks.train", "ifc_jax.benchmarks.roofline",
           "ifc_jax.benchmarks.synthetic_video", "ifc_jax.train.loop", "ifc_jax.train.step",
           "ifc_jax.data.global_batch",
           "ifc_jax.visualize", "ifc_jax.checkpoints", "ifc_jax.commands.predict",
           "ifc_jax.commands.evaluate", "ifc_jax.commands.score", "ifc_jax.cli", "ifc_jax.api",
           "ifc_jax.commands.summary", "ifc_jax.commands.flops", "ifc_jax.commands.convert",
           "ifc_jax.commands.benchmark", "ifc_jax.convert"]


def test_inference_side_imports_without_tensorflow_or_clu():
    code = BLOCK + "".join(f"import {module}\n" for module in MODULES) + (
        "from ifc_jax.cli import build_parser\nbuild_parser()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_blocking_works():
    proc = subprocess.run([sys.executable, "-c", BLOCK + "import tensorflow"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "import of tensorflow halted" in proc.stderr


def test_training_without_the_data_extra_is_one_clear_error(tmp_path):
    code = BLOCK + ("import sys\nfrom ifc_jax.cli import main\n"
                    f"sys.exit(main(['train', '--config', 'tiny', '--workdir', "
                    f"{str(tmp_path / 'wd')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: training needs tensorflow, tensorflow_datasets, clu, tensorboard (the input "
        "pipeline and "
        "TensorBoard): pip install 'ifc-jax[data]'")
    assert not (tmp_path / "wd").exists()

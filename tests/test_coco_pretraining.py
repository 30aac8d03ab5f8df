"""The two-stage recipe end to end on a CPU, as the commands run it: COCO-style image
pre-training on the toy COCO set (T = 1, random crops) with its COCOeval scores, then video
fine-tuning from that workdir without the class head, evaluated on the toy videos."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from ifc_jax.checkpoints import load_variables
from tests import test_train_loop
from tests.test_train_loop import SMALL_MODEL, _run, _train_command

toy_root = test_train_loop.toy_root  # the fixture: a small toy dataset (6 train, 2 val videos)
IMAGES = [  # crop sides 48..64 px of the 96x144 frames at short side 64 fit the 64 x 96 canvas
    *SMALL_MODEL, "--config.data.train_crop=(48, 64)", "--config.data.toy.num_train=6",
    "--config.data.toy.num_val=2", "--config.train.batch_size=2",
    "--config.train.matcher=device", "--config.inference.pad_size_multiple=32",
]


@pytest.mark.slow(100)
def test_pretrain_on_images_then_finetune_on_videos_then_evaluate(tmp_path, toy_root):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    _run([sys.executable, "main.py", "train", "--config", "configs/toy_coco.py", "--workdir",
          str(pre), f"--config.data.root={toy_root}", *IMAGES, "--config.train.num_steps=2",
          "--config.train.checkpoint_every=2", "--config.train.eval_every_steps=2"])
    images = json.loads(pathlib.Path(toy_root, "coco", "instances_valid.json").read_text())[
        "images"]
    detections = json.loads((pre / "eval" / "step_2" / "results.json").read_text())
    # One detection per query (10) of every image, each with its best class, as COCO needs.
    assert len(detections) == 10 * len(images)
    assert {d["image_id"] for d in detections} == {image["id"] for image in images}
    assert all(set(d) == {"image_id", "category_id", "segmentation", "score"}
               and d["segmentation"]["size"] == [96, 144] for d in detections)
    metrics = json.loads((pre / "eval" / "step_2" / "metrics.json").read_text())
    assert {"AP", "AP50", "AR100"} <= set(metrics) and 0 <= metrics["AP"] <= 1

    proc = _run(_train_command(fine, toy_root, 1, f"--config.train.init_from={pre}",
                               "--config.train.init_exclude=class_embed",
                               # another init than pre-training's, one whose random class
                               # head keeps queries (one that called every query "no
                               # object" would leave no results to check)
                               "--config.train.seed=2",
                               "--config.train.eval_every_steps=1"))
    assert "4 kept from random init (class_embed/" in proc.stderr
    # One step at the warm-up's first lr (1e-3 / 150) moves no param by more than about lr:
    # every param is the pre-trained one, except the class head, from its own random init.
    pretrained = jax.tree_util.tree_leaves_with_path(load_variables(str(pre))["params"])
    finetuned = jax.tree.leaves(load_variables(str(fine))["params"])
    heads = 0
    for (path, a), b in zip(pretrained, finetuned, strict=True):
        if "class_embed" in jax.tree_util.keystr(path):
            heads += 1
            assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2
        else:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-4)
    assert heads == 4
    results = json.loads((fine / "eval" / "step_1" / "results.json").read_text())
    assert results and all("video_id" in entry and "segmentations" in entry
                           for entry in results)
    assert 0 <= json.loads((fine / "eval" / "step_1" / "metrics.json").read_text())["AP"] <= 1

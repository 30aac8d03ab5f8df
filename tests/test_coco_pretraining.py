"""The two-stage recipe end to end on a CPU, as the commands run it: COCO-style image
pre-training on the toy COCO set (T = 1, random crops) and its COCOeval scores, then video
fine-tuning from that workdir without the class head, then video evaluation."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from ifc_jax.checkpoints import load_variables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [  # configs/tiny.py's model sizes on a small toy dataset; 2 clips per step
    "--config.model.hidden_dim=32", "--config.model.dim_feedforward=64",
    "--config.model.backbone.width=8", "--config.data.toy.num_train=6",
    "--config.data.toy.num_val=2", "--config.train.batch_size=2",
    "--config.train.log_every=1", "--config.train.matcher=device",
    "--config.data.test_short_side=64", "--config.data.test_max_size=128",
]
IMAGES = [  # crop sides 48..64 px of the 96x144 frames, short side 64: fits 64 x 96
    "--config.data.train_crop=(48, 64)", "--config.data.train_short_sides=(64,)",
    "--config.data.train_max_size=128", "--config.data.pad_height=64",
    "--config.data.pad_width=96",
]
CLIPS = ["--config.data.train_short_sides=(64,)", "--config.data.train_max_size=128",
         "--config.data.pad_height=64", "--config.data.pad_width=96"]


def _main(*args):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_pretrain_on_images_then_finetune_on_videos_then_evaluate(tmp_path):
    root, pre, fine = tmp_path / "toy", tmp_path / "pre", tmp_path / "fine"
    data = [f"--config.data.root={root}", *SMALL]
    _main("train", "--config", "configs/toy_coco.py", "--workdir", str(pre), *data, *IMAGES,
          "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert (root / "coco" / "instances_train.json").is_file()

    _main("evaluate", "--workdir", str(pre))
    detections = json.loads((pre / "eval" / "results.json").read_text())
    images = json.loads((root / "coco" / "instances_valid.json").read_text())["images"]
    # One detection per query (10) of every image, each with its best class.
    assert len(detections) == 10 * len(images)
    assert {d["image_id"] for d in detections} == {image["id"] for image in images}
    assert all(set(d) == {"image_id", "category_id", "segmentation", "score"}
               and d["segmentation"]["size"] == [96, 144] for d in detections)
    metrics = json.loads((pre / "eval" / "metrics.json").read_text())
    assert {"AP", "AP50", "AR100"} <= set(metrics) and 0 <= metrics["AP"] <= 1

    proc = _main("train", "--config", "configs/toy.py", "--workdir", str(fine), *data, *CLIPS,
                 f"--config.train.init_from={pre}", "--config.train.init_exclude=class_embed",
                 "--config.train.num_steps=1", "--config.train.checkpoint_every=1",
                 "--config.train.lr=1e-9", "--config.train.warmup_steps=0",
                 "--config.train.seed=1")  # another random init than the pre-training's
    assert "kept from random init (class_embed/" in proc.stderr
    # After one step at lr 1e-9 the fine-tuned params are the pre-trained ones (Adam moves
    # each by about lr), except the class head, which starts from its own random init.
    pretrained = jax.tree_util.tree_leaves_with_path(load_variables(str(pre))["params"])
    finetuned = jax.tree.leaves(load_variables(str(fine))["params"])
    heads = 0
    for (path, a), b in zip(pretrained, finetuned, strict=True):
        if "class_embed" in jax.tree_util.keystr(path):
            heads += 1
            assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
        else:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)
    assert heads == 4
    _main("evaluate", "--workdir", str(fine))
    results = json.loads((fine / "eval" / "results.json").read_text())
    assert all("video_id" in entry and "segmentations" in entry for entry in results)
    metrics = json.loads((fine / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["AP"] <= 1

r"""The COCO pre-training stage on the toy dataset, on a CPU: a check of the whole two-stage
recipe (image pre-training, then video fine-tuning), not a model worth keeping.

The toy videos' frames become a COCO image set (every 4th frame; dataset "toy_coco",
generated on first use under data/toy/coco), trained as one-frame clips with the COCO
recipe's augmentation at toy scale (crop sides 64..96 px, short side 128 or 160), and scored
by COCOeval. Then the toy video recipe fine-tunes from it without the class head:

  ifc-jax train --config toy_coco --workdir workdirs/toy_coco
  ifc-jax evaluate --config toy_coco --workdir workdirs/toy_coco
  ifc-jax train --config toy --workdir workdirs/toy_from_coco \
      --config.train.init_from=workdirs/toy_coco --config.train.init_exclude=class_embed
"""

import ml_collections

from . import toy


def get_config() -> ml_collections.ConfigDict:
    config = toy.get_config()
    data = config.data
    data.dataset = "toy_coco"
    data.train_json = "coco/instances_train.json"
    data.train_frames = "."  # file names are relative to the toy root
    data.val_json = "coco/instances_valid.json"
    data.val_frames = "."
    data.num_frames = 1
    data.train_crop = (64, 96)
    data.train_short_sides = (128, 160)
    data.train_max_size = 288
    # 96 x 96 crop sides at short side 160 at most: 160 x 240 (aspect <= 1.5) either way.
    data.pad_height = 256
    data.pad_width = 256
    config.train.batch_size = 8
    config.train.num_steps = 500
    config.train.lr_decay_steps = (400,)
    config.train.warmup_steps = 50
    inference = config.inference
    inference.window_frames = 1
    inference.window_stride = 1
    inference.multi_class = False
    inference.pad_size_multiple = 64
    inference.drop_empty_tracks = False
    inference.min_track_pixels = 0
    return config

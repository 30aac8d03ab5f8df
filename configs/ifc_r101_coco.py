r"""IFC, ResNet-101 (MSRA weights), COCO: the paper's R-101 image pre-training.

The R-50 COCO recipe (configs/ifc_r50_coco.py) with the MSRA R-101 backbone of
configs/ifc_r101_ytvis19.py and a longer schedule: 1,848,000 steps (500 epochs), lr x 0.1 at
1,232,000.

  ifc-jax convert --from R-101.pkl --to weights/r101_imagenet --config ifc_r101_coco
  ifc-jax train --config ifc_r101_coco --workdir workdirs/r101_coco
  ifc-jax train --config ifc_r101_ytvis19 --workdir workdirs/r101_ytvis19 \
      --config.train.init_from=workdirs/r101_coco
"""

import ml_collections

from . import ifc_r50_coco


def get_config() -> ml_collections.ConfigDict:
    config = ifc_r50_coco.get_config()
    backbone = config.model.backbone
    backbone.depth = 101
    backbone.stride_in_1x1 = True
    config.model.input_format = "BGR"
    config.model.pixel_mean = (103.530, 116.280, 123.675)
    config.model.pixel_std = (1.0, 1.0, 1.0)
    config.train.num_steps = 1_848_000
    config.train.lr_decay_steps = (1_232_000,)
    config.train.init_from = "weights/r101_imagenet"
    return config

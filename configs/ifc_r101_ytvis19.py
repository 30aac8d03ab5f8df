r"""IFC, ResNet-101 (MSRA weights), YouTube-VIS 2019: the paper's R-101 recipe (docs/training.md).

Same recipe as R-50; the backbone is detectron2's MSRA R-101: stride in the 1x1 conv, BGR
input, caffe mean and unit std. Takes the same variants as ifc_r50_ytvis19 (`:offline`).

  ifc-jax train --config ifc_r101_ytvis19 --workdir workdirs/r101_ytvis19
  ifc-jax summary --config ifc_r101_ytvis19

The released R-101 IFC checkpoint and detectron2's ImageNetPretrained/MSRA/R-101.pkl convert
with this config (docs/pretrained_weights.md):
  ifc-jax convert --from R-101.pkl --to weights/r101_imagenet --config ifc_r101_ytvis19
"""

import ml_collections

from . import ifc_r50_ytvis19


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ifc_r50_ytvis19.get_config(variant)
    config.model.backbone.depth = 101
    config.model.backbone.stride_in_1x1 = True
    config.model.input_format = "BGR"
    config.model.pixel_mean = (103.530, 116.280, 123.675)
    config.model.pixel_std = (1.0, 1.0, 1.0)
    return config

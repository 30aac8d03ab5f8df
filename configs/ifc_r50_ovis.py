r"""IFC, ResNet-50, OVIS (Occluded Video Instance Segmentation): the YouTube-VIS recipe on
OVIS's 25 categories.

The paper does not report OVIS; this recipe keeps the YouTube-VIS 2019 schedule and
inference and changes what the data needs: 25 classes and OVIS's file layout
(data/README.md#ovis). OVIS annotates every frame (YouTube-VIS every 5th), so the training
clips' frames are sampled within the same range of annotated frames, i.e. a shorter span of
time. Scoring a labelled OVIS split adds the occlusion metrics (AP/AR by light, medium, heavy
occlusion; docs/metric.md).

  ifc-jax train --config ifc_r50_ovis --workdir workdirs/r50_ovis \
      --config.train.init_from=weights/ifc_r50_coco
  ifc-jax evaluate --config ifc_r50_ovis --workdir workdirs/r50_ovis
"""

import ml_collections

from . import ifc_r50_ytvis19

VARIANTS = ifc_r50_ytvis19.VARIANTS


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ifc_r50_ytvis19.get_config(variant)
    config.model.num_classes = 25
    config.data.dataset = "ovis"
    config.data.root = "data/ovis"
    config.data.train_json = "annotations_train.json"
    config.data.train_frames = "train"
    config.data.val_json = "annotations_valid.json"
    config.data.val_frames = "valid"
    return config

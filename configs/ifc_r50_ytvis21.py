r"""IFC, ResNet-50, YouTube-VIS 2021: the 2019 recipe on the 2021 data (the paper reports
36.6 AP near-online).

Same 40-category head, schedule and inference as configs/ifc_r50_ytvis19.py; only the data
layout differs (data/README.md#youtube-vis-2021). Fine-tune from COCO-pretrained IFC weights:

  ifc-jax train --config ifc_r50_ytvis21 --workdir workdirs/r50_ytvis21 \
      --config.train.init_from=weights/ifc_r50_coco
  ifc-jax evaluate --config ifc_r50_ytvis21 --workdir workdirs/r50_ytvis21
  ifc-jax evaluate --config configs/ifc_r50_ytvis21.py:offline --workdir workdirs/r50_ytvis21

The official valid split has no annotations: `evaluate` writes results.json for the CodaLab
server. To score locally, carve a labelled split out of the training JSON (data/README.md).
"""

import ml_collections

from . import ifc_r50_ytvis19

VARIANTS = ifc_r50_ytvis19.VARIANTS


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ifc_r50_ytvis19.get_config(variant)
    config.data.dataset = "ytvis21"
    config.data.root = "data/ytvis_2021"
    config.data.train_json = "train/instances.json"
    config.data.train_frames = "train/JPEGImages"
    config.data.val_json = "valid/instances.json"
    config.data.val_frames = "valid/JPEGImages"
    return config

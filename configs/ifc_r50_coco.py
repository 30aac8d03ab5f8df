r"""IFC, ResNet-50, COCO: the paper's image pre-training stage (docs/training.md#coco-pretraining).

COCO instance segmentation as one-frame clips (T = 1), from the ImageNet R-50 backbone: 32
images per step for 1,108,800 steps (300 epochs of COCO train2017), lr x 0.1 at 739,200
(epoch 200). Every image is randomly cropped (each side 384..600 px), resized to a short side
of 480, 512, ..., 800 (long side <= 1333) and flipped with probability 0.5. The crop bounds
the resized image by 1250 px a side, so the static canvas is 1280 x 1280; the loss groups are
the original's 4 images per GPU (8 GPUs x 4). Evaluation is COCO mask AP (pycocotools'
COCOeval) on val2017, each image predicted as a one-frame video at short side 800 (detectron2's
test size), one detection per query with its best class. Then fine-tune on YouTube-VIS from
this run, without its class head (`train.init_exclude` of the video recipes):

  ifc-jax convert --from R-50.pkl --to weights/r50_imagenet
  ifc-jax train --config ifc_r50_coco --workdir workdirs/r50_coco
  ifc-jax evaluate --config ifc_r50_coco --workdir workdirs/r50_coco
  ifc-jax train --config ifc_r50_ytvis19 --workdir workdirs/r50_ytvis19 \
      --config.train.init_from=workdirs/r50_coco

Data layout: data/README.md#coco (annotations/instances_train2017.json, train2017/, ...).
"""

import ml_collections

from . import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.model.num_classes = 80
    data = config.data
    data.dataset = "coco"
    data.root = "data/coco"
    data.train_json = "annotations/instances_train2017.json"
    data.train_frames = "train2017"
    data.val_json = "annotations/instances_val2017.json"
    data.val_frames = "val2017"
    data.num_frames = 1
    data.train_crop = (384, 600)
    data.train_short_sides = tuple(range(480, 801, 32))
    data.train_max_size = 1333
    data.test_short_side = 800
    data.test_max_size = 1333
    data.pad_height = 1280
    data.pad_width = 1280
    train = config.train
    train.batch_size = 32
    train.num_steps = 1_108_800
    train.lr_decay_steps = (739_200,)
    train.loss_group_size = 4
    train.checkpoint_every = 5000
    train.init_from = "weights/r50_imagenet"  # `convert --from R-50.pkl` (torchvision R-50)
    train.init_exclude = ()
    inference = config.inference
    inference.window_frames = 1
    inference.window_stride = 1
    inference.multi_class = False  # one detection per query: its best class (DETR's rule)
    # Images of many sizes: padded to multiples of 128 (masked, as the training canvas is),
    # a few compiled programs instead of one per size.
    inference.pad_size_multiple = 128
    return config

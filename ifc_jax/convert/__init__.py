"""Pretrained weights import: official IFC / ImageNet ResNet checkpoints -> our variables.

  torch_pickle.py  torch-free reader of torch.save `.pth` (zip) and detectron2 `.pkl` files
  key_maps.py      official names (IFC, detectron2, torchvision, Caffe2) -> our variable paths
  convert.py       assemble, check names and shapes, write an orbax checkpoint

`python main.py convert --from FILE --to DIR [--config CFG]` is the command-line entry point.
"""

from ifc_jax.convert.convert import (
    Conversion,
    check_output,
    convert_checkpoint,
    write_checkpoint,
)

__all__ = ["Conversion", "check_output", "convert_checkpoint", "write_checkpoint"]

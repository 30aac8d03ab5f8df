r"""A tiny IFC for tests and CPU smoke runs: small ResNet, C=32, 2 heads, 10 queries.

Same architecture as the paper's model, every dimension shrunk so a forward pass on a few
64x96 frames takes milliseconds on a CPU. Trains on the built-in toy dataset.

  ifc-jax summary --config tiny
"""

import ml_collections

from . import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    model = config.model
    model.backbone.depth = 0
    model.backbone.width = 8
    model.backbone.stage_blocks = (1, 1, 1, 1)
    model.hidden_dim = 32
    model.num_heads = 2
    model.dim_feedforward = 64
    model.num_memory_tokens = 4
    model.num_queries = 10
    model.num_classes = 4  # the toy dataset's classes
    config.data.dataset = "toy"
    config.data.root = "data/toy"
    config.data.num_frames = 3
    config.data.train_short_sides = (64,)
    config.data.train_max_size = 128
    config.data.test_short_side = 64
    config.data.test_max_size = 128
    config.data.max_instances = 4
    config.data.pad_height = 64  # the toy's 96x144 frames at short side 64: 64x96, no padding
    config.data.pad_width = 96
    config.train.batch_size = 2
    config.summary.height = 64
    config.summary.width = 96
    config.summary.num_frames = 3
    return config

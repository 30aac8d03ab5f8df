r"""IFC, ResNet-50, YouTube-VIS 2019: the paper's recipe (SPEC §0, §7.3, §8).

Fine-tunes from COCO-pretrained IFC weights on 16 clips of T=5 frames per step, 6k steps.

  python main.py train --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50_ytvis19 \
      --config.train.init_from=weights/ifc_r50_coco   # from `main.py convert` (see below)
  python main.py evaluate --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50_ytvis19
  python main.py summary --config configs/ifc_r50_ytvis19.py

Pretrained weights (docs/pretrained_weights.md): the released R-50 IFC checkpoint, the COCO
R-50 IFC (with --config.model.num_classes=80) and ImageNet R-50.pkl convert with this config:
  python main.py convert --from model_final.pth --to weights/ifc_r50_ytvis19
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
    """The IFC model of the released R-50 YouTube-VIS checkpoint."""
    model = ml_collections.ConfigDict()
    # Backbone: detectron2 ResNet, torchvision weights (stride in the 3x3 conv), RGB input.
    model.backbone = ml_collections.ConfigDict()
    model.backbone.depth = 50  # 50 | 101 | 0 (0 = the small test ResNet below)
    model.backbone.width = 64  # res2 bottleneck width; 64 for the standard ResNets
    model.backbone.stage_blocks = ()  # only read when depth == 0
    model.backbone.stride_in_1x1 = False
    model.backbone.freeze_at = 2  # 2 = stem and res2 frozen (detectron2 default)
    model.input_format = "RGB"
    model.pixel_mean = (123.675, 116.280, 103.530)
    model.pixel_std = (58.395, 57.120, 57.375)
    # Transformer.
    model.hidden_dim = 256
    model.num_heads = 8
    model.dim_feedforward = 2048
    model.dropout = 0.1
    model.enc_layers = 3
    model.dec_layers = 3
    model.communication = "ifc"  # ifc | no_comm | full_thw | decompose_thw
    model.num_memory_tokens = 8
    model.num_queries = 100
    model.num_classes = 40
    model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params are always float32)
    return model


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = get_model_config()

    # Data (SPEC §7.3 training sampling/augmentation, §8.1 test resize).
    config.data = ml_collections.ConfigDict()
    # dataset: toy (generated on first use) | tfds (a youtube_vis TFDS build) | any other
    # name (ytvis19, ytvis21, ovis): YouTube-VIS JSON + frame folders under root
    # (data/README.md shows the layout and the overrides for YouTube-VIS 2021 and OVIS).
    config.data.dataset = "ytvis19"
    config.data.root = "data/ytvis_2019"
    config.data.train_json = "train.json"  # relative to root
    config.data.train_frames = "train/JPEGImages"  # the folder file_names are relative to
    config.data.val_json = "valid.json"
    config.data.val_frames = "valid/JPEGImages"
    config.data.num_frames = 5  # T
    config.data.sampling_frame_range = 20
    config.data.train_short_sides = (360, 480)
    config.data.train_max_size = 1333
    config.data.flip_prob = 0.5
    config.data.test_short_side = 360
    config.data.test_max_size = 1333
    config.data.max_instances = 25  # per clip, padded with invalid slots
    # Static padded size of every training clip (multiples of 32). 480 x 864 holds a 16:9
    # video at short side 480; a clip that would not fit is scaled down until it does.
    config.data.pad_height = 480
    config.data.pad_width = 864
    config.data.check_frame_files = True  # stat every frame file when the split is loaded
    config.data.num_parallel_calls = -1  # clips decoded concurrently; -1 = tf.data AUTOTUNE
    config.data.prefetch_batches = 2  # batches prepared ahead of the train step
    # dataset == "tfds" only: the TFDS build, its data_dir ("" = TFDS default) and the step
    # between annotated frames in it (0: every frame, the *_only_frames_with_labels builds;
    # 5: the full builds).
    config.data.tfds_name = "youtube_vis/only_frames_with_labels"
    config.data.tfds_data_dir = ""
    config.data.tfds_frame_stride = 0

    # Optimisation (SPEC §7.1, §7.3).
    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16  # clips per step, global
    config.train.num_steps = 6000
    config.train.lr = 1e-4
    config.train.lr_decay_steps = (4000,)
    config.train.lr_decay_factor = 0.1
    config.train.warmup_steps = 0  # linear lr warm-up steps (the paper's recipe has none)
    config.train.backbone_lr_mult = 0.1
    config.train.weight_decay = 1e-4
    config.train.grad_clip_norm = 0.01
    config.train.seed = 0
    config.train.no_object_weight = 0.1  # class weight of "no object" in the CE loss (eos_coef)
    config.train.matcher = "host"  # host (scipy, one callback per device) | device (optax)
    config.train.log_every = 20  # steps between log lines / TensorBoard scalars
    config.train.checkpoint_every = 500  # steps between checkpoints
    config.train.keep_checkpoints = 3
    config.train.init_from = ""  # a workdir or `main.py convert` output to start from
    config.train.init_exclude = ("class_embed",)  # params not taken from init_from

    # Multi-host: "off" (one process), "auto" (TPU pods, SLURM: jax finds the cluster) or
    # "explicit" (coordinator address, process count and this process's id below).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.mode = "off"
    config.distributed.coordinator_address = ""
    config.distributed.num_processes = 1
    config.distributed.process_id = 0

    # Inference (SPEC §8).
    config.inference = ml_collections.ConfigDict()
    config.inference.window_frames = 5
    config.inference.window_stride = 1
    config.inference.match_threshold = 0.05
    config.inference.class_threshold = 0.01
    config.inference.multi_class = True
    # Leave out tracks whose masks are empty in every frame (they can only be false
    # positives). The original writes them; False keeps its results files entry for entry.
    config.inference.drop_empty_tracks = False
    # Also leave out tracks covering fewer mask pixels than this over the whole video (0: off).
    config.inference.min_track_pixels = 0

    # Input size used by `summary` for per-frame GFLOPs.
    config.summary = ml_collections.ConfigDict()
    config.summary.height = 360
    config.summary.width = 640
    config.summary.num_frames = 5
    return config

r"""Every config key with its default: the one place defaults live. Recipes derive from it.

The defaults are the paper's IFC R-50 YouTube-VIS 2019 recipe (docs/training.md) and the
released model (docs/model.md); `configs/ifc_r50_ytvis19.py` is this file under its recipe
name. A recipe changes what differs and nothing else:

  from . import base                       # a recipe beside this file
  config = base.get_config(); config.train.lr = 3e-4

A config file outside this folder derives from a recipe by name:

  from ifc_jax.config import recipe
  config = recipe("ifc_r50_ytvis19")

Every command validates the whole config once when it is loaded (`ifc_jax.config.validate`):
a missing or unknown key, a value of the wrong type or out of range is one `error:` line
naming the key.
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
    """The IFC model of the released R-50 YouTube-VIS checkpoint (docs/model.md)."""
    model = ml_collections.ConfigDict()
    # Backbone: detectron2 ResNet, torchvision weights (stride in the 3x3 conv), RGB input.
    model.backbone = ml_collections.ConfigDict()
    model.backbone.depth = 50  # 50 | 101 | 0 (0 = a small ResNet of stage_blocks, for tests)
    model.backbone.width = 64  # res2 bottleneck width; 64 for the standard ResNets
    model.backbone.stage_blocks = (1, 1, 1, 1)  # bottlenecks in res2..res5, read when depth == 0
    model.backbone.stride_in_1x1 = False  # True for MSRA/Caffe2 weights
    model.backbone.freeze_at = 2  # 2 = stem and res2 frozen (detectron2 default); 0 = none
    model.input_format = "RGB"  # RGB | BGR: the channel order the backbone's weights expect
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
    model.num_memory_tokens = 8  # M, per frame (ifc only)
    model.num_queries = 100
    model.num_classes = 40
    model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params are always float32)
    # Attention kernel: auto (cuDNN flash attention for 16-bit inference on NVIDIA GPUs, XLA
    # elsewhere) | xla | cudnn. The IFC_JAX_ATTENTION environment variable overrides it.
    model.attention = "auto"
    # Convolution and max-pool kernels: auto (cpu on the XLA:CPU backend, xla elsewhere) | xla
    # (standard grouped/1x1 convolutions and reduce_window) | cpu (shifted multiply-adds, dots
    # and slices, several times faster on XLA:CPU). Same parameters either way.
    model.kernels = "auto"
    return model


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = get_model_config()

    # Data: training clip sampling and augmentation, test-time resize (docs/training.md,
    # docs/inference.md).
    config.data = ml_collections.ConfigDict()
    # dataset: toy (generated on first use; a root made with other toy parameters is
    # regenerated, unless it also holds files the generator did not write) | tfds (a
    # youtube_vis TFDS build) | any other name (ytvis19, ytvis21, ovis): YouTube-VIS JSON +
    # frame folders under root
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
    # A random crop before the resize, sides drawn in (low, high) (detectron2's RandomCrop
    # "absolute_range"; the COCO pre-training recipe uses (384, 600)); () = no crop.
    config.data.train_crop = ()
    config.data.flip_prob = 0.5
    config.data.test_short_side = 360
    config.data.test_max_size = 1333
    config.data.max_instances = 25  # per clip, padded with invalid slots
    # Static padded size of every training clip (multiples of 32). 480 x 864 holds a 16:9
    # video at short side 480; a clip that would not fit is scaled down until it does.
    config.data.pad_height = 480
    config.data.pad_width = 864
    config.data.check_frame_files = True  # stat every frame file when the split is loaded
    config.data.num_parallel_calls = -1  # clips built concurrently; -1 = one per core, <= 16
    config.data.prefetch_batches = 2  # batches prepared ahead of the train step
    # dataset == "tfds" only: the TFDS build, its data_dir ("" = TFDS default) and the step
    # between annotated frames in it (0: every frame, the *_only_frames_with_labels builds;
    # 5: the full builds).
    config.data.tfds_name = "youtube_vis/only_frames_with_labels"
    config.data.tfds_data_dir = ""
    config.data.tfds_frame_stride = 0
    # The folder of the official train.json / valid.json the build was made from (TFDS's
    # manual_dir): the export then keeps their video ids, frame file names and categories, so
    # evaluate's results.json can be submitted. "": ids 1..N in the build's order (a warning).
    config.data.tfds_manual_dir = ""
    # dataset == "toy" only: how the built-in toy dataset is generated (ifc_jax/data/toy.py).
    config.data.toy = ml_collections.ConfigDict()
    config.data.toy.seed = 0
    config.data.toy.num_train = 80  # videos
    config.data.toy.num_val = 16
    config.data.toy.height = 96  # frame size of the generated videos
    config.data.toy.width = 144
    config.data.toy.min_frames = 8  # video lengths are drawn from [min_frames, max_frames]
    config.data.toy.max_frames = 20
    config.data.toy.max_objects = 4
    config.data.toy.blur_prob = 0.15  # fraction of frames rendered with motion blur
    config.data.toy.mask_encoding = "rle"  # rle | uncompressed_rle | polygon | mixed
    config.data.toy.jpeg_quality = 90

    # Optimisation (docs/training.md).
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
    # Clips per loss group: consecutive clips of the global batch normalised together as the
    # authors' one GPU's batch is (their 8 GPUs x 2 clips): the CE mean per group, the mask
    # losses over the group's canvas (its largest frame). 0 = the whole global batch as one
    # group. Independent of the device count (docs/training.md#loss-groups).
    config.train.loss_group_size = 2
    config.train.log_every = 20  # steps between log lines / TensorBoard scalars
    # TensorBoard event files in the workdir (False: metrics go to the log and
    # WORKDIR/train_metrics.jsonl only).
    config.train.tensorboard = True
    config.train.checkpoint_every = 500  # steps between checkpoints
    config.train.keep_checkpoints = 3
    # Steps between evaluations of the val split (config.data, config.inference) during
    # training, into WORKDIR/eval/step_<N> and TensorBoard's eval/*; 0: none (docs/training.md).
    config.train.eval_every_steps = 0
    config.train.init_from = ""  # a workdir or `convert` output to start from
    config.train.init_exclude = ("class_embed",)  # params not taken from init_from

    # Multi-host: "off" (one process), "auto" (TPU pods, SLURM: jax finds the cluster) or
    # "explicit" (coordinator address, process count and this process's id below).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.mode = "off"
    config.distributed.coordinator_address = ""
    config.distributed.num_processes = 1
    config.distributed.process_id = 0

    # Inference (docs/inference.md).
    config.inference = ml_collections.ConfigDict()
    config.inference.window_frames = 5  # T of a window: 5 near-online, 36 offline
    config.inference.window_stride = 1  # S: frames between window starts
    config.inference.match_threshold = 0.05  # soft-IoU scores at or below it never match
    # Near-online windows run this many per device call (several strides of frames per
    # chunk); offline windows (S = T) run one per call.
    config.inference.windows_per_call = 8
    # 0: frames go to the model at their resized size (one compiled program per size; a video
    # dataset has few). N: padded at the bottom/right to a multiple of N, the padding masked
    # as in training, so image sets of many sizes (COCO) compile a few programs, not hundreds.
    config.inference.pad_size_multiple = 0
    # Host threads encoding the final masks as RLEs while the device works (0: inline; on a
    # CPU backend at most half the cores, as XLA's threads already use them all).
    config.inference.host_threads = 2
    # Where the final masks' RLE run boundaries are found (docs/inference.md#final-masks):
    # host (from the mask outline, in float64), device (every column on the accelerator, in
    # float32, the host only compresses), auto (device on GPU/TPU; on a CPU host, except
    # for noisy batches, which go to the device program).
    config.inference.mask_rle = "auto"
    # predict's pictures: frames drawn (with their PNGs and GIF frames) at once on this many
    # host threads; the files are the same for any count (0: one per available core, at most
    # 8; 1: on the calling thread).
    config.inference.overlay_threads = 0
    config.inference.class_threshold = 0.01  # results keep (track, class) above it
    config.inference.multi_class = True  # one result per (track, class) above the threshold
    # Leave out tracks whose masks are empty in every frame (they can only be false
    # positives). The original writes them; False keeps its results files entry for entry.
    config.inference.drop_empty_tracks = False
    # Also leave out tracks covering fewer mask pixels than this over the whole video (0: off).
    config.inference.min_track_pixels = 0
    # Per video and category, keep the best this many results by score (0: all). The official
    # metric scores at most 100 per video and category, so 100 bounds results.json without
    # changing AP or AR.
    config.inference.max_results_per_category = 100

    # Input size used by `summary` for per-frame GFLOPs.
    config.summary = ml_collections.ConfigDict()
    config.summary.height = 360
    config.summary.width = 640
    config.summary.num_frames = 5
    return config

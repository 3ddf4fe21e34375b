"""Frozen dataclass configs (presets: :mod:`blendseg.zoo`; their dict round trip, ``key=value`` overrides and YAML:
:mod:`blendseg.overrides`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union


@dataclass(frozen=True)
class BackboneConfig:
    """The bottom-up network: ResNet (detectron2 layout; the ``deform_*``, ``stride_in_1x1`` and width fields are
    ResNet's), DLA or DarkNet (``name``), of ``depth``. ``norm``: FrozenBN | BN | SyncBN | GN."""

    depth: int = 50
    norm: str = "FrozenBN"
    freeze_at: int = 2
    stride_in_1x1: bool = True
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    num_groups: int = 1
    width_per_group: int = 64
    deform_on_per_stage: tuple[bool, bool, bool, bool] = (False, False, False, False)
    deform_modulated: bool = False
    deform_interval: int = 1
    deform_bias: bool = False  # YOLACT++'s DCN conv2 has a bias; detectron2's has none
    blocks_per_stage: tuple[int, ...] = ()  # override the depth's blocks (e.g. the reference fixtures' (1, 1, 1, 1))
    # "" (random init) | "torchvision" / "torchvision:IMAGENET1K_V1" (enum weights, downloaded by torchvision)
    # | a local .pth / .safetensors file in torchvision or detectron2 layout; DLA: "imagenet" (dl.yf.io) or a file
    weights: str = ""
    name: str = "resnet"  # resnet | dla (depth 34) | darknet (depth 53): modeling/core/backbones.py


@dataclass(frozen=True)
class FPNConfig:
    """FPN on ``in_features`` (res3-res5; add res2 for a P2 level, the "+s/4" bottom input); ``top_levels`` extra
    levels P6/P7 from P5 (adelaidet.md §0.2). The FCOS head uses the levels of ``fcos.strides``."""

    out_channels: int = 256
    top_levels: int = 2
    in_features: tuple[str, ...] = ("res3", "res4", "res5")
    upsample: str = "nearest"  # top-down interpolation: nearest (detectron2) | bilinear (YOLACT)
    relu_outputs: bool = False  # YOLACT: ReLU after each output conv (P3-P5)
    relu_before_p7: bool = True  # detectron2 LastLevelP6P7: P7 = conv(ReLU(P6)); YOLACT: no ReLU


@dataclass(frozen=True)
class FCOSConfig:
    """FCOS head, targets, losses and inference (adelaidet.md §1.1 defaults)."""

    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    prior_prob: float = 0.01
    inference_th: float = 0.05
    pre_nms_topk: int = 1000
    nms_th: float = 0.6
    post_nms_topk: int = 100
    norm: str = "GN"
    use_scale: bool = True
    thresh_with_ctr: bool = False
    loss_alpha: float = 0.25
    loss_gamma: float = 2.0
    loss_normalizer_cls: str = "fg"
    loss_weight_cls: float = 1.0
    sizes_of_interest: tuple[int, ...] = (64, 128, 256, 512)
    num_cls_convs: int = 4
    num_box_convs: int = 4
    num_share_convs: int = 0
    center_sample: bool = True
    pos_radius: float = 1.5
    loc_loss_type: str = "giou"
    box_quality: str = "ctrness"
    use_deformable: bool = False
    deform_v1: bool = False  # MEInst's TYPE_DEFORMABLE "DCNv1" (no modulation, no bias)


@dataclass(frozen=True)
class FCOSDetectorConfig:
    """Backbone + FPN + FCOS: the box detector every FCOS-based method extends."""

    classes_field: ClassVar[str] = "fcos"  # the sub-config holding num_classes
    arch: str = "fcos"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    # Pixel statistics in the order of ``input_format`` (MSRA caffe weights: BGR, std 1).
    input_format: str = "BGR"
    pixel_mean: tuple[float, float, float] = (103.530, 116.280, 123.675)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_divisibility: int = 32


@dataclass(frozen=True)
class BlendMaskHeadConfig:
    """Bottom module, attentions, blender and losses of BlendMask (adelaidet.md §2.1 defaults)."""

    num_bases: int = 4  # K
    attn_size: int = 14  # M
    bottom_resolution: int = 56  # R
    bases_stride: int = 4
    top_interp: str = "bilinear"  # bilinear | nearest
    bottom_sampling: str = "bilinear"  # bilinear (RoIAlign, reference) | nearest (RoIPool, Table 6)
    blender: str = "blend"  # blend | assembler (FCIS analogue, K = M*M, no attentions); attn_size=1: weighted-sum
    bottom_module: str = "protonet"  # protonet (reference) | deeplab (DeepLabV3+ decoder, the paper's ablations)
    # inputs by name, finest first: p3/p4/p5 (reference), res3/res5 (the paper's "C3, C5"), p3/p5, p2/p5 ("+s/4";
    # needs res2 in fpn.in_features); bases_stride must equal what they give (ProtoNet: first stride / 2)
    bottom_in_features: tuple[str, ...] = ("p3", "p4", "p5")
    aspp_rates: tuple[int, ...] = (6, 12, 18)  # deeplab only
    basis_num_convs: int = 3  # protonet only
    basis_convs_dim: int = 128
    basis_norm: str = "SyncBN"  # BN on one process
    basis_loss_on: bool = True  # auxiliary "thing" semantic loss on P3
    basis_loss_weight: float = 0.3
    instance_loss_weight: float = 1.0
    # reference quirk (default): the mask made for the unclipped box is pasted into the clipped box;
    # False pastes it into the unclipped box (the geometrically right place)
    paste_in_clipped_box: bool = True


@dataclass(frozen=True)
class PanopticHeadConfig:
    """Panoptic BlendMask (adelaidet.md §2.6): detectron2's SemSegFPNHead on ``in_features`` and the combine step
    (MODEL.SEM_SEG_HEAD and MODEL.PANOPTIC_FPN.COMBINE; values of configs/BlendMask/Panoptic/Base-Panoptic.yaml).

    ``enabled`` is the reference's PANOPTIC_FPN.COMBINE.ENABLED, which is what builds the semantic branch. The
    semantic classes are 0 = every thing class merged, 1..S = the stuff classes (ascending category id), 255 void.
    The FPN must produce ``in_features`` (P2 needs res2 in ``fpn.in_features``, as Base-Panoptic).
    """

    enabled: bool = False
    num_classes: int = 54  # S + 1 (COCO: 53 stuff classes + "things"); set from the dataset
    in_features: tuple[str, ...] = ("p2", "p3", "p4", "p5")
    convs_dim: int = 128
    common_stride: int = 4
    norm: str = "GN"
    ignore_value: int = 255
    loss_weight: float = 0.5  # Base-Panoptic (detectron2 default 1.0)
    instances_confidence_thresh: float = 0.45  # AdelaiDet HEAD (an earlier commit and the paper: 0.2)
    overlap_thresh: float = 0.4
    stuff_area_limit: int = 4096  # pixels of the output image


@dataclass(frozen=True)
class BlendMaskConfig(FCOSDetectorConfig):
    """FCOS + BlendMask. BlendMask's base config sets ``fcos.use_scale=False`` and ``thresh_with_ctr=True``."""

    arch: str = "blendmask"
    fcos: FCOSConfig = field(default_factory=lambda: FCOSConfig(use_scale=False, thresh_with_ctr=True))
    blendmask: BlendMaskHeadConfig = field(default_factory=BlendMaskHeadConfig)
    panoptic: PanopticHeadConfig = field(default_factory=PanopticHeadConfig)


@dataclass(frozen=True)
class MEInstHeadConfig:
    """MEInst's mask branch and encoding (adelaidet.md §3 defaults; the paper's Tables 2-5 as options)."""

    dim_mask: int = 60  # D (20 / 40 / 80 for Table 2)
    mask_size: int = 28
    num_mask_convs: int = 4  # the parallel mask tower on the shared feature
    # pca: regress the D-d PCA code (reference); implicit: D-d output decoded by the frozen PCA, pixel BCE (the
    # reference's LOSS_ON_MASK, Table 3 "-"); none: 784-d output, pixel BCE (Table 3 "w/o")
    encoding: str = "pca"
    mask_loss: str = "mse"  # mse (l2) | l1 | smooth_l1 | cosine (Table 4; pca encoding)
    mask_loss_weight: float = 1.0
    whiten: bool = True
    sigmoid: bool = True
    mask_pred: str = "conv"  # conv (3x3) | large_kernel (1xk + kx1 and kx1 + 1xk, Table 5 "LK")
    large_kernel_size: int = 9
    # a fitted encoding to load (AdelaiDet .npz or blendseg .pt); empty: fitted on the training data at the start
    encoding_file: str = ""
    paste_in_clipped_box: bool = True  # reference quirk, as BlendMask


@dataclass(frozen=True)
class MEInstConfig(FCOSDetectorConfig):
    """FCOS + MEInst's mask regression branch (FCOS defaults: GN towers, scales, no THRESH_WITH_CTR)."""

    arch: str = "meinst"
    meinst: MEInstHeadConfig = field(default_factory=MEInstHeadConfig)


@dataclass(frozen=True)
class YolactHeadConfig:
    """YOLACT / YOLACT++ head, protonet, losses and inference (yolact.md §1-3; yolact_base defaults)."""

    num_classes: int = 80  # foreground classes; the softmax has one more (background 0)
    scales: tuple[tuple[float, ...], ...] = ((24,), (48,), (96,), (192,), (384,))  # pixels per level P3..P7
    aspect_ratios: tuple[float, ...] = (1.0, 0.5, 2.0)  # w / h
    square_anchors: bool = True  # YOLACT v1 bug kept for its weights (h = w); False in YOLACT++
    num_prototypes: int = 32  # k
    proto_dim: int = 256
    proto_num_convs: int = 3  # 3x3 convs before the x2 upsampling (then one more and the 1x1 to k)
    semantic_loss: bool = True
    semantic_alpha: float = 1.0
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    crowd_iof: float = 0.7
    ohem_negpos_ratio: int = 3
    bbox_alpha: float = 1.5
    conf_alpha: float = 1.0
    mask_alpha: float = 6.125
    masks_to_train: int = 100
    maskiou: bool = False  # YOLACT++ fast mask re-scoring
    maskiou_alpha: float = 25.0
    discard_mask_area: int = 25  # instances with <= this many GT pixels at proto resolution skip the mask-IoU loss
    nms: str = "fast"  # fast (official) | standard (per-class greedy, torchvision)
    nms_conf_thresh: float = 0.05
    nms_top_k: int = 200
    nms_thresh: float = 0.5
    max_num_detections: int = 100
    second_threshold: bool = False  # official Fast NMS keeps per-class scores below nms_conf_thresh
    score_threshold: float = 0.0  # postprocess threshold (eval: 0)
    crop: bool = True
    # robustness fixes the official code lacks, off by default for parity (yolact.md §7.6): drop ground truths
    # narrower / shorter than this many input pixels (the official 4/550 rule works in the wrong units), and clamp
    # the decoded log-size (exp is unclamped officially; mmdet's wh_ratio_clip bound log(1000/16))
    discard_box_px: float = 0.0
    clamp_decode: bool = False


@dataclass(frozen=True)
class YolactConfig:
    """Backbone (torchvision-style ResNet, BN trained) + YOLACT FPN + YOLACT head. Inputs are squashed to
    ``data.square_size`` (550) by default; relative coordinates refer to the network input size."""

    classes_field: ClassVar[str] = "yolact"
    arch: str = "yolact"
    backbone: BackboneConfig = field(
        default_factory=lambda: BackboneConfig(depth=101, norm="BN", freeze_at=0, stride_in_1x1=False)
    )
    fpn: FPNConfig = field(
        default_factory=lambda: FPNConfig(upsample="bilinear", relu_outputs=True, relu_before_p7=False)
    )
    yolact: YolactHeadConfig = field(default_factory=YolactHeadConfig)
    input_format: str = "RGB"
    pixel_mean: tuple[float, float, float] = (123.68, 116.78, 103.94)
    pixel_std: tuple[float, float, float] = (58.40, 57.12, 57.38)
    size_divisibility: int = 1  # the official input (550) is not a multiple of 32; batches pad to their max size


@dataclass(frozen=True)
class DataConfig:
    """Input pipeline: resize shortest edge, flip, loader."""

    min_size_train: tuple[int, ...] = (800,)
    min_size_train_sampling: str = "choice"  # choice | range
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    hflip_train: bool = True
    filter_empty: bool = True
    # class imbalance: images of rare classes repeated (detectron2's RepeatFactorTrainingSampler, LVIS): an image's
    # repeat factor is max over its classes of max(1, sqrt(t / f)), f the fraction of training images with the
    # class; 0 = off (every image once an epoch). LVIS uses 0.001.
    repeat_threshold: float = 0.0
    aspect_ratio_grouping: bool = False  # detectron2's batching by orientation (True in the reference presets)
    num_workers: int = 2
    with_masks: bool = False
    # training targets carry "sem_seg": the thing map of every annotation (crowd included, JSON order, later wins),
    # resized and flipped with the image, as the reference's prepared .npz files (BlendMask's semantic loss)
    with_sem_seg: bool = False
    # > 0: squash every image to square_size x square_size (YOLACT; no aspect ratio, no padding); the shortest-edge
    # sizes above are then unused
    square_size: int = 0
    # training targets carry "panoptic_sem" (H, W) uint8: 0 things, 1..S stuff, 255 void, made from the split's COCO
    # panoptic PNGs (panoptic BlendMask's semantic branch); evaluation adds PQ on splits that name panoptic files
    with_panoptic: bool = False
    # "polygon": polygon instances' mask targets are rasterised inside their boxes (detectron2's default
    # MASK_FORMAT); "bitmask": every target cropped from the bitmap with RoIAlign (detectron2's "bitmask")
    mask_format: str = "bitmask"
    with_crowd_boxes: bool = False  # training targets carry "crowd_boxes" (YOLACT: crowd IoF -> neutral priors)
    augment: str = "flip"  # flip (detectron2) | ssd (YOLACT: photometric, expand, random crop, mirror)
    # AdelaiDet's INPUT.CROP (RandomCropWithInstance), before the resize: "" off, or detectron2's RandomCrop type
    # (relative_range | relative | absolute | absolute_range) with crop_size; the window holds the centre of a
    # random annotation's box; crop_instance False: it grows until it cuts no box (data/crop.py)
    crop_type: str = ""
    crop_size: tuple[float, float] = (0.9, 0.9)  # INPUT.CROP.SIZE: (h, w) fractions or pixels, as crop_type says
    crop_instance: bool = True  # INPUT.CROP.CROP_INSTANCE: False grows the window until it cuts no instance
    # > 0: train on tiles of large images, for prediction with --slice of this size: each image larger than
    # tile x tile is cut, before the resize, to a tile x tile window holding a random annotation's centre, of 16
    # drawn the one that cuts the fewest instances (those cut keep their part inside, boxes from their masks).
    # Images are then read at full size (no decode_reduced); evaluation during training is sliced the same way
    tile: int = 0
    # training JPEGs at least twice the largest min_size_train on their short side are decoded at 1/2, 1/4 or 1/8
    # of their size (libjpeg's DCT scaling), never below it: large photos train at the speed of small ones. Not
    # with square_size or the SSD augmentation (its crops zoom in); images smaller than that are read as they are
    decode_reduced: bool = True
    # an unreadable training image (truncated, corrupt, size unlike its JSON) is skipped with a warning and replaced
    # by the next readable one (listed in metrics.json); strict: stop with the error instead
    strict: bool = False


@dataclass(frozen=True)
class SolverConfig:
    """Optimiser and schedule (detectron2 WarmupMultiStepLR semantics)."""

    optimizer: str = "sgd"  # sgd | adamw
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    # the step's batch over all processes, as the reference configs' IMS_PER_BATCH: each of P processes takes
    # ims_per_batch / P images (a multiple of P is needed)
    ims_per_batch: int = 16
    # > 0: each process's batch instead (the step's batch is then ims_per_process x P)
    ims_per_process: int = 0
    # gradient accumulation: each process's share of the step goes through the model in this many micro-batches
    # (it must divide the share), their gradients added before one optimiser step; for a share that does not fit
    # the GPU's memory (the estimate printed at the start on CUDA). The loss normalisers (FCOS's positives, YOLACT's)
    # are then per micro-batch, not per step
    accumulate: int = 1
    # the step batch base_lr and the iteration schedule are meant for (the presets set their own ims_per_batch;
    # 0 = off): another batch scales base_lr (linear for SGD, square root for AdamW) and, without epochs, max_iter,
    # steps, warmup and the periods inversely (detectron2's REFERENCE_WORLD_SIZE, counted in images)
    reference_batch: int = 0
    # solver keys that scaling to the batch leaves as they are: those given as overrides (apply_overrides records
    # them; the value typed is the value run)
    as_given: tuple[str, ...] = ()
    max_iter: int = 90000
    # > 0 overrides max_iter: epochs x loader length, and steps and warmup keep their fractions of max_iter
    epochs: int = 0
    steps: tuple[int, ...] = (60000, 80000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    warmup_method: str = "linear"  # linear | constant
    clip_grad_norm: float = 0.0
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    checkpoint_period: int = 5000
    eval_period: int = 0
    # early stopping: stop after this many evaluations (every eval_period) without a better selection metric (PQ
    # for panoptic evaluations, else mask AP, else box AP; the one best.pt keeps); 0 = off
    patience: int = 0
    # mixed precision (autocast); on a CPU without avx512_bf16 / amx_bf16 it trains in fp32 with a warning (emulated
    # bf16 is slower than fp32)
    amp: bool = False
    # autocast precision with amp: auto = fp16 on CUDA (with a GradScaler, as detectron2's AMPTrainer), bf16 on CPU
    amp_dtype: str = "auto"  # auto | fp16 | bf16
    # training in channels-last (NHWC) memory format: the model's weights and the input batch; oneDNN's NHWC
    # convolutions and batch norm are faster on CPUs (the tiny presets turn it on); the same fp32 arithmetic in
    # another order
    channels_last: bool = False
    skip_nonfinite: int = 0  # > 0: skip up to this many steps whose loss is NaN / inf (a warning each), then stop


@dataclass(frozen=True)
class LogConfig:
    """What a run writes besides its run folder's files (engine/runlog.py)."""

    # TensorBoard event files in the run folder: every logged loss term, the lr, the evaluations' AP / PQ, the
    # train_batch and val_pred images (pip install 'blendseg[tensorboard]'; tensorboard --logdir runs)
    tensorboard: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs: model, data pipeline, solver."""

    model: Union[FCOSDetectorConfig, BlendMaskConfig, MEInstConfig, YolactConfig] = field(  # noqa: UP007
        default_factory=FCOSDetectorConfig
    )
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # torch.use_deterministic_algorithms, one CPU compute thread, no cuDNN autotuning, blendseg's atomics-free CUDA
    # kernels: bitwise-repeatable runs on CUDA; slower. (CPU runs with several threads repeat without it.)
    deterministic: bool = False
    # how long a collective waits for the other processes: rank 0 alone evaluates and writes the report while the
    # others wait in the next collective (NCCL's default of 10 minutes kills a job with a large val set)
    dist_timeout_minutes: float = 60.0


class ConfigError(ValueError):
    """A config key or value that does not fit the dataclass."""

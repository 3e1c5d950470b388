"""cadet_d2's config keys: ``add_cadet_config(cfg)`` declares every one, with its default.

Use it like any Detectron2 project config::

    cfg = get_cfg()
    add_cadet_config(cfg)
    cfg.merge_from_file("configs/demo.yaml")

Every key outside Detectron2's own set lives under ``CADET`` (plus ``SOLVER.ACCUM_STEPS``).
"""
from __future__ import annotations

import signal

from detectron2.config import CfgNode as CN

from .layout import (DEFAULT_GREY_TOLERANCE, DEFAULT_STOP_SIGNALS, LATE_MERGE_RULES, MIT_ATTENTION_KINDS, MIT_SIZES,
                     MISS_RATE_SETTINGS, MODALITY_CHANNELS, ON_ERROR_POLICIES, SIZE_MISMATCH_POLICIES, TEST_MODES,
                     TRAIN_MODES, UNLABELED_POLICIES, file_channel_indices, group_channels, group_modalities,
                     modality_slices)


def add_cadet_config(cfg: CN) -> CN:
    """Add the ``CADET`` keys (and Detectron2 defaults that suit 5-channel MiT detectors)."""
    _C = cfg
    _C.CADET = CN()

    # ---- data ---------------------------------------------------------------------------
    _C.CADET.DATA = CN()
    # Name prefix of the registered datasets: <NAME>_train, <NAME>_test, <NAME>_<test set>.
    _C.CADET.DATA.NAME = "synth"
    # Data root (docs/data.md): a set is a folder with images/*.npy or pairs.csv (paired image
    # files), labels/*.txt (YOLO) and optional ignore/*.txt; optional ROOT/classes.txt.
    _C.CADET.DATA.ROOT = "datasets/synth"
    # Training set: "" = <NAME>_train and <NAME>_test are a seeded split of ROOT's own set;
    # a folder name (e.g. "train") = <NAME>_train is ROOT/<that folder>, and no <NAME>_test.
    _C.CADET.DATA.TRAIN_SET = ""
    # Test sets: sub-folders of ROOT (any layout above), registered as <NAME>_<folder>.
    _C.CADET.DATA.TEST_SETS = ["daytest1", "nighttest1"]
    # Folders per modality instead of an index, relative to ROOT, "{set}" replaced by the set
    # name (TRAIN_SET or a TEST_SETS entry), e.g. rgb "visible/{set}", thermal "infrared/{set}":
    # files paired by stem. labels/ignore default to "{set}/labels" and "{set}/ignore".
    # All modality folders "" = off (sets are read from pairs.csv or images/).
    _C.CADET.DATA.FOLDERS = CN({"rgb": "", "thermal": "", "event": "", "labels": "", "ignore": ""})
    # Fraction of ROOT's images held out as <NAME>_test, and the seed of that split.
    _C.CADET.DATA.TEST_FRACTION = 0.2
    _C.CADET.DATA.SPLIT_SEED = 42
    # Class names; empty = read ROOT/classes.txt, or one class "object" when absent.
    _C.CADET.DATA.CLASSES = []
    # Images with no label file: "skip" (dropped, counted) or "negative" (kept, no boxes).
    _C.CADET.DATA.UNLABELED = "skip"
    # A bad image header or label line: "raise" (stop, naming file and line) or "skip"
    # (drop that image, count it and log the reason). tools/predict.py too: a bad input file or
    # pair stops it, or with "skip" gets no detections and is listed in the log and summary.
    _C.CADET.DATA.ON_ERROR = "raise"
    # Training only: samples that fail to load are skipped and logged up to this many; one
    # more stops the run with the list. 0 = the first failure stops the run.
    # (Counted per rank; needs DETERMINISTIC_STREAM. Evaluation never skips.)
    _C.CADET.DATA.MAX_LOAD_FAILURES = 0
    # Training stream for exact resume (cadet_d2/data/stream.py, docs/reliability.md): sample k
    # and its augmentation are a pure function of (SEED, k), and --resume continues the stream.
    # Needs DATALOADER.SAMPLER_TRAIN TrainingSampler. False = Detectron2's own train loader.
    _C.CADET.DATA.DETERMINISTIC_STREAM = True

    # ---- input ---------------------------------------------------------------------------
    _C.CADET.INPUT = CN()
    # Modalities fed to the model, in this order (any non-empty subset of rgb/thermal/event).
    _C.CADET.INPUT.MODALITIES = ["rgb", "thermal", "event"]
    # Channels each image file must have (H x W x FILE_CHANNELS, uint8).
    _C.CADET.INPUT.FILE_CHANNELS = 5
    # Which file channels hold each modality.
    _C.CADET.INPUT.LAYOUT = CN({k: list(v) for k, v in MODALITY_CHANNELS.items()})
    # Channels E of the event input: 1 = one grey event image (the default layout); E > 1 = a
    # multi-channel representation (per-polarity counts 2, voxel grid of B bins B; docs/events.md),
    # paired files as (H, W, E) .npy event frames. LAYOUT.event must then name E file channels
    # (and MODEL.PIXEL_MEAN/STD hold one value per channel); the event stream takes E channels.
    _C.CADET.INPUT.EVENT_CHANNELS = 1
    # Paired image files: 16-bit thermal/event images are scaled to 0-255 between these two
    # percentiles of each image (8-bit images are kept as they are) ...
    _C.CADET.INPUT.THERMAL_PERCENTILES = [1.0, 99.0]
    # ... or, when set, between this fixed [low, high] range of raw values, e.g. [7000, 9000].
    _C.CADET.INPUT.THERMAL_RANGE = []
    # Paired thermal/event files with 3 channels that differ by at most this many grey levels
    # are read as grey (their luma, cadet_d2/data/images.py); more is an error naming what the
    # file most likely is. 3: KAIST's PNG lwir files differ by up to 2 (JPEG decoding before
    # they were saved), one level of margin.
    _C.CADET.INPUT.GREY_TOLERANCE = DEFAULT_GREY_TOLERANCE
    # "" or a palette of cadet_d2/data/palettes.py (e.g. "opencv.jet", "matplotlib.inferno"):
    # colour thermal files are mapped back to their scalar through it (nearest colour); a file
    # it does not fit (mean residual above palettes.MAX_RESIDUAL) is an error.
    _C.CADET.INPUT.THERMAL_PALETTE = ""
    # Paired image files of another size than the RGB image: "resize" (to the RGB size,
    # bilinear) or "error" (stop at registration, naming the file).
    _C.CADET.INPUT.SIZE_MISMATCH = "resize"
    # Decode JPEGs at 1/2, 1/4 or 1/8 size when the mapper's resize target (largest
    # INPUT.MIN_SIZE_TRAIN, or MIN_SIZE_TEST) is no larger; boxes are scaled exactly.
    _C.CADET.INPUT.REDUCED_DECODE = True
    # Photometric jitter, training only, applied to the RGB channels only (0 = off):
    # brightness/contrast/saturation factors drawn from [1 - x, 1 + x].
    _C.CADET.INPUT.BRIGHTNESS = 0.0
    _C.CADET.INPUT.CONTRAST = 0.0
    _C.CADET.INPUT.SATURATION = 0.0
    # Modality dropout (training; cadet_d2/data/corrupt.py): with probability PROB a sample
    # loses one of GROUPS (drawn uniformly; a group is modalities joined by "+"), its channels
    # set to 0 ("zero") or to uniform noise in [0, 255] ("noise"). PROB 0 = off.
    _C.CADET.INPUT.MODALITY_DROPOUT = CN()
    _C.CADET.INPUT.MODALITY_DROPOUT.PROB = 0.0
    _C.CADET.INPUT.MODALITY_DROPOUT.GROUPS = ["rgb", "thermal+event"]
    _C.CADET.INPUT.MODALITY_DROPOUT.MODE = "zero"

    # ---- backbone ------------------------------------------------------------------------
    _C.CADET.BACKBONE = CN()
    # MiT size: b0, b1, b2, b4 or b5 (SegFormer's Mix Transformer encoders).
    _C.CADET.BACKBONE.SIZE = "b0"
    # Backbone outputs given to the FPN (strides 4, 8, 16, 32).
    _C.CADET.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Stochastic depth rate of the MiT blocks, in [0, 1).
    _C.CADET.BACKBONE.DROP_PATH_RATE = 0.1
    # Local file of ImageNet MiT weights (SegFormer mit_bX.pth or Hugging Face SegformerModel
    # format); empty = random initialisation. Never downloaded.
    _C.CADET.BACKBONE.PRETRAINED = ""
    # MiT stages (1-4) whose blocks use activation checkpointing in training.
    _C.CADET.BACKBONE.CHECKPOINT_STAGES = []
    # Compile the bottom-up backbone (MiT streams + fusion) with torch.compile (nn.Module.compile:
    # checkpoint keys unchanged). Needs a C++ compiler on CPU; the first iterations are slow.
    # The fusion modules' training statistics (fusion/stage*/...) are not logged when compiled.
    _C.CADET.BACKBONE.COMPILE = False
    # MiT stage outputs in channels-last memory order (the tokens' own order: no copy to NCHW),
    # so the convolutions after them (patch embeddings, fusion convs, FPN) run without layout
    # reorders (modeling/backbone/mit.py). Same values; speed in docs/benchmarks.md.
    _C.CADET.BACKBONE.CHANNELS_LAST = False
    # MiT's attention kernel: "fused" (scaled_dot_product_attention), "math" (q k^T, softmax, @ v:
    # matrix products that run on AMX in bf16; faster on CPU, docs/benchmarks.md) or "auto"
    # (math when MODEL.DEVICE is cpu, fused otherwise). Same parameters; values equal to rounding.
    _C.CADET.BACKBONE.ATTENTION = "auto"

    # ---- fusion (dual-stream backbone) ------------------------------------------------------
    _C.CADET.FUSION = CN()
    # Fusion module used at STAGES (a FUSION_REGISTRY name).
    _C.CADET.FUSION.NAME = "frm_ffm"
    # Stages (1-4, each once) that use NAME; the other stages use DEFAULT.
    _C.CADET.FUSION.STAGES = [1, 2, 3, 4]
    # Fusion module of the stages not in STAGES (the CMX baseline unless set).
    _C.CADET.FUSION.DEFAULT = "frm_ffm"
    # Python modules or .py files imported before building, so that their
    # @FUSION_REGISTRY.register() modules can be named in NAME / DEFAULT.
    _C.CADET.FUSION.IMPORTS = []

    _C.CADET.FUSION.FRM_FFM = CN()
    # Reduction ratio r of FRM's channel and spatial MLPs (an integer >= 1; 1 in CMX).
    _C.CADET.FUSION.FRM_FFM.REDUCTION = 1
    # Weights of the channel-wise and spatial-wise rectification.
    _C.CADET.FUSION.FRM_FFM.LAMBDA_C = 0.5
    _C.CADET.FUSION.FRM_FFM.LAMBDA_S = 0.5
    # Rectified features continue in the two streams (CMX); False = streams stay untouched.
    _C.CADET.FUSION.FRM_FFM.FEEDBACK = True
    # FFM context softmax without denormal numbers in fp32 (probabilities below 1e-30 set to 0,
    # fusion/frm_ffm.py): MKL's fp32 matrix products run up to 800x slower on denormals. False =
    # plain softmax (to re-measure the difference).
    _C.CADET.FUSION.FRM_FFM.FLUSH_DENORMALS = True

    _C.CADET.FUSION.CSSA = CN()
    # Channel switching threshold tau in [0, 1]: channels with ECA weight < tau are switched.
    _C.CADET.FUSION.CSSA.THRESHOLD = 0.5
    # Also rescale the kept channels by their ECA weight (plain ECA does; CSSA's default: no).
    _C.CADET.FUSION.CSSA.RESCALE = False
    # Component ablation (cssa and its variants; docs/fusion.md). ECA False: channel weights by
    # the fixed rule sigmoid(GAP(x)) instead of ECA's learned 1-D conv (no parameters).
    _C.CADET.FUSION.CSSA.ECA = True
    # SWITCH False: no channel switching, R_s = R and X_s = X (cssa only; the variants refuse it).
    _C.CADET.FUSION.CSSA.SWITCH = True
    # SPATIAL False: no spatial attention, fused = (R_s + X_s) / 2.
    _C.CADET.FUSION.CSSA.SPATIAL = True
    # cssa_learnable: temperature T > 0 of the sigmoid surrogate sigmoid((tau - w) / T) through
    # which the learned threshold gets its gradient (THRESHOLD is its initial value).
    _C.CADET.FUSION.CSSA.TEMPERATURE = 0.05
    # cssa_learnable: learning rate of the threshold logit = SOLVER.BASE_LR x this (its own param
    # group). Adam/AdamW move a parameter by about its LR per step, so at BASE_LR 4e-4 the
    # threshold can move by at most ~0.02 in 200 iterations; 100 lets it move.
    _C.CADET.FUSION.CSSA.THRESHOLD_LR_MULT = 1.0

    _C.CADET.FUSION.HYBRID = CN()
    # NAME "hybrid": stages in EARLY_STAGES (1-4, each once) use the module EARLY, the other stages LATE.
    _C.CADET.FUSION.HYBRID.EARLY_STAGES = [1, 2]
    _C.CADET.FUSION.HYBRID.EARLY = "cssa"
    _C.CADET.FUSION.HYBRID.LATE = "gaff"

    _C.CADET.FUSION.GAFF = CN()
    # SE reduction ratio r (an integer >= 1; 4 or 8 in the study).
    _C.CADET.FUSION.GAFF.SE_REDUCTION = 4
    # One inter-modality guidance conv shared by both directions (True) or one each (False).
    _C.CADET.FUSION.GAFF.INTER_SHARED = False
    # Kernel size of the guidance conv (1 or 3).
    _C.CADET.FUSION.GAFF.INTER_KERNEL = 1
    # Merge: conv 2C->C (False) or conv 2C->C, ReLU, conv C->C (True).
    _C.CADET.FUSION.GAFF.MERGE_BOTTLENECK = False

    # ---- late fusion (MODEL.META_ARCHITECTURE LateFusionRCNN; cadet_d2/modeling/late_fusion.py) ----
    _C.CADET.LATE = CN()
    # One full detector (single-stream MiT, FPN, RPN, RoI heads) per entry; an entry is a group of
    # modalities joined by "+". Every modality of CADET.INPUT.MODALITIES is in exactly one entry.
    _C.CADET.LATE.BRANCHES = ["rgb", "thermal+event"]
    # How the branches' detections are merged per image: "proben" (Bayes' rule on matched
    # detections, score-weighted boxes) or "nms" (class-wise NMS over the union).
    _C.CADET.LATE.MERGE = "proben"
    # IoU at or above which two detections of the same class are the same object ("proben": a
    # match across branches; "nms": suppression).
    _C.CADET.LATE.IOU_THRESH = 0.5
    # Per-branch checkpoints (one path per BRANCHES entry, "" = none) loaded into each branch when
    # the model is built: a late-fusion model assembled from single-modality detectors. [] = none.
    # MODEL.WEIGHTS, when set, is loaded after these and replaces them.
    _C.CADET.LATE.WEIGHTS = []

    # ---- RoI heads (MODEL.ROI_HEADS.NAME CadetROIHeads; cadet_d2/modeling/roi_heads.py) ----------
    _C.CADET.ROI = CN()
    # Box pooler RoIAlign with a multi-threaded backward (one sparse product, modeling/roi_align.py)
    # instead of torchvision's single-threaded CPU loop; same forward output and gradients (to float
    # rounding). CPU training only; inference, export and CUDA call torchvision. False = torchvision's.
    _C.CADET.ROI.FAST_ALIGN_BACKWARD = True

    # ---- initialisation -------------------------------------------------------------------
    _C.CADET.INIT = CN()
    # Single-stream RGB checkpoint of this project (same MiT size, classes and FPN/heads) that a
    # dual-stream model starts from when MODEL.WEIGHTS is empty (cadet_d2/modeling/init_from_rgb.py):
    # RGB stream, FPN, RPN and RoI heads copied, the auxiliary stream from the RGB stream with
    # its first patch embedding adapted. Empty = off.
    _C.CADET.INIT.RGB_DETECTOR = ""
    # With RGB_DETECTOR: the tensors copied into their own place (RGB stream, FPN, RPN, RoI heads;
    # not the auxiliary stream) keep the detector's values for the first N iterations, so that
    # only the auxiliary stream and the fusion modules train at first (engine/freeze.py). 0 = off.
    _C.CADET.INIT.FREEZE_ITERS = 0

    # ---- solver ---------------------------------------------------------------------------
    _C.CADET.SOLVER = CN()
    # "SGD" (Detectron2's default, momentum SOLVER.MOMENTUM) or "ADAMW".
    _C.CADET.SOLVER.OPTIMIZER = "SGD"
    # Autocast dtype when SOLVER.AMP.ENABLED: "float16" (CUDA only, with a grad scaler) or
    # "bfloat16" (CUDA with bf16 support, or CPU; no grad scaler).
    _C.CADET.SOLVER.AMP_DTYPE = "float16"
    # Whether bf16 autocast pays on this CPU, for the advice logged at the start of CPU training
    # (engine/bf16_check.py): "cached" (measure the configured model's step once per machine and
    # cache it in ~/.cache/cadet_d2), "measure" (measure again), "off" (no check, no advice).
    _C.CADET.SOLVER.BF16_CHECK = "cached"
    # Gradient accumulation: each optimizer step (one iteration: MAX_ITER, STEPS, WARMUP_ITERS,
    # CHECKPOINT_PERIOD and EVAL_PERIOD count these) sums the gradients of ACCUM_STEPS micro-batches
    # of SOLVER.IMS_PER_BATCH images each (IMS_PER_BATCH is per micro-batch, over all processes):
    # the effective batch is IMS_PER_BATCH * ACCUM_STEPS. 1 = no accumulation.
    _C.SOLVER.ACCUM_STEPS = 1

    # ---- checkpoints and stop signals ----------------------------------------------------
    _C.CADET.CHECKPOINT = CN()
    # Keep only the newest N periodic checkpoints (model_<iteration>.pth; model_final.pth is always
    # kept), so that a long run's disk use is bounded; 0 = keep all.
    _C.CADET.CHECKPOINT.KEEP_LAST = 0
    # On these signals the run finishes the current iteration, writes model_<iteration>.pth and
    # exits with status 75 (engine/signals.py); data-loader workers ignore them and the launcher
    # of --num-gpus passes them on to its processes. [] = Python's default behaviour.
    _C.CADET.CHECKPOINT.STOP_SIGNALS = list(DEFAULT_STOP_SIGNALS)
    # Under SLURM (SLURM_JOB_ID set), after stopping on one of these signals, requeue the job with
    # `scontrol requeue` so that it resumes by itself. SIGUSR1 is what `sbatch --signal=B:USR1@<s>`
    # sends ahead of the time limit; add "SIGTERM" to requeue on preemption too (then `scancel`
    # requeues as well: cancel such a job with `scancel --signal=KILL`). [] = never requeue.
    _C.CADET.CHECKPOINT.REQUEUE_SIGNALS = ["SIGUSR1"]

    # ---- test -----------------------------------------------------------------------------
    _C.CADET.TEST = CN()
    # Write evaluation metrics to OUTPUT_DIR/<this file> (one entry per test set). Not
    # "metrics.json": Detectron2's JSONWriter writes its training log there.
    _C.CADET.TEST.METRICS_FILE = "eval_metrics.json"
    # Sensor failure at test time: after the clean evaluation, every DATASETS.TEST set is
    # evaluated again with each group here (modalities joined by "+", e.g. "thermal+event")
    # failed in each mode of CORRUPT: "zero", "noise" (uniform, seeded by file name) or
    # "frozen" (the data set's first frame). One table, one row per condition. [] = off.
    _C.CADET.TEST.DROP_MODALITIES = []
    _C.CADET.TEST.CORRUPT = ["zero"]
    # KAIST's log-average miss rate MR^-2 (FPPI 1e-2..1e0; cadet_d2/evaluation/miss_rate.py,
    # docs/evaluation.md) beside COCO AP on every DATASETS.TEST set, in the same table and
    # METRICS_FILE ("MR-2 <setting>"), with its curves in OUTPUT_DIR/miss_rate/<set>.json and .png.
    _C.CADET.TEST.MISS_RATE = CN()
    _C.CADET.TEST.MISS_RATE.ENABLED = False
    # The class evaluated (a class name of the data set); "" = "person" if the data set has it, else class 0.
    _C.CADET.TEST.MISS_RATE.CLASS = ""
    # Settings evaluated, the KAIST devkit's (cadet_d2/evaluation/miss_rate_gt.py): "reasonable"
    # (h >= 55, occlusion none/partial), "reasonable-day" / "reasonable-night" (its day / night frames,
    # on a set holding both), scale "near" / "medium" / "far", occlusion "occ-none" / "occ-partial" /
    # "occ-heavy"; and "all" (every box of CLASS; not a devkit setting).
    _C.CADET.TEST.MISS_RATE.SETTINGS = ["reasonable", "reasonable-day", "reasonable-night", "near", "medium", "far",
                                        "occ-none", "occ-partial", "occ-heavy"]
    # IoU a detection needs with a ground-truth box to match it (ignore regions: intersection over
    # the detection's area).
    _C.CADET.TEST.MISS_RATE.IOU = 0.5
    return cfg


def _get(node: CN, dotted: str):
    """``node["A"]["B"]`` for ``"A.B"``."""
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key} = {value!r} is not allowed; choose from {list(allowed)}")


def validate_cadet_config(cfg: CN) -> None:
    """Stop before training on a config that cannot work, saying what is allowed."""
    mods = list(cfg.CADET.INPUT.MODALITIES)
    layout = cfg.CADET.INPUT.LAYOUT
    if not mods:
        raise ValueError(f"CADET.INPUT.MODALITIES is empty; choose a subset of {list(layout.keys())}")
    for m in mods:
        _check_choice("CADET.INPUT.MODALITIES entry", m, list(layout.keys()))
    if len(set(mods)) != len(mods):
        raise ValueError(f"CADET.INPUT.MODALITIES has duplicates: {mods}")
    n_file = cfg.CADET.INPUT.FILE_CHANNELS
    for m in mods:
        bad = [c for c in layout[m] if not 0 <= c < n_file]
        if bad:
            raise ValueError(f"CADET.INPUT.LAYOUT.{m} = {list(layout[m])} has channels outside 0..{n_file - 1}")
    n_event = cfg.CADET.INPUT.EVENT_CHANNELS
    if not isinstance(n_event, int) or isinstance(n_event, bool) or n_event < 1:
        raise ValueError(f"CADET.INPUT.EVENT_CHANNELS = {n_event!r} must be an integer >= 1")
    if "event" in mods and len(layout["event"]) != n_event:
        raise ValueError(f"CADET.INPUT.EVENT_CHANNELS = {n_event} but CADET.INPUT.LAYOUT.event = "
                         f"{list(layout['event'])} names {len(layout['event'])} file channel(s); name one per event "
                         f"channel (e.g. {list(range(4, 4 + n_event))} with CADET.INPUT.FILE_CHANNELS {4 + n_event})")
    n_in = len(file_channel_indices(cfg))
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        n = len(cfg.MODEL[key])
        if n != n_in:
            raise ValueError(
                f"MODEL.{key} has {n} entries but the input has {n_in} channels "
                f"(CADET.INPUT.MODALITIES = {mods}); give one value per channel"
            )
    owner = {c: m for m, s in modality_slices(cfg).items() for c in range(s.start, s.stop)}
    for c, v in enumerate(cfg.MODEL.PIXEL_STD):
        if not v > 0:
            raise ValueError(
                f"MODEL.PIXEL_STD entry {c} (input channel {c}, {owner[c]}) is {v}; every entry must be > 0 "
                "(the input is divided by it). A constant channel has std 0: drop that modality from "
                "CADET.INPUT.MODALITIES, or use 1.0"
            )
    _validate_data(cfg)
    freeze = cfg.CADET.INIT.FREEZE_ITERS
    if freeze < 0 or (freeze and not cfg.CADET.INIT.RGB_DETECTOR):
        raise ValueError(f"CADET.INIT.FREEZE_ITERS {freeze}: must be >= 0, and > 0 only with "
                         "CADET.INIT.RGB_DETECTOR (it freezes the tensors copied from that detector)")
    _check_choice("CADET.BACKBONE.SIZE", cfg.CADET.BACKBONE.SIZE, MIT_SIZES)
    _check_choice("CADET.BACKBONE.ATTENTION", cfg.CADET.BACKBONE.ATTENTION, ("auto", *MIT_ATTENTION_KINDS))
    _check_choice("CADET.DATA.UNLABELED", cfg.CADET.DATA.UNLABELED, UNLABELED_POLICIES)
    _check_choice("CADET.DATA.ON_ERROR", cfg.CADET.DATA.ON_ERROR, ON_ERROR_POLICIES)
    _check_choice("CADET.SOLVER.OPTIMIZER", cfg.CADET.SOLVER.OPTIMIZER.upper(), ("SGD", "ADAMW"))
    _validate_checkpoint(cfg)
    for key in ("FUSION.STAGES", "BACKBONE.CHECKPOINT_STAGES", "FUSION.HYBRID.EARLY_STAGES"):
        stages = _get(cfg.CADET, key)
        for s in stages:
            if s not in (1, 2, 3, 4):
                raise ValueError(f"CADET.{key} entry {s!r} is not a stage; stages are 1, 2, 3, 4")
        if len(set(stages)) != len(stages):
            raise ValueError(f"CADET.{key} = {list(stages)} names a stage twice")
    for key in ("FUSION.FRM_FFM.REDUCTION", "FUSION.GAFF.SE_REDUCTION"):
        r = _get(cfg.CADET, key)
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"CADET.{key} = {r!r} must be an integer >= 1 (channels are divided by it)")
    if not cfg.CADET.FUSION.CSSA.TEMPERATURE > 0:
        raise ValueError(f"CADET.FUSION.CSSA.TEMPERATURE = {cfg.CADET.FUSION.CSSA.TEMPERATURE} must be > 0")
    if not 0.0 <= cfg.CADET.BACKBONE.DROP_PATH_RATE < 1.0:
        raise ValueError(f"CADET.BACKBONE.DROP_PATH_RATE = {cfg.CADET.BACKBONE.DROP_PATH_RATE} must lie in [0, 1)")
    _validate_sensor_failure(cfg)
    _validate_miss_rate(cfg)
    _validate_late(cfg)
    for key in ("EARLY", "LATE"):
        if cfg.CADET.FUSION.HYBRID[key] == "hybrid":
            raise ValueError(f"CADET.FUSION.HYBRID.{key} cannot be 'hybrid'; name a module such as cssa or gaff")
    tau = cfg.CADET.FUSION.CSSA.THRESHOLD
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"CADET.FUSION.CSSA.THRESHOLD = {tau} must lie in [0, 1]")
    if not cfg.CADET.FUSION.CSSA.THRESHOLD_LR_MULT > 0:
        raise ValueError(f"CADET.FUSION.CSSA.THRESHOLD_LR_MULT = {cfg.CADET.FUSION.CSSA.THRESHOLD_LR_MULT} must be > 0")
    if not 0.0 < cfg.CADET.DATA.TEST_FRACTION < 1.0:
        raise ValueError(f"CADET.DATA.TEST_FRACTION = {cfg.CADET.DATA.TEST_FRACTION} must lie in (0, 1)")
    max_fail = cfg.CADET.DATA.MAX_LOAD_FAILURES
    if not isinstance(max_fail, int) or max_fail < 0:
        raise ValueError(f"CADET.DATA.MAX_LOAD_FAILURES = {max_fail!r} must be an integer >= 0")
    if max_fail and not cfg.CADET.DATA.DETERMINISTIC_STREAM:
        raise ValueError(f"CADET.DATA.MAX_LOAD_FAILURES = {max_fail} needs CADET.DATA.DETERMINISTIC_STREAM True "
                         "(only that stream skips a sample that fails to load; Detectron2's loader stops)")
    if cfg.CADET.DATA.DETERMINISTIC_STREAM and cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r} needs CADET.DATA.DETERMINISTIC_STREAM "
            "False (the deterministic, resumable stream samples uniformly: TrainingSampler)"
        )
    _check_choice("CADET.SOLVER.AMP_DTYPE", cfg.CADET.SOLVER.AMP_DTYPE, ("float16", "bfloat16"))
    _check_choice("CADET.SOLVER.BF16_CHECK", cfg.CADET.SOLVER.BF16_CHECK, ("cached", "measure", "off"))
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda") and cfg.CADET.SOLVER.AMP_DTYPE != "bfloat16":
        raise ValueError("SOLVER.AMP.ENABLED with CADET.SOLVER.AMP_DTYPE float16 needs MODEL.DEVICE cuda (fp16 "
                         "autocast and its grad scaler are CUDA-only); on the CPU set CADET.SOLVER.AMP_DTYPE bfloat16")
    accum = cfg.SOLVER.ACCUM_STEPS
    if not isinstance(accum, int) or isinstance(accum, bool) or accum < 1:
        raise ValueError(f"SOLVER.ACCUM_STEPS = {accum!r} must be an integer >= 1 (micro-batches per optimizer step)")


def _validate_data(cfg: CN) -> None:
    """Paired-file keys: percentiles/range well formed, folders name known modalities."""
    inp = cfg.CADET.INPUT
    _check_choice("CADET.INPUT.SIZE_MISMATCH", inp.SIZE_MISMATCH, SIZE_MISMATCH_POLICIES)
    p = list(inp.THERMAL_PERCENTILES)
    if len(p) != 2 or not 0 <= p[0] < p[1] <= 100:
        raise ValueError(f"CADET.INPUT.THERMAL_PERCENTILES = {p} must be [low, high] with 0 <= low < high <= 100")
    r = list(inp.THERMAL_RANGE)
    if r and (len(r) != 2 or not r[0] < r[1]):
        raise ValueError(f"CADET.INPUT.THERMAL_RANGE = {r} must be [] or [low, high] with low < high")
    tol = inp.GREY_TOLERANCE
    if not isinstance(tol, int) or isinstance(tol, bool) or not 0 <= tol <= 255:
        raise ValueError(f"CADET.INPUT.GREY_TOLERANCE = {tol!r} must be an integer in 0..255 (grey levels)")
    from .data.palettes import NAMES as PALETTES

    if inp.THERMAL_PALETTE and inp.THERMAL_PALETTE not in PALETTES:
        raise ValueError(f"CADET.INPUT.THERMAL_PALETTE = {inp.THERMAL_PALETTE!r} is not a known palette: "
                         f"{', '.join(PALETTES)} (or \"\")")
    folders = cfg.CADET.DATA.FOLDERS
    named = [m for m in MODALITY_CHANNELS if folders[m]]
    if named and not folders.rgb:
        raise ValueError(f"CADET.DATA.FOLDERS names {named} but no rgb folder; the RGB folder defines the pairs")
    if named:
        absent = [m for m in cfg.CADET.INPUT.MODALITIES if not folders[m]]
        if absent:
            raise ValueError(f"CADET.INPUT.MODALITIES has {absent} but CADET.DATA.FOLDERS names no folder for it")


def _validate_sensor_failure(cfg: CN) -> None:
    """Modality dropout and test conditions name modalities the model has, and known modes."""
    slices = modality_slices(cfg)
    drop = cfg.CADET.INPUT.MODALITY_DROPOUT
    if not 0.0 <= drop.PROB <= 1.0:
        raise ValueError(f"CADET.INPUT.MODALITY_DROPOUT.PROB = {drop.PROB} must lie in [0, 1]")
    _check_choice("CADET.INPUT.MODALITY_DROPOUT.MODE", drop.MODE, TRAIN_MODES)
    if drop.PROB > 0:
        if not drop.GROUPS:
            raise ValueError("CADET.INPUT.MODALITY_DROPOUT.GROUPS is empty; name the modality groups that may drop")
        for g in drop.GROUPS:
            group_channels(g, slices, "CADET.INPUT.MODALITY_DROPOUT.GROUPS")
    for g in cfg.CADET.TEST.DROP_MODALITIES:
        group_channels(g, slices, "CADET.TEST.DROP_MODALITIES")
    for m in cfg.CADET.TEST.CORRUPT:
        _check_choice("CADET.TEST.CORRUPT entry", m, TEST_MODES)
    if cfg.CADET.TEST.DROP_MODALITIES and not cfg.CADET.TEST.CORRUPT:
        raise ValueError("CADET.TEST.DROP_MODALITIES is set but CADET.TEST.CORRUPT is empty; e.g. [\"zero\"]")


def _validate_late(cfg: CN) -> None:
    """CADET.LATE: a known merge rule, an IoU in (0, 1]; with LateFusionRCNN, branches that
    split CADET.INPUT.MODALITIES (each modality in exactly one) and one WEIGHTS entry per branch."""
    late = cfg.CADET.LATE
    _check_choice("CADET.LATE.MERGE", late.MERGE, LATE_MERGE_RULES)
    if not 0.0 < late.IOU_THRESH <= 1.0:
        raise ValueError(f"CADET.LATE.IOU_THRESH = {late.IOU_THRESH} must lie in (0, 1]")
    if cfg.MODEL.META_ARCHITECTURE != "LateFusionRCNN":
        return
    mods = list(cfg.CADET.INPUT.MODALITIES)
    branches = list(late.BRANCHES)
    if len(branches) < 2:
        raise ValueError(f"CADET.LATE.BRANCHES = {branches} needs at least two entries (one detector each), "
                         "e.g. [\"rgb\", \"thermal+event\"]")
    seen: dict[str, str] = {}
    for b in branches:
        for n in group_modalities(b):
            if n not in mods:
                raise ValueError(f"CADET.LATE.BRANCHES entry {b!r} names {n!r}, which is not in "
                                 f"CADET.INPUT.MODALITIES {mods} (join modalities with '+', e.g. 'thermal+event')")
            if n in seen:
                raise ValueError(f"CADET.LATE.BRANCHES: {n!r} is in two entries ({seen[n]!r} and {b!r}); "
                                 "every modality must be in exactly one")
            seen[n] = b
    missing = [m for m in mods if m not in seen]
    if missing:
        raise ValueError(f"CADET.LATE.BRANCHES = {branches} leaves out {missing} of CADET.INPUT.MODALITIES; "
                         "every modality must be in exactly one entry")
    if late.WEIGHTS and len(late.WEIGHTS) != len(branches):
        raise ValueError(f"CADET.LATE.WEIGHTS has {len(late.WEIGHTS)} entries but CADET.LATE.BRANCHES has "
                         f"{len(branches)}; give one path per branch (\"\" = none) or []")


def _validate_miss_rate(cfg: CN) -> None:
    """CADET.TEST.MISS_RATE's settings are known and its IoU in range (its CLASS is checked against
    each test set's classes when the sets are registered: cadet_d2/evaluation/miss_rate.py)."""
    mr = cfg.CADET.TEST.MISS_RATE
    settings = list(mr.SETTINGS)
    unknown = [v for v in settings if v not in MISS_RATE_SETTINGS]
    if unknown or not settings or len(set(settings)) != len(settings):
        raise ValueError(f"CADET.TEST.MISS_RATE.SETTINGS = {settings}: give each of {list(MISS_RATE_SETTINGS)} at "
                         "most once, at least one" + (f" ({unknown} unknown)" if unknown else ""))
    if not 0.0 < mr.IOU <= 1.0:
        raise ValueError(f"CADET.TEST.MISS_RATE.IOU = {mr.IOU} must lie in (0, 1]")


def _validate_checkpoint(cfg: CN) -> None:
    if int(cfg.CADET.CHECKPOINT.KEEP_LAST) < 0:
        raise ValueError("CADET.CHECKPOINT.KEEP_LAST must be >= 0 (0 = keep all), got "
                         f"{cfg.CADET.CHECKPOINT.KEEP_LAST}")
    stop = set()
    for key in ("STOP_SIGNALS", "REQUEUE_SIGNALS"):
        for name in cfg.CADET.CHECKPOINT[key]:
            if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
                raise ValueError(f"CADET.CHECKPOINT.{key}: {name!r} is not a signal that can be caught "
                                 "(e.g. SIGTERM, SIGINT, SIGUSR1)")
            if key == "STOP_SIGNALS":
                stop.add(name)
            elif name not in stop:
                raise ValueError(f"CADET.CHECKPOINT.REQUEUE_SIGNALS: {name} is not in CADET.CHECKPOINT.STOP_SIGNALS "
                                 f"{list(cfg.CADET.CHECKPOINT.STOP_SIGNALS)}")

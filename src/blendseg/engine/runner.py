"""What ``blendseg train`` and ``blendseg val`` do: datasets from data.yaml, model, loop, evaluation, run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sys
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..data.coco import CocoInstances, open_instances, open_split
from ..data.crop import crop_of
from ..data.loader import build_loader
from ..data.panoptic import CocoPanoptic
from ..data.report import plot_labels, summarize
from ..data.sources import load_data, require_split
from ..data.transforms import transforms_for
from ..dist import (
    broadcast_object,
    cleanup,
    get_rank,
    get_world_size,
    init_from_env,
    is_main_process,
    process_device,
    resolve_device,
)
from ..errors import DataError
from ..evaluation.coco import COCOEvaluator
from ..evaluation.panoptic import PanopticEvaluator
from ..evaluation.plots import enabled as plots_enabled
from ..inference.onnx_runtime import exported_format
from ..inference.predictor import model_device
from ..inference.result import Categories
from ..inference.slicing import SliceSpec, as_spec
from ..overrides import dump_yaml, from_dict
from ..zoo import build_model, get_arch
from .checkpoint import load_checkpoint
from .evaluate import run_evaluation
from .fit import fit
from .runlog import Tee
from .train import micro_batch, step_batch


def make_deterministic(device: torch.device) -> None:
    """Settings under which a run repeats bit for bit: deterministic kernels (warning where one has none), no
    cuDNN autotuning, and on CPU one compute thread (CPU runs repeat with several threads too: the one
    multi-threaded drift, indexing's atomic backward in BlendMask's blender, is gone).

    On CUDA also cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set: without it cuBLAS
    reductions are not repeatable), and blendseg's own kernels for the ops whose CUDA kernels accumulate with
    atomics (bilinear resize and deformable-conv sampling backward, NLL loss; :mod:`blendseg.ops.deterministic`);
    torchvision's roi_align switches to its deterministic form by itself."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any matmul
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if device.type == "cpu":
        torch.set_num_threads(1)


def build_dataset(cfg: TrainConfig, data_yaml: str, split: str, train: bool) -> CocoInstances:
    """The split's dataset with the config's transforms and targets: :class:`CocoPanoptic` when the split names
    panoptic files and the config asks for panoptic data (``data.with_panoptic``; then required for training) or the
    split has no instances JSON (the things come from the PNGs)."""
    spec = load_data(data_yaml)
    require_split(spec, split)
    s = spec.splits[split]
    d = cfg.data
    if d.mask_format not in ("bitmask", "polygon"):
        raise ValueError(f"data.mask_format must be 'bitmask' or 'polygon', got {d.mask_format!r}")
    mean = tuple(cfg.model.pixel_mean)
    tf = transforms_for(d, train, mean if cfg.model.input_format == "RGB" else mean[::-1])  # expand's canvas
    # large JPEGs decoded small, unless training tiles are cut from them at full size
    reduced = train and d.decode_reduced and d.square_size <= 0 and d.augment == "flip" and d.tile <= 0
    kwargs = dict(
        filter_empty=train and d.filter_empty,
        with_masks=d.with_masks,
        with_sem_seg=train and d.with_sem_seg,
        with_crowd_boxes=train and d.with_crowd_boxes,
        with_polygons=train and d.with_masks and d.mask_format == "polygon" and d.square_size <= 0,
        transforms=tf,
        check_files=True,
        decode_min_side=max(d.min_size_train) if reduced else 0,
        crop=crop_of(d) if train else None,
    )
    if s.panoptic is not None and (d.with_panoptic or s.annotations is None):  # instances from the PNGs if need be
        with_sem = train and d.with_panoptic
        ds = CocoPanoptic(s.panoptic, s.panoptic_masks, s.images, s.annotations, with_panoptic_sem=with_sem, **kwargs)
    elif d.with_panoptic and train:
        raise DataError(
            f"{data_yaml}: the model is panoptic but split '{split}' names no panoptic annotations "
            "(panoptic: FILE.json, panoptic_masks: PNG_DIR)"
        )
    else:
        ds = open_instances(spec, split, strict=d.strict, **kwargs)
    if spec.names is not None and len(spec.names) != len(ds.class_names):
        raise DataError(
            f"{data_yaml}: names lists {len(spec.names)} classes, {ds.ann_file} has {len(ds.class_names)} categories"
        )
    if spec.names is not None:
        ds.class_names = spec.names
    return ds


def with_num_classes(cfg: TrainConfig, dataset: CocoInstances) -> TrainConfig:
    """Set the head's class count from the data (one NUM_CLASSES, not two as in the reference), and the semantic
    branch's (stuff classes + 1) for panoptic models on panoptic data."""
    name = cfg.model.classes_field  # the sub-config that holds num_classes ("fcos", "yolact")
    head = getattr(cfg.model, name)
    num_classes = len(dataset.class_names)
    if head.num_classes != num_classes:
        if is_main_process():
            print(f"num_classes: {head.num_classes} -> {num_classes} (from the dataset)")
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, **{name: dataclasses.replace(head, num_classes=num_classes)})
        )
    panoptic = getattr(cfg.model, "panoptic", None)
    if panoptic is not None and panoptic.enabled and hasattr(dataset, "stuff_names"):
        num_sem = len(dataset.stuff_names) + 1
        if panoptic.num_classes != num_sem:
            if is_main_process():
                print(f"panoptic.num_classes: {panoptic.num_classes} -> {num_sem} (stuff classes + things)")
            panoptic = dataclasses.replace(panoptic, num_classes=num_sem)
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, panoptic=panoptic))
    return cfg


def check_classes(cfg: TrainConfig, dataset, data_yaml: str, split: str) -> None:
    """A DataError unless the model predicts as many classes as the split has (labels past the data's categories
    have nothing to be scored by)."""
    num = getattr(cfg.model, cfg.model.classes_field).num_classes
    if num != len(dataset.class_names):
        raise DataError(
            f"the model predicts {num} classes; {data_yaml}'s '{split}' split has {len(dataset.class_names)} "
            f"({', '.join(dataset.class_names)}): evaluate on data with the model's classes"
        )


def iou_types_of(cfg: TrainConfig) -> tuple[str, ...]:
    return ("bbox", "segm") if get_arch(cfg.model.arch).masks else ("bbox",)


class Evaluation:
    """One split's evaluation, built once and run on any model: box (and mask) AP, with panoptic data and a
    panoptic model also PQ (the predictions in COCO panoptic format go to ``out_dir`` when given). Call it with a
    model for the metrics; :meth:`save` then writes the report of that call beside ``metrics.json``."""

    def __init__(
        self,
        cfg: TrainConfig,
        data_yaml: str,
        device: torch.device,
        split: str = "val",
        out_dir: str | Path | None = None,
        precision: str = "fp32",
    ) -> None:
        self.dataset = build_dataset(cfg, data_yaml, split, train=False)
        check_classes(cfg, self.dataset, data_yaml, split)
        self.loader = build_loader(
            self.dataset,
            max(1, step_batch(cfg.solver, get_world_size())[1]),
            False,
            cfg.data.num_workers,
            cfg.model.size_divisibility,
            strict=cfg.data.strict,
            pin_memory=device.type == "cuda",
        )
        ds = self.dataset
        self.coco = COCOEvaluator(ds.coco, ds.contiguous_to_cat_id, ds.class_names, iou_types_of(cfg))
        self.evaluators: list = [self.coco]
        if isinstance(ds, CocoPanoptic) and cfg.data.with_panoptic:
            self.evaluators.append(
                PanopticEvaluator(ds.panoptic, ds.panoptic_dir, ds.contiguous_to_cat_id, ds.stuff_cat_ids, out_dir)
            )
        self.device, self.precision = device, precision

    def __call__(self, model: nn.Module) -> dict:
        return run_evaluation(model, self.loader, self.evaluators, self.device, precision=self.precision)

    def save(self, metrics: dict, out_dir: str | Path, save_worst: int = 0) -> None:
        """The last call's files (:func:`report`: curves, confusion matrices, results JSON, TIDE errors, which
        also go into ``metrics``) and ``metrics.json`` in ``out_dir``; main process only."""
        if not is_main_process():
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report(self, metrics, out_dir, save_worst)
        write_metrics(metrics, out_dir)


def write_metrics(metrics: dict, out_dir: Path) -> Path:
    """``out_dir/metrics.json``, written atomically (a temporary file renamed over it)."""
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, out_dir / "metrics.json")
    return out_dir / "metrics.json"


class PredictorEvaluation(Evaluation):
    """:class:`Evaluation` through a predictor, one original image at a time: an exported graph (``blendseg val
    model.onnx``: its own resize, thresholds and masks; export with ``--conf 0.05`` to score it as the PyTorch model
    is scored) or sliced prediction (``val --slice``). Box (and mask) AP by the same evaluator and report."""

    def __init__(self, predictor, dataset, where: str, iou_types: tuple[str, ...], what: str) -> None:
        """``dataset``: the split (``where`` names it in errors); ``what`` begins the error when the predictor's
        categories are not the split's ("X was exported for")."""
        self.predictor, self.dataset = predictor, dataset
        ds, cats = dataset, predictor.categories
        if list(cats.thing_ids) != list(ds.contiguous_to_cat_id):
            raise DataError(
                f"{what} categories {list(cats.thing_ids)} ({', '.join(cats.thing_names)}); "
                f"{where} has {ds.contiguous_to_cat_id} ({', '.join(ds.class_names)})"
            )
        self.coco = COCOEvaluator(ds.coco, ds.contiguous_to_cat_id, ds.class_names, iou_types)
        self.evaluators = [self.coco]

    def __call__(self, model: nn.Module | None = None) -> dict:
        import time

        self.coco.reset()
        t0, skipped = time.perf_counter(), []
        for info in self.dataset.images[get_rank() :: get_world_size()]:  # each process a share, gathered after
            try:
                image = self.dataset.read_image(info)
            except DataError as e:  # scored with no detections: its ground truth counts as missed
                skipped.append(str(e))
                self.coco.image_ids.append(int(info["id"]))
                continue
            self.coco.process([info["id"]], [self.predictor(image).detections])
        n = len(self.dataset.images)
        kind = getattr(self.predictor, "session_kind", "sliced" if self.predictor.slice else "PyTorch")
        print(f"inference on {n} images: {time.perf_counter() - t0:.1f} s ({kind})")
        metrics = self.coco.evaluate()
        if skipped:
            print(f"warning: {len(skipped)} unreadable evaluation image(s) scored with no detections:")
            print("\n".join(f"  {m}" for m in skipped))
            metrics["skipped_eval_images"] = skipped
        return metrics


def exported_evaluation(
    path: str | Path, data_yaml: str, split: str, device: str, precision: str, slice: SliceSpec | None
) -> PredictorEvaluation:
    from ..inference.onnx_runtime import exported_predictor

    predictor = exported_predictor(path, None, 10**6, device, precision, slice)  # everything the graph outputs
    masks = predictor.metadata.get("masks", "none") != "none"
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    where = f"{data_yaml}'s '{split}' split"
    return PredictorEvaluation(predictor, open_split(data_yaml, split), where, iou_types, f"{path} was exported for")


def sliced_evaluation(
    model: nn.Module,
    cfg: TrainConfig,
    data_yaml: str,
    split: str,
    precision: str,
    slice: SliceSpec,
    device: torch.device | None = None,
) -> PredictorEvaluation:
    """A model's evaluation with ``slice``: every detection its tiles give (conf 0, COCO's 100 an image), on
    ``device`` (None: where the model is)."""
    from ..inference.predictor import Predictor

    ds = open_split(data_yaml, split)
    check_classes(cfg, ds, data_yaml, split)
    categories = Categories(ds.class_names, ds.contiguous_to_cat_id)
    predictor = Predictor(model, cfg, categories, 0.0, 100, device, precision, slice)
    return PredictorEvaluation(predictor, ds, f"{data_yaml}'s '{split}' split", iou_types_of(cfg), "the model predicts")


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load every key of ``state`` whose name and shape match the model (fine-tuning a COCO checkpoint on other
    classes: the class-count layers are skipped and stay freshly initialised). Returns (loaded, skipped)."""
    own = model.state_dict()
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(ok, strict=False)
    skipped = sorted(set(state) - set(ok)) + sorted(set(own) - set(state))
    return sorted(ok), skipped


def _skipped_report(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], skipped: list[str]) -> str:
    """Why the tensors :func:`load_matching` did not load into the model (state dict ``own``) stay freshly
    initialised: another shape (class counts, widths) or not in the file."""
    shape = [k for k in skipped if k in own and k in state]
    absent = [k for k in skipped if k in own and k not in state]
    parts = []
    if shape:
        parts.append(f"re-initialised {len(shape)} whose shape differs (class count or width), e.g. {shape[:4]}")
    if absent:
        parts.append(f"{len(absent)} not in the file stay random, e.g. {absent[:4]}")
    return "; ".join(parts) or "every tensor loaded"


def loader_workers(num_workers: int, device: torch.device, cores: int | None = None) -> int:
    """``data.num_workers`` for training on ``device``: on a CPU, only as many loader processes as there are cores
    beside the training's own threads (``cores``: this machine's, shared by the processes torchrun started on it),
    printed when fewer. A worker that shares a core with the compute threads slows the step by more than it saves:
    blendmask_tiny on 2 cores and 2 threads trains 15 % faster with 0 workers than with 1
    (docs/benchmarks/training.md)."""
    if device.type != "cpu" or num_workers <= 0:
        return num_workers
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads, procs = torch.get_num_threads(), max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    free = max(0, cores // procs - threads)
    if free < num_workers and is_main_process():
        print(
            f"data.num_workers {num_workers} -> {free}: each training process runs {threads} threads on "
            f"{cores // procs} of this machine's {cores} cores (a loader process beside them slows the step)"
        )
    return min(num_workers, free)


def train(
    cfg: TrainConfig,
    data_yaml: str,
    out_dir: str | Path,
    resume: bool = False,
    evaluate: bool = True,
    init_weights: str | None = None,
) -> dict:
    """Train on the ``train`` split, evaluate on ``val`` (if present); returns the final metrics. ``init_weights``:
    a blendseg checkpoint (e.g. a converted official model) to start from, shape-mismatched keys skipped."""
    device = resolve_device(cfg.device)
    rank, local_rank = init_from_env(device.type, cfg.dist_timeout_minutes)
    device = process_device(device, local_rank, get_world_size())
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)  # the data's randomness is seeded per sample (data/loader.py)
    if cfg.deterministic:
        make_deterministic(device)
    out_dir = Path(out_dir)
    if is_main_process():
        for note in load_data(data_yaml).notes:  # a layout recognised, a val split made
            print(note)
    ds = build_dataset(cfg, data_yaml, "train", train=True)
    cfg = with_num_classes(cfg, ds)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    with Tee(out_dir / "log.txt") if is_main_process() else contextlib.nullcontext():  # what the terminal shows
        metrics = _train_in(cfg, ds, data_yaml, out_dir, device, resume, evaluate, init_weights)
    cleanup()
    return metrics


def _train_in(
    cfg: TrainConfig,
    ds: CocoInstances,
    data_yaml: str,
    out_dir: Path,
    device: torch.device,
    resume: bool,
    evaluate: bool,
    init_weights: str | None,
) -> dict:
    """The body of :func:`train` once the run folder and its log.txt exist."""
    if is_main_process():
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        held = {**ds.coco, "images": ds.images}  # what the model will learn from, against its input and strides
        print("\n".join(f"data: {line}" for line in summarize(held, ds.class_names, cfg)))
        if plots_enabled():
            plot_labels(held, ds.class_names, out_dir / "labels.png")
        print(f"run folder: {out_dir.resolve()}  ({len(ds)} training images, {len(ds.class_names)} classes)")
    group = cfg.data.aspect_ratio_grouping and cfg.data.square_size <= 0  # a squash leaves nothing to group
    workers = loader_workers(cfg.data.num_workers, device)
    loader = build_loader(
        ds,
        micro_batch(cfg.solver, get_world_size()),
        True,
        workers,
        cfg.model.size_divisibility,
        cfg.seed,
        group,
        cfg.data.strict,
        pin_memory=device.type == "cuda",  # pinned batches: the copies to the GPU run async
        repeat_threshold=cfg.data.repeat_threshold,
    )
    model = build_model(cfg.model)
    last = out_dir / "weights" / "last.pt"
    resuming = resume and bool(broadcast_object(is_main_process() and last.is_file()))  # rank 0's disk decides
    if init_weights and not resuming:
        from ..convert.weights import recognise

        state, what = recognise(init_weights, cfg, model)
        loaded, skipped = load_matching(model, state)
        if is_main_process():
            own = model.state_dict()
            print(
                f"initialised {len(loaded)} of the model's {len(own)} tensors from {init_weights} "
                f"({what}); {_skipped_report(own, state, skipped)}"
            )
    log = print if is_main_process() else (lambda *_: None)
    if hasattr(model, "prepare") and not resuming:  # data-dependent state (MEInst's mask encoding)
        model.prepare(ds, log=log)
    if hasattr(model, "freeze_unused"):  # parts this data gives no loss (a panoptic head without panoptic data)
        model.freeze_unused(ds, log=log)
    has_val = "val" in load_data(data_yaml).splits
    eval_fn = None
    if evaluate and has_val:  # a model trained on tiles is evaluated as it will predict: sliced
        if cfg.data.tile > 0:
            eval_fn = sliced_evaluation(model, cfg, data_yaml, "val", "fp32", SliceSpec(cfg.data.tile), device)
        else:
            eval_fn = Evaluation(cfg, data_yaml, device)
    extra = {"class_names": ds.class_names, "contiguous_to_cat_id": ds.contiguous_to_cat_id}
    if hasattr(ds, "stuff_names"):  # panoptic: the semantic labels 1..S, for predictions in COCO panoptic format
        extra.update(stuff_names=ds.stuff_names, stuff_cat_ids=ds.stuff_cat_ids)
    try:
        metrics = fit(
            model,
            loader,
            cfg,
            out_dir,
            device,
            eval_fn,
            resume=resume,
            extra_state=extra,
            class_names=ds.class_names,
        )
    finally:
        del loader  # worker processes end before the process group does
    if is_main_process() and metrics:
        if eval_fn is not None:  # the last evaluation's curves, confusion matrices and errors
            eval_fn.save(metrics, out_dir)
        else:
            write_metrics(metrics, out_dir)
        print(f"metrics: {out_dir / 'metrics.json'}")
    if is_main_process() and has_val and evaluate:  # a few validation images beside their ground truth
        from ..predict import draw_split

        val = build_dataset(cfg, data_yaml, "val", train=False)
        paths = [
            p.replace(out_dir / f"val_pred{i}.png")
            for i, p in enumerate(draw_split(model, cfg, val, out_dir / "val_pred", num=3))
        ]
        if cfg.log.tensorboard:
            from .runlog import add_image, tensorboard_writer

            with contextlib.closing(tensorboard_writer(out_dir)) as tb:
                for i, path in enumerate(paths):
                    add_image(tb, f"val_pred/{i}", path, int(metrics.get("best", {}).get("iteration", 0) or 0))
        (out_dir / "val_pred").rmdir()
    return metrics


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a blendseg checkpoint (config inside) and load its weights."""
    ckpt = load_checkpoint(checkpoint)
    cfg = from_dict(TrainConfig, ckpt["config"])
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights="")),
    )
    model = build_model(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


def validate(
    checkpoint: str | os.PathLike | nn.Module,
    data_yaml: str,
    split: str = "val",
    out_dir: str | Path | None = None,
    precision: str = "fp32",
    device: str | torch.device = "auto",
    save_worst: int = 0,
    cfg: TrainConfig | None = None,
    slice: int | SliceSpec | None = None,
) -> dict:
    """COCO evaluation of a checkpoint (a file, or a model in memory with its ``cfg``: ``Model.val``) on a split of
    a data.yaml (the network in ``precision``, on ``device``; a model in memory is evaluated where it is); with
    ``out_dir`` also :func:`~blendseg.evaluation.report.write_report`'s curves, confusion matrices, results JSON and
    TIDE errors, ``metrics.json``, and the ``save_worst`` images with the most errors in ``worst/``. ``slice``: each
    original image predicted in tiles and merged (:mod:`~blendseg.inference.slicing`)."""
    slice = as_spec(slice)
    exported = not isinstance(checkpoint, nn.Module) and exported_format(checkpoint) is not None
    if exported:  # an exported graph (OpenVINO's: fp32 or bf16)
        model = None
        where = "cpu" if device == "auto" else str(device)
        evaluate = exported_evaluation(checkpoint, data_yaml, split, where, precision, slice)
    else:
        if isinstance(checkpoint, nn.Module):
            if cfg is None:
                raise ValueError("validate: a model in memory needs its cfg")
            model, device = checkpoint, model_device(checkpoint)
        else:
            device = resolve_device(device)
            model, cfg, _ = load_model(checkpoint, device)
        if slice is not None:
            evaluate = sliced_evaluation(model, cfg, data_yaml, split, precision, slice)
        else:
            evaluate = Evaluation(cfg, data_yaml, device, split, out_dir, precision)
    metrics = evaluate(model)
    if out_dir is not None:
        evaluate.save(metrics, out_dir, save_worst)
    return metrics


def report(evaluate: Evaluation, metrics: dict, out_dir: Path, save_worst: int = 0) -> None:
    """The evaluation's files beside its metrics (write_report), the worst images on request; a failure here is
    a warning, never the end of a run."""
    from ..evaluation.report import save_worst as draw_worst
    from ..evaluation.report import write_report

    if not evaluate.coco.arrays:  # nothing was detected: no curves to draw
        return
    try:
        _, errors = write_report(evaluate.coco, out_dir, metrics)
        if save_worst > 0:
            ds = evaluate.dataset
            infos = {info["id"]: info for info in ds.images}
            read = lambda iid: ds.read_image(infos[iid]).permute(1, 2, 0).numpy()  # noqa: E731
            kind = "segm" if "segm" in errors else "bbox"
            conf = metrics[kind].get("F1_conf") or 0.3
            paths = draw_worst(evaluate.coco, errors[kind], read, out_dir / "worst", save_worst, conf)
            print(f"{len(paths)} images with the most {kind} errors: {out_dir / 'worst'}")
    except Exception as e:  # noqa: BLE001
        print(f"warning: the evaluation report was not completed: {type(e).__name__}: {e}", file=sys.stderr)

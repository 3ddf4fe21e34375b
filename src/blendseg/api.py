"""``blendseg.load(...)``: a trained model (or a preset with random weights) behind one small facade;
``blendseg.train(...)``: the ``blendseg train`` command as a function.

import blendseg
metrics = blendseg.train("blendmask_tiny", "data.yaml", "runs/mine", weights="pretrained.pt",
                         overrides={"solver.epochs": 12})
model = blendseg.load("runs/mine/weights/best.pt")
for r in model.predict("photos/", conf=0.3, stream=True):
    print(r.path, len(r), r.speed)
    r.save(f"out/{Path(r.path).stem}.png")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from .config import TrainConfig
from .inference.predictor import Predictor, model_device
from .inference.result import Categories, Result
from .inference.slicing import SliceSpec, as_spec
from .inference.sources import Source, iter_source


class Model:
    """A blendseg model (BlendMask, panoptic BlendMask, YOLACT / YOLACT++, MEInst or FCOS) with its run config
    and class names: :meth:`predict`, :meth:`val`, :meth:`train`, :meth:`export`."""

    def __init__(
        self, model: torch.nn.Module, cfg: TrainConfig, categories: Categories, checkpoint: str | None
    ) -> None:
        self.model, self.cfg, self.categories, self.checkpoint = model.eval(), cfg, categories, checkpoint
        self._predictor: tuple[tuple, object] | None = None  # (settings, predictor), kept between calls

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self.categories.thing_names))

    @property
    def device(self) -> torch.device:
        """Where the network runs: chosen by :func:`load` (or :meth:`to`), kept by predict, val and export."""
        return model_device(self.model)

    def to(self, device: str | torch.device) -> Model:
        """Move the network to ``device`` ("auto": the GPU when there is one); returns self."""
        from .dist import resolve_device

        self.model.to(resolve_device(device))
        return self

    def fuse(self) -> Model:
        """Fold every batch norm into the convolution before it (:func:`~blendseg.modeling.core.fuse.fuse`): the same
        predictions up to float32 rounding, faster on a CPU; for inference only (the folded statistics are
        gone). Returns self."""
        from .modeling.core.fuse import fuse

        fuse(self.model.eval())
        return self

    def predict(
        self,
        source: Source,
        conf: float = 0.3,
        max_det: int = 100,
        device: str | None = None,
        stream: bool = False,
        precision: str = "fp32",
        slice: int | SliceSpec | None = None,
    ) -> list[Result] | Iterator[Result]:
        """Predict on a path, folder, glob, video file, PIL image, numpy (H, W, 3) RGB array, or a list or iterator
        (e.g. a generator of camera frames) of these: a list of :class:`~blendseg.inference.result.Result` (a
        generator with ``stream=True``, for videos and long inputs: memory does not grow with their length; an
        iterator is read one image per result asked for). Results hold their tensors on the CPU, so a list of them
        takes no GPU memory. ``device``: None runs where the model is (see :func:`load`); a device moves the model
        there first. ``precision``: "bf16" runs the network about 2x faster on a CPU with bf16 matrix units
        (decoding and masks stay float32), "fp16" on CUDA. ``slice``: for large images with small objects, a tile
        size (or a :class:`~blendseg.inference.slicing.SliceSpec`: overlap, the full-image pass too): each image
        larger than a tile is predicted tile by tile and the tiles' instances merged by their masks."""
        predictor = self.predictor(conf, max_det, device, precision, slice)
        results = (predictor(it.image, it.path, it.frame) for it in iter_source(source))
        return results if stream else list(results)

    __call__ = predict

    def track(
        self,
        source: Source,
        tracker=None,
        conf: float = 0.1,
        max_det: int = 100,
        device: str | None = None,
        stream: bool = False,
        precision: str = "fp32",
    ) -> list[Result] | Iterator[Result]:
        """:meth:`predict` over the frames of a video, a folder of frames in order or an iterator, each Result with
        ``track_ids`` (-1 for a detection no track took) from ``tracker`` (a fresh
        :class:`~blendseg.inference.tracker.ByteTracker` by default: ByteTrack's association on boxes and masks).
        Detections are kept down to ``conf`` (at most the tracker's ``low``: its second stage needs the weak ones),
        and every one keeps its mask. ``stream=True`` for long videos: memory does not grow with their length."""
        from .inference.tracker import ByteTracker

        tracker = tracker if tracker is not None else ByteTracker()
        predictor = self.predictor(min(conf, tracker.low), max_det, device, precision)

        def results() -> Iterator[Result]:
            for it in iter_source(source):
                r = predictor(it.image, it.path, it.frame)
                ids = tracker.update(r.boxes.numpy(), r.scores.numpy(), r.labels.numpy(), r.compact_masks)
                r.track_ids = torch.as_tensor(ids)
                yield r

        return results() if stream else list(results())

    def val_track(
        self,
        sequences: str | os.PathLike | Sequence[str | os.PathLike],
        out_dir: str | os.PathLike | None = None,
        conf: float = 0.1,
        max_det: int = 100,
        tracker: Mapping[str, object] | None = None,
        device: str | None = None,
        precision: str = "fp32",
    ) -> dict:
        """Track every MOTChallenge sequence (``img1/`` frames, ``gt/gt.txt`` MOTS ground truth; or a folder of
        them, as ``blendseg data synth --video`` writes) with a fresh ByteTracker (``tracker``: its keyword
        arguments) and score the tracks on masks: ``{"all", "class_averaged", "classes"}`` rows of HOTA / DetA /
        AssA / IDF1 / MOTA / IDSW / MT / ML by TrackEval, and ``"stability"``
        (:func:`~blendseg.evaluation.tracking.temporal_stability` of the tracked masks). ``out_dir``: also each
        sequence's tracks as ``<sequence>.txt`` (MOTS, TrackEval's tracker layout) and ``metrics.json``."""
        import dataclasses
        import tempfile

        from .data.mots import find_sequences, read_mots
        from .evaluation.tracking import evaluate_mots, temporal_stability
        from .inference.tracker import ByteTracker
        from .predict import MotsWriter

        paths = [sequences] if isinstance(sequences, (str, os.PathLike)) else list(sequences)
        seqs = [s for p in paths for s in find_sequences(p)]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir) if out_dir is not None else Path(tmp)
            pairs = {}
            for seq in seqs:
                writer = MotsWriter(folder / f"{seq.name}.txt", self.categories.thing_ids, keep=True)
                frames = self.track(
                    seq / "img1", ByteTracker(**(tracker or {})), conf, max_det, device, True, precision
                )
                for r in frames:
                    writer.write(r)
                writer.close()
                pairs[seq.name] = (read_mots(seq / "gt" / "gt.txt"), writer.objects)
        metrics = evaluate_mots(pairs)
        metrics["stability"] = dataclasses.asdict(temporal_stability(pairs))
        metrics["sequences"] = [s.name for s in seqs]
        if out_dir is not None:
            (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    def predictor(
        self,
        conf: float = 0.3,
        max_det: int = 100,
        device: str | None = None,
        precision: str = "fp32",
        slice: int | SliceSpec | None = None,
    ):
        """The one-image callable behind :meth:`predict`: ``predictor(image (3, H, W) uint8) -> Result``. Kept
        between calls and made again only when ``conf``, ``max_det``, the device or ``precision`` change (for an
        exported model a predictor is an onnxruntime session or an OpenVINO compilation: a loop of one-image
        ``predict`` calls pays for it once)."""
        if device is not None:
            self.to(device)
        settings = (conf, max_det, str(self.device), precision, as_spec(slice))
        if self._predictor is None or self._predictor[0] != settings:
            self._predictor = (settings, self._new_predictor(conf, max_det, precision, as_spec(slice)))
        return self._predictor[1]

    def _new_predictor(self, conf: float, max_det: int, precision: str, slice: SliceSpec | None):
        return Predictor(self.model, self.cfg, self.categories, conf, max_det, None, precision, slice)

    def export(
        self,
        format: str = "onnx",
        out: str | os.PathLike | None = None,
        opset: int | None = None,
        conf: float = 0.3,
        max_det: int = 100,
        dense_masks: bool = False,
        int8_images: list | None = None,
        calib_method: str = "MinMax",
        keep_float: Sequence[str] = (),
    ) -> Path:
        """Write the whole pipeline (resize, network, NMS, masks at the image size) as an ONNX file
        (:func:`~blendseg.export.onnx.export_onnx`, from a float32 CPU copy: this model stays where and as it is;
        compact mask outputs that the runners paste when asked; ``dense_masks=True``: (N, H, W) masks pasted inside
        the graph); default path: the checkpoint's with ``.onnx``. ``format``
        "openvino": that graph converted by OpenVINO into ``.xml`` + ``.bin`` (:func:`~.export.onnx.to_openvino`;
        deformable convs as GridSample + MatMul: OpenVINO's converter has no ONNX DeformConv).
        ``int8_images``: (3, H, W) uint8 arrays (:func:`~.export.quantize.calibration_images`) that calibrate the
        int8 form of the graph (:func:`~.export.quantize.quantize_int8`, ``calib_method``; ``keep_float``: modules
        left in float, by name); default path ``.int8.onnx`` / ``.int8.xml``."""
        import tempfile

        from .export.onnx import export_onnx, to_openvino
        from .export.quantize import quantize_int8
        from .inference.onnx_runtime import format_named

        target = format_named(format)

        suffix = (".int8" if int8_images is not None else "") + target.suffix
        default = Path(self.checkpoint).with_suffix(suffix) if self.checkpoint else Path("model" + suffix)
        out = Path(out) if out else default
        if format == "onnx" and int8_images is None:
            return export_onnx(self.model, self.cfg, self.categories, out, opset, conf, max_det, dense_masks)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # nothing half-written is left at ``out``
            graph = export_onnx(
                self.model,
                self.cfg,
                self.categories,
                Path(tmp) / "fp32.onnx",
                opset,
                conf,
                max_det,
                dense_masks,
                deform_conv_op=format == "onnx",
            )
            if int8_images is not None:  # OpenVINO runs the quantised (QDQ) graph as int8
                graph = quantize_int8(
                    graph,
                    out if format == "onnx" else Path(tmp) / "int8.onnx",
                    int8_images,
                    calib_method,
                    keep_float=keep_float,
                )
            return graph if format == "onnx" else to_openvino(graph, out)

    def val(
        self,
        data: str | os.PathLike,
        split: str = "val",
        out_dir: str | os.PathLike | None = None,
        precision: str = "fp32",
        device: str | None = None,
        save_worst: int = 0,
        slice: int | SliceSpec | None = None,
    ) -> dict:
        """COCO box / mask AP (and PQ for panoptic models on panoptic data) on a split of a data.yaml, where the
        model is (``device``: moved there first); returns the metrics dict (percent) that ``blendseg val``
        writes. ``out_dir``: also the curves, confusion matrices, TIDE errors and results JSON there (with the
        ``save_worst`` images with the most errors), as ``blendseg val --out``. ``slice``: as :meth:`predict`'s."""
        from .engine.runner import validate

        if device is not None:
            self.to(device)
        return validate(
            self.model, str(data), split, out_dir, precision, self.device, save_worst, cfg=self.cfg, slice=slice
        )

    def train(
        self,
        data: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        overrides: Sequence[str] | Mapping[str, object] = (),
        resume: bool = False,
        evaluate: bool = True,
    ) -> dict:
        """Train this model on ``data`` (a data.yaml or an export's folder) into ``out`` (default runs/train): its
        config with ``overrides`` (``{"solver.epochs": 12}``), starting from its checkpoint's weights (keys whose
        shapes differ, such as a classifier for other classes, start fresh), as ``blendseg train --weights``.
        Afterwards this model is the trained one (``best.pt``, else ``last.pt``). Returns the final metrics."""
        out = Path(out) if out is not None else Path("runs") / "train"
        metrics = train(
            self.cfg,
            data,
            out,
            weights=self.checkpoint,
            overrides=overrides,
            resume=resume,
            evaluate=evaluate,
        )
        weights = out / "weights"
        trained = load(next(p for p in (weights / "best.pt", weights / "last.pt") if p.is_file()), str(self.device))
        self.model, self.cfg, self.categories, self.checkpoint = (
            trained.model,
            trained.cfg,
            trained.categories,
            trained.checkpoint,
        )
        self._predictor = None
        return metrics


class OnnxModel(Model):
    """An ONNX file written by ``blendseg export``, run with onnxruntime: :meth:`predict` as :class:`Model`'s (the
    graph holds its own resize, thresholds and masks) and :meth:`val`; no ``export`` (use the ``.pt`` checkpoint)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        from .export.onnx import read_metadata

        meta = read_metadata(path)  # ONNX or OpenVINO IR
        self.model, self.cfg, self.checkpoint = None, None, str(path)
        self.categories, self.metadata = Categories(meta["class_names"], meta["category_ids"]), meta
        self._device = device
        self._predictor = None

    @property
    def device(self) -> torch.device:
        return torch.device(self._device)

    def to(self, device: str | torch.device) -> OnnxModel:
        self._device = str(device)
        return self

    def fuse(self) -> OnnxModel:
        """Nothing to do: onnxruntime folds batch norms when it opens the graph."""
        return self

    def _new_predictor(self, conf: float, max_det: int, precision: str, slice: SliceSpec | None):
        from .inference.onnx_runtime import exported_predictor

        return exported_predictor(self.checkpoint, conf, max_det, self._device, precision, slice)

    def val(
        self,
        data: str | os.PathLike,
        split: str = "val",
        out_dir: str | os.PathLike | None = None,
        precision: str = "fp32",
        save_worst: int = 0,
        slice: int | SliceSpec | None = None,
    ) -> dict:
        """COCO box / mask AP of the graph on a split, as ``blendseg val model.onnx`` (export with ``--conf 0.05``
        to score it as the PyTorch model is scored; ``precision`` "bf16" for an OpenVINO model)."""
        from .engine.runner import validate

        return validate(self.checkpoint, str(data), split, out_dir, precision, self._device, save_worst, slice=slice)

    def export(self, *args, **kwargs) -> Path:
        raise NotImplementedError("this is already an exported model: export from the .pt checkpoint")

    def train(self, *args, **kwargs) -> dict:
        raise NotImplementedError("an exported model does not train: train from the .pt checkpoint")


def load(source: str | os.PathLike, device: str = "auto") -> Model:
    """A blendseg checkpoint (``.pt``: a trained or converted model), an ONNX file from ``blendseg export`` (run with
    onnxruntime) or a preset name (random weights), on ``device``: "auto" (the GPU when CUDA is available, else the
    CPU), "cpu", "cuda", "cuda:N". The one place that chooses: predict, val and export then keep the model there."""
    from .dist import resolve_device
    from .engine.runner import load_model
    from .inference.onnx_runtime import exported_format
    from .zoo import PRESETS, build_model, get_preset

    if exported_format(source) is not None and Path(source).is_file():
        return OnnxModel(source, _onnx_device(device))
    device = resolve_device(device)
    if str(source) in PRESETS:
        cfg = get_preset(str(source))
        model = build_model(cfg.model).to(device)
        return Model(model, cfg, Categories.from_checkpoint({}, cfg), None)
    if not Path(source).is_file():
        raise FileNotFoundError(f"{source}: neither a checkpoint file nor a preset name (see `blendseg presets`)")
    model, cfg, ckpt = load_model(source, device)
    return Model(model, cfg, Categories.from_checkpoint(ckpt, cfg), str(source))


def train(
    preset: str | TrainConfig,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, object] = (),
    resume: bool = False,
    evaluate: bool = True,
) -> dict:
    """Train ``preset`` (a name from ``blendseg presets`` or a :class:`TrainConfig`) on ``data`` (a data.yaml: COCO
    JSON or ultralytics YOLO layout) into ``out`` (default runs/PRESET), as ``blendseg train`` does; returns the
    final metrics (metrics.json). ``weights``: start from a blendseg checkpoint, an official AdelaiDet or
    dbolya/yolact file, or torchvision / detectron2 backbone weights, recognised by content (``--weights``).
    ``overrides``: ``["solver.epochs=12"]`` or ``{"solver.epochs": 12}``, applied to the config as on the command
    line."""
    from .engine.runner import train as run
    from .overrides import apply_overrides
    from .zoo import get_preset

    if isinstance(overrides, Mapping):
        overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    cfg = apply_overrides(get_preset(preset) if isinstance(preset, str) else preset, list(overrides))
    out = out if out is not None else Path("runs") / (preset if isinstance(preset, str) else "train")
    return run(cfg, str(data), out, resume=resume, evaluate=evaluate, init_weights=str(weights) if weights else None)


def _onnx_device(device: str) -> str:
    """ "auto" for an ONNX file: CUDA when onnxruntime has its CUDA provider (and a GPU is there), else the CPU."""
    if device != "auto":
        return device
    try:
        import onnxruntime
    except ImportError:
        return "cpu"
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()
    return "cuda" if cuda else "cpu"

"""An exported ONNX file behind the :class:`~blendseg.inference.predictor.Predictor` interface, on onnxruntime
(``pip install 'blendseg[onnx]'``): ``OnnxPredictor(path)(image) -> Result``, so ``blendseg predict model.onnx``,
``blendseg.load("model.onnx")``, video and the writers work unchanged."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import MissingExtra
from ..structures import BoxMasks, DenseMasks, GridMasks, Instances, LazyMasks
from .precision import missing_instructions
from .result import Categories, Result
from .slicing import SliceSpec, as_spec, needs_slicing, sliced_result


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtra("running an ONNX model needs onnxruntime: pip install 'blendseg[onnx]'") from None
    return onnxruntime


class OnnxPredictor:
    """``predictor(image, path=None, frame=None) -> Result`` for one (3, H, W) uint8 RGB image, running an ONNX file
    written by ``blendseg export``. ``conf`` / ``max_det`` filter further what the graph kept (it was exported
    with its own, in ``metadata``; ``conf=None``: the graph's); ``device`` "cuda" uses onnxruntime's CUDA provider
    when it is installed."""

    def __init__(
        self,
        path: str | os.PathLike,
        conf: float | None = 0.3,
        max_det: int = 100,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        slice: int | SliceSpec | None = None,
    ) -> None:
        self.slice = as_spec(slice)
        self.metadata = self._open(path, device, threads, precision)
        self.categories = Categories(self.metadata["class_names"], self.metadata["category_ids"])
        conf = self.metadata["conf"] if conf is None else conf
        self.conf, self.max_det = conf, max_det
        if conf < self.metadata["conf"]:
            warnings.warn(
                f"{path} was exported with conf={self.metadata['conf']}: detections scoring below it are not in the "
                f"graph's output, whatever conf={conf} asks (export again with a lower --conf)",
                stacklevel=2,
            )

    def _open(self, path: str | os.PathLike, device: str, threads: int | None, precision: str) -> dict:
        """Start the runtime on ``path``; returns the file's blendseg metadata (sets ``session_kind``)."""
        if precision != "fp32":
            raise ValueError("an exported ONNX graph runs in the precision it was exported in (fp32 or int8)")
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # no busy-waiting after a run: the mask pasting and drawing that follow run in PyTorch on the same cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = torch.device(device).index or 0
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
            else:
                warnings.warn(
                    f"device {device}: this onnxruntime has no CUDA provider (it has "
                    f"{', '.join(ort.get_available_providers())}), so {path} runs on the CPU; for the GPU: "
                    "pip install onnxruntime-gpu",
                    stacklevel=3,
                )
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.session_kind = f"onnxruntime {self.session.get_providers()[0]}"
        meta = self.session.get_modelmeta().custom_metadata_map.get("blendseg")
        if meta is None:
            raise ValueError(f"{path}: not an ONNX file exported by blendseg (no 'blendseg' metadata)")
        meta = json.loads(meta)
        reason = missing_instructions("int8") if meta.get("precision") == "int8" else None
        if reason and not meta.get("calibration", {}).get("reduce_range") and "CPU" in self.session.get_providers()[0]:
            warnings.warn(
                f"{path}: {reason}: onnxruntime's int8 convolutions can saturate on it; export again "
                "with --int8 on this machine (7-bit weights)",
                stacklevel=3,
            )
        return meta

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"image": array})

    def detect(self, image: Tensor) -> tuple[Instances, dict[str, float]]:
        t0 = time.perf_counter()
        array = np.ascontiguousarray(image.numpy())
        t1 = time.perf_counter()
        outs = self._run(array)
        t2 = time.perf_counter()
        boxes, scores, labels, *rest = (torch.from_numpy(o) for o in outs)
        dets = Instances(boxes, scores, labels, self._masks(rest, tuple(image.shape[-2:])))
        return dets, {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3}

    def _masks(self, outs: list[Tensor], image_size: tuple[int, int]) -> LazyMasks | None:
        kind = self.metadata.get("masks", "dense" if outs else "none")
        if kind == "dense":
            return DenseMasks(outs[0])
        if kind == "box":  # per-box probabilities, pasted per instance when asked (as the PyTorch path)
            return BoxMasks(outs[0], outs[1], image_size)
        if kind == "grid":  # YOLACT: cropped prototype masks over the squashed image, upsampled to the image
            return GridMasks(outs[0], image_size, image_size)
        return None

    def __call__(self, image: Tensor, path: str | None = None, frame: int | None = None) -> Result:
        if needs_slicing(image, self.slice):  # the graph takes one image: a tile a run
            return sliced_result(self, lambda tiles: [self.detect(t)[0] for t in tiles], image, path, frame)
        dets, speed = self.detect(image)
        t0 = time.perf_counter()
        keep = (dets.scores >= self.conf).nonzero()[:, 0][: self.max_det]  # the graph's output is score-ordered
        dets = dets[keep]
        speed["postprocess"] = (time.perf_counter() - t0) * 1e3
        return Result(image, dets, self.categories, path, speed, frame)


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingExtra("OpenVINO models need openvino: pip install 'blendseg[openvino]'") from None
    return openvino


def openvino_metadata(model, path: str | os.PathLike) -> dict:
    """The blendseg metadata of a read OpenVINO model (its runtime info), or an error naming ``path``."""
    if not model.has_rt_info(["blendseg"]):
        raise ValueError(f"{path}: not an OpenVINO model exported by blendseg (no 'blendseg' runtime info)")
    return json.loads(model.get_rt_info(["blendseg"]).astype(str))


class OpenVinoPredictor(OnnxPredictor):
    """:class:`OnnxPredictor` for an OpenVINO IR written by ``blendseg export --format openvino`` (``model.xml``
    + ``model.bin``, the blendseg metadata in its runtime info), compiled for the CPU in ``precision`` "fp32" or
    "bf16" (OpenVINO's inference precision hint; bf16 needs a CPU with bf16 units)."""

    def _open(self, path: str | os.PathLike, device: str, threads: int | None, precision: str) -> dict:
        ov = require_openvino()
        if str(device).startswith("cuda"):
            warnings.warn(f"device {device}: the OpenVINO runner runs {path} on the CPU", stacklevel=3)
        core = ov.Core()
        hint = {"fp32": "f32", "bf16": "bf16"}.get(precision)
        if hint is None:
            raise ValueError(f"OpenVINO precision {precision!r}: fp32 or bf16 (int8 comes from an int8 export)")
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("bf16 needs a CPU with bf16 instructions (avx512_bf16 or AMX); this one has none")
        model = core.read_model(str(path))
        metadata = openvino_metadata(model, path)
        config = {"INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.request = core.compile_model(model, "CPU", config).create_infer_request()
        self.session_kind = f"OpenVINO {ov.__version__} CPU {precision}"
        return metadata

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({"image": array})
        return [np.asarray(result[o]) for o in self.request.model_outputs]


@dataclass(frozen=True)
class ExportFormat:
    """A format ``blendseg export --format NAME`` writes: its file ``suffix`` and the ``runner`` that predicts
    with it (onnxruntime: fp32 only, an ONNX graph runs in the precision it was exported in; OpenVINO: fp32 or
    bf16)."""

    name: str
    suffix: str
    runner: type[OnnxPredictor]


# the one table of exported formats: load, predict, val, export and read_metadata dispatch on it
FORMATS = {
    f.suffix: f
    for f in (ExportFormat("onnx", ".onnx", OnnxPredictor), ExportFormat("openvino", ".xml", OpenVinoPredictor))
}


def exported_format(path: str | os.PathLike) -> ExportFormat | None:
    """The format of an exported file by its suffix, or None for anything else (a ``.pt`` checkpoint)."""
    return FORMATS.get(os.path.splitext(str(path))[1].lower())


def format_named(name: str) -> ExportFormat:
    for f in FORMATS.values():
        if f.name == name:
            return f
    raise ValueError(f"export format {name!r}: {' or '.join(repr(f.name) for f in FORMATS.values())}")


def exported_predictor(
    path: str | os.PathLike,
    conf: float | None = 0.3,
    max_det: int = 100,
    device: str = "cpu",
    precision: str = "fp32",
    slice: int | SliceSpec | None = None,
) -> OnnxPredictor:
    """The runner of an exported file (:data:`FORMATS`, by its suffix)."""
    fmt = exported_format(path)
    if fmt is None:
        raise ValueError(f"{path}: not an exported model ({', '.join(FORMATS)})")
    return fmt.runner(path, conf, max_det, device, precision=precision, slice=slice)

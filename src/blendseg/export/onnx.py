"""``blendseg export CKPT --format onnx``: the whole pipeline (:mod:`blendseg.export.graph`) as one ONNX file with
a dynamic image size, through the ``torch.export`` based exporter (onnxscript), with the class names, category
ids and thresholds in its metadata so :class:`~blendseg.inference.onnx_runtime.OnnxPredictor` needs nothing else.

Inputs: ``image`` (3, H, W) uint8 RGB. Outputs: ``boxes`` (D, 4) float32 xyxy image pixels, ``scores`` (D,)
float32, ``labels`` (D,) int64 and, for mask models, ``masks`` (D, H, W) uint8 (or, exported with compact masks,
``mask_probs`` and ``mask_boxes``; the metadata's ``masks`` says which: none, dense, box or grid).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import MissingExtra
from ..inference.result import Categories
from ..ops.deform import export_decomposed
from .graph import image_graph

METADATA_KEY = "blendseg"
DETECTIONS = ["boxes", "scores", "labels"]
MASK_OUTPUTS = {"dense": ["masks"], "box": ["mask_probs", "mask_boxes"], "grid": ["mask_probs"]}


def require_onnx() -> None:
    missing = []
    for mod in ("onnx", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise MissingExtra(f"ONNX export needs {' and '.join(missing)}: pip install 'blendseg[onnx]'")


def export_onnx(
    model: nn.Module,
    cfg: TrainConfig,
    categories: Categories,
    out: str | os.PathLike,
    opset: int | None = None,
    conf: float = 0.3,
    max_det: int = 100,
    dense_masks: bool = False,
    example_size: tuple[int, int] = (480, 640),
    deform_conv_op: bool = True,
) -> Path:
    """Write ``model`` (a float32 CPU copy in eval mode: ``model`` itself stays where and as it is) as an ONNX graph
    taking any (3, H, W) uint8 image; ``conf`` and ``max_det`` are applied inside the graph (masks are made only for
    what is kept). ``opset``: default 18, 19 for models with deformable convolutions (ONNX DeformConv;
    ``deform_conv_op=False``: as GridSample + MatMul instead, opset 18, for runtimes without DeformConv).
    Masks come out compact: ``mask_probs`` (D, S, S) + ``mask_boxes`` (D, 4), or YOLACT's ``mask_probs`` (D, h',
    w'), pasted per instance by blendseg's runners when asked for, so time and memory follow the detections, not
    the image; ``dense_masks=True`` pastes them inside the graph instead, as ``masks`` (D, H, W) uint8 (for
    consumers other than blendseg). Returns the path."""
    require_onnx()
    import onnx

    deformable = has_deformable_convs(model) and deform_conv_op
    opset = opset or (19 if deformable else 18)
    if opset < 18:
        raise ValueError(f"opset {opset}: the exported graph needs opset >= 18 (antialiased Resize, RoiAlign)")
    if deformable and opset < 19:
        raise ValueError(f"opset {opset}: this model has deformable convolutions, ONNX DeformConv needs opset >= 19")
    graph = image_graph(_cpu_float_copy(model), cfg, conf, max_det, dense_masks)
    example = torch.randint(0, 256, (3, *example_size), dtype=torch.uint8)
    height, width = torch.export.Dim("height", min=16, max=32768), torch.export.Dim("width", min=16, max=32768)
    with torch.no_grad():
        n_out = len(graph(example))
    masks = "none" if n_out == 3 else "dense" if dense_masks else "box" if n_out == 5 else "grid"
    names = DETECTIONS + MASK_OUTPUTS.get(masks, [])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    decomposed = contextlib.nullcontext() if deform_conv_op else export_decomposed()
    with warnings.catch_warnings(), torch.no_grad(), decomposed:
        warnings.simplefilter("ignore")  # the exporter's own deprecation / tracing chatter
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_shapes={"image": {1: height, 2: width}},
            verbose=False,
        )
    proto = program.model_proto
    meta = {
        "format_version": 1,
        "method": type(model).__name__,
        "opset": opset,
        "conf": conf,
        "max_det": max_det,
        "class_names": categories.thing_names,
        "category_ids": categories.thing_ids,
        "outputs": names,
        "masks": masks,
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, tmp)
    os.replace(tmp, out)
    return out


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    """``model`` as float32 on the CPU in eval mode, copied: the caller's model keeps its device, dtype and mode."""
    return copy.deepcopy(model).cpu().float().eval()


def has_deformable_convs(model: nn.Module) -> bool:
    from ..modeling.core.fcos import DeformConv
    from ..modeling.core.layers import DeformConv2dNorm

    return any(isinstance(m, (DeformConv2dNorm, DeformConv)) for m in model.modules())


def to_openvino(onnx_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The exported ONNX graph converted by OpenVINO's own converter into ``out`` (.xml, its weights in the .bin
    beside it), the blendseg metadata in the IR's runtime info."""
    from ..inference.onnx_runtime import require_openvino

    ov = require_openvino()
    out = Path(out)
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(read_metadata(onnx_path)), [METADATA_KEY])
    tmp = out.with_name(out.stem + ".tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return out


def read_metadata(path: str | os.PathLike) -> dict:
    """The blendseg metadata of an exported file, ONNX or OpenVINO IR (without loading its weights)."""
    from ..inference.onnx_runtime import exported_format

    if getattr(exported_format(path), "name", None) == "openvino":
        from ..inference.onnx_runtime import openvino_metadata, require_openvino

        return openvino_metadata(require_openvino().Core().read_model(str(path)), path)
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path}: not an ONNX file exported by blendseg (no '{METADATA_KEY}' metadata)")

"""``blendseg export CKPT --int8 --data data.yaml``: static post-training int8 quantisation of an exported ONNX graph
with onnxruntime's own tools (``onnxruntime.quantization.quantize_static``).

What is quantised: the network's convolutions (backbone, FPN, heads, bottom module), residual adds, ReLUs and max
pools (``OP_TYPES``), as QDQ pairs with per-channel int8 weights and uint8 activations (onnxruntime's fast path on
x86 with VNNI, fused into ``QLinearConv`` / ``QLinearAdd``; with the adds and ReLUs in int8 a residual chain stays
int8 between convolutions: 3 % faster than convolutions alone on BlendMask R_50 at 800, the same AP within 0.1 on
the three tiny methods). A node belongs to the network when the exporter's ``pkg.torch.onnx.name_scopes`` puts it
inside a submodule of the graph; the graph's own code (test-time resize, decoding, NMS, the blender / mask
assembly, pasting) stays float32, as do group norms (no int8 kernel) and whatever ``keep_float`` names.

Calibration: ``calib_images`` images of the user's training split, fed as they are (uint8 RGB at their own size)
so they pass through the graph's own test-time resize; ``method`` is onnxruntime's: MinMax (default: the best AP of
the three on every tiny method, docs/benchmarks/deploy.md), Entropy or Percentile.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import MissingExtra
from ..inference.precision import missing_instructions
from .onnx import METADATA_KEY

METHODS = ("MinMax", "Entropy", "Percentile")
OP_TYPES = ("Conv", "Add", "Relu", "MaxPool")


def network_nodes(proto, op_types: Sequence[str] = ("Conv",), keep_float: Sequence[str] = ()) -> list[str]:
    """Names of the nodes of ``op_types`` inside a submodule of the exported graph (module docstring) other than
    its test-time ``preprocess`` (whose adds compute the resized size: quantised, they rounded it to a calibrated
    uint8 grid, a wrong size that OpenVINO then refused), less those inside a module whose dotted name contains one
    of ``keep_float``."""
    names = []
    for node in proto.graph.node:
        scopes = next(
            (ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), []
        )
        kept_float = any(k in scope for k in keep_float for scope in scopes[1:-1])
        network = len(scopes) > 2 and scopes[1] != "preprocess"  # ['', 'module.path', ..., 'op']
        if node.op_type in op_types and network and not kept_float:
            names.append(node.name)
    return names


def quantize_int8(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    images: Iterable[np.ndarray],
    method: str = "MinMax",
    op_types: Sequence[str] = OP_TYPES,
    keep_float: Sequence[str] = (),
    reduce_range: bool | None = None,
) -> Path:
    """Write the int8 form of the exported graph ``fp32_path`` to ``out`` (atomically), calibrated on ``images``
    ((3, H, W) uint8 arrays); the blendseg metadata is kept, with ``precision: int8`` and the calibration added.

    ``op_types``: the ops quantised inside the network; ``keep_float``: module names (substrings of the dotted
    path, e.g. ``"cls_logits"``) whose ops stay float. ``reduce_range``: 7-bit weights, which onnxruntime needs on
    x86 CPUs without VNNI (there its uint8 x int8 products go through 16-bit sums that can saturate); None: on
    when this CPU lacks VNNI, with a warning."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingExtra("int8 export needs onnx and onnxruntime: pip install 'blendseg[onnx]'") from None
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: one of {', '.join(METHODS)}")
    if reduce_range is None:
        reason = missing_instructions("int8")
        if reason:
            warnings.warn(
                f"int8 export: {reason}; weights are quantised to 7 bits (reduce_range) so that "
                "onnxruntime's convolutions cannot saturate on it",
                stacklevel=2,
            )
        reduce_range = reason is not None
    out = Path(out)
    images = list(images)
    if not images:
        raise ValueError("int8 calibration needs at least one image")

    class Reader(CalibrationDataReader):  # one image a call (``set_range``): see ``CalibStridedMinMax`` below
        def __init__(self) -> None:
            self.it = iter(images)

        def __len__(self) -> int:
            return len(images)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(images[start_index:end_index])

        def get_next(self) -> dict | None:
            image = next(self.it, None)
            return None if image is None else {"image": np.ascontiguousarray(image, dtype=np.uint8)}

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        source = onnx.load(str(fp32_path))
        nodes = network_nodes(source, op_types, keep_float)  # pre-processing drops the scopes but keeps the node names
        if not nodes:
            raise ValueError(f"{fp32_path}: no convolution inside the network's modules: not a blendseg export?")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)  # the image size is dynamic
        staged = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            reduce_range=reduce_range,
            # one image a call: the histogram methods (Entropy, Percentile) stack one call's activations into one
            # array, which fails on images of different sizes (and holds all of them at once)
            extra_options={"CalibTensorRangeSymmetric": False, "CalibStridedMinMax": 1},
        )
        q = onnx.load(str(staged))
        meta = json.loads(next(p.value for p in source.metadata_props if p.key == METADATA_KEY))
        meta.update(
            precision="int8",
            calibration={
                "images": len(images),
                "method": method,
                "nodes": len(nodes),
                "op_types": list(op_types),
                "keep_float": list(keep_float),
                "reduce_range": reduce_range,
            },
        )
        del q.metadata_props[:]
        entry = q.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.save(q, str(staged))
        os.replace(staged, out)
    return out


def calibration_images(data_yaml: str, count: int, split: str = "train") -> list[np.ndarray]:
    """``count`` images of a data.yaml split, spread evenly over it, as (3, H, W) uint8 RGB arrays at their own size
    (the graph resizes them); unreadable files are skipped with a warning, none readable is an error naming the
    split."""
    from ..data.coco import open_split
    from ..errors import DataError

    ds = open_split(data_yaml, split, " for int8 calibration")
    infos = ds.images
    picks = [infos[i] for i in np.linspace(0, len(infos) - 1, min(count, len(infos))).round().astype(int)]
    images, bad = [], []
    for info in picks if infos else []:
        try:
            images.append(ds.read_image(info).numpy())
        except Exception as e:  # noqa: BLE001 - any unreadable image is skipped, the rest calibrate
            bad.append(f"{info.get('file_name')}: {type(e).__name__}: {e}")
    if bad:
        warnings.warn(f"{len(bad)} calibration image(s) unreadable, skipped, e.g. {bad[0]}", stacklevel=2)
    if not images:
        raise DataError(f"{data_yaml}: the '{split}' split has no readable image for int8 calibration")
    return images

"""What a dataset holds, in the terms that decide whether a run can learn from it (``data check`` and the start of
``train`` print it; the run folder gets ``labels.png``): images and their sizes, instances per image against the
model's detection limit, object sizes after the model's test-time resize against its strides and FCOS's size
ranges, and the class balance, each with what to change when it is a problem."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..config import TrainConfig
from .transforms import shortest_edge_size


def _input_scale(cfg: TrainConfig, h: int, w: int) -> tuple[float, float]:
    """(sx, sy) of the model's test-time resize of an h x w image, or of its tiles with ``data.tile`` (they are
    what the network sees in training and in prediction with ``--slice``)."""
    d = cfg.data
    if d.tile > 0:
        h, w = min(h, d.tile), min(w, d.tile)
    if d.square_size > 0:
        return d.square_size / w, d.square_size / h
    nh, nw = shortest_edge_size(h, w, d.min_size_test, d.max_size_test)
    return nw / w, nh / h


def summarize(data: dict, class_names: list[str], cfg: TrainConfig | None = None, train: bool = True) -> list[str]:
    """Lines describing a checked COCO dict (non-crowd instances); with ``cfg`` also against the model: its
    detection limit, finest stride and FCOS size ranges; for a ``train`` split a ``data.repeat_threshold`` when
    the classes are far out of balance."""
    images = data["images"]
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    if not images:
        return ["no images"]
    sizes = sorted((im["width"] * im["height"], im["width"], im["height"]) for im in images)
    med = sizes[len(sizes) // 2]
    lines = [
        f"{len(images)} images, {len(anns)} instances, {len(class_names)} classes; image sizes "
        f"{sizes[0][1]}x{sizes[0][2]} to {sizes[-1][1]}x{sizes[-1][2]} (median {med[1]}x{med[2]})"
    ]
    per_image: dict[int, int] = {}
    for a in anns:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    counts = [per_image.get(im["id"], 0) for im in images]
    line = (
        f"instances per image: median {statistics.median(counts):g}, max {max(counts)}; "
        f"{counts.count(0)} image(s) without any"
    )
    head = getattr(cfg.model, cfg.model.classes_field) if cfg is not None else None
    max_det = getattr(head, "post_nms_topk", None) or getattr(head, "max_num_detections", None)
    if max_det and max(counts) > 0.8 * max_det:
        crowded = sum(c > 0.8 * max_det for c in counts)
        key = "post_nms_topk" if hasattr(head, "post_nms_topk") else "max_num_detections"
        line += (
            f"; {crowded} image(s) come near or past the model's {max_det} detections an image: raise it "
            f"(model.{cfg.model.classes_field}.{key})"
        )
    lines.append(line)
    lines += _sizes(data, anns, cfg, head) if cfg is not None else []
    lines += _balance(images, anns, data, class_names, train)
    return lines


def _sizes(data: dict, anns: list[dict], cfg: TrainConfig, head) -> list[str]:
    """Object sizes (the longer box side) after the test-time resize, by FCOS level, and those under the finest
    stride, with the input size that would lift most of them above it."""
    if not anns:
        return []
    by_id = {im["id"]: im for im in data["images"]}
    sides = []
    for a in anns:
        im = by_id[a["image_id"]]
        sx, sy = _input_scale(cfg, im["height"], im["width"])
        sides.append(max(a["bbox"][2] * sx, a["bbox"][3] * sy))
    sides.sort()
    q = lambda f: sides[min(len(sides) - 1, int(f * len(sides)))]  # noqa: E731
    d = cfg.data
    at = f"{d.square_size}x{d.square_size}" if d.square_size > 0 else f"{d.min_size_test} (max {d.max_size_test})"
    at += f" of {d.tile}-px tiles" if d.tile > 0 else ""
    lines = [
        f"object size after the resize to {at}: longer side {q(0.05):.0f} / {q(0.5):.0f} / {q(0.95):.0f} px "
        "(5th / 50th / 95th percentile)"
    ]
    ranges = getattr(head, "sizes_of_interest", None)
    strides = getattr(head, "strides", None)
    if ranges and strides:
        edges = [0, *ranges, math.inf]
        levels = [sum(lo <= s / 2 < hi for s in sides) for lo, hi in zip(edges, edges[1:])]  # FCOS: max distance
        names = [f"P{int(math.log2(s))}" for s in strides]
        lines.append(
            "by FCOS level (its size ranges "
            + ", ".join(map(str, ranges))
            + "): "
            + ", ".join(f"{n} {k}" for n, k in zip(names, levels))
        )
    finest = strides[0] if strides else None
    if finest:
        small = sum(s < finest for s in sides)
        if small > 0.05 * len(sides):
            grow = finest / max(q(0.05), 1e-3)
            size = int(math.ceil(min(d.min_size_test * grow, 4 * d.min_size_test) / 32) * 32)
            line = (
                f"{small} of {len(sides)} objects are smaller than the finest stride ({finest} px) after "
                "the resize: the network hardly sees them; a larger input helps, e.g. "
                f"data.min_size_train=[{size}] data.min_size_test={size} (max sizes to match)"
            )
            side = statistics.median(min(im["height"], im["width"]) for im in data["images"])
            if d.tile <= 0 and d.square_size <= 0 and side >= 2 * d.min_size_test:  # large images: tiles
                tile = int(math.ceil(d.min_size_test / 32) * 32)
                line += f", or tiles: data.tile={tile} to train, predict and val with --slice {tile}"
            lines.append(line)
    return lines


def _balance(images: list[dict], anns: list[dict], data: dict, class_names: list[str], train: bool) -> list[str]:
    """Instances per class, and data.repeat_threshold when the rarest class is in ten times fewer images than the
    commonest (detectron2's repeat factor sampling: t = the median class's image fraction)."""
    cat_ids = sorted(c["id"] for c in data["categories"])
    inst = {c: 0 for c in cat_ids}
    img: dict[int, set] = {c: set() for c in cat_ids}
    for a in anns:
        inst[a["category_id"]] = inst.get(a["category_id"], 0) + 1
        img.setdefault(a["category_id"], set()).add(a["image_id"])
    named = [f"{n} {inst[c]}" for n, c in zip(class_names, cat_ids)]
    shown = ", ".join(named[:20]) + (f", ... ({len(named) - 20} more)" if len(named) > 20 else "")
    lines = [f"instances per class: {shown}"]
    fractions = sorted(len(img[c]) / len(images) for c in cat_ids)
    if train and len(fractions) > 1 and fractions[0] * 10 < fractions[-1]:
        t = statistics.median(fractions)
        lines.append(
            f"class balance: the rarest class is in {fractions[0]:.1%} of the images, the commonest in "
            f"{fractions[-1]:.1%}; repeat the rare ones: data.repeat_threshold={t:.3g}"
        )
    return lines


def plot_labels(data: dict, class_names: list[str], path: str | Path) -> Path:
    """``labels.png`` as ultralytics draws it: instances per class, box centres and box sizes (relative to their
    image), instances per image (matplotlib's object API)."""
    from matplotlib.figure import Figure

    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    by_id = {im["id"]: im for im in data["images"]}
    cat_ids = sorted(c["id"] for c in data["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    fig = Figure(figsize=(12, 9), layout="constrained")
    ax = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    counts = [0] * len(cat_ids)
    for a in anns:
        counts[index[a["category_id"]]] += 1
    ax[0].bar(range(len(counts)), counts, color="tab:blue")
    ax[0].set_xticks(range(len(counts)), class_names, rotation=90 if len(counts) > 8 else 0, fontsize="small")
    ax[0].set(title="instances per class", ylabel="instances")
    rel = [(a, by_id[a["image_id"]]) for a in anns]
    cx = [(a["bbox"][0] + a["bbox"][2] / 2) / im["width"] for a, im in rel]
    cy = [(a["bbox"][1] + a["bbox"][3] / 2) / im["height"] for a, im in rel]
    ax[1].scatter(cx, cy, s=2, alpha=0.3)
    ax[1].set(title="box centres", xlabel="x / image width", ylabel="y / image height", xlim=(0, 1), ylim=(1, 0))
    bw = [a["bbox"][2] / im["width"] for a, im in rel]
    bh = [a["bbox"][3] / im["height"] for a, im in rel]
    ax[2].scatter(bw, bh, s=2, alpha=0.3, color="tab:orange")
    ax[2].set(title="box sizes", xlabel="width / image width", ylabel="height / image height", xlim=(0, 1), ylim=(0, 1))
    per_image: dict[int, int] = {im_id: 0 for im_id in by_id}
    for a in anns:
        per_image[a["image_id"]] += 1
    most = max(per_image.values(), default=0)
    edges = [k - 0.5 for k in range(most + 2)] if most < 50 else 50  # a bar per count
    ax[3].hist(list(per_image.values()), bins=edges, color="tab:green", rwidth=0.9)
    ax[3].set(title="instances per image", xlabel="instances", ylabel="images")
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path

"""Our mask merge against sahi's on the same tiles (issue 39): one model, one set of tile predictions per image,
merged four ways, each scored by the same COCO evaluator:

- none: every tile's instances kept (the duplicates of objects in overlaps and the halves of cut ones stay);
- ours: ``inference.slicing.merge_pieces`` (same-class pieces joined by mask overlap where their tiles meet);
- sahi GREEDYNMM and sahi NMS: sahi's ``get_sliced_prediction`` defaults (match by box IOS >= 0.5, per class),
  the tile instances handed over as sahi ``ObjectPrediction``s with their masks as polygons (sahi's own
  ``get_coco_segmentation_from_bool_mask``), merged masks rasterised back.

sahi is not a dependency: install it into a throw-away folder and put it on the path for this script only,

    pip install --target /tmp/sahi_env --no-deps sahi==0.12.8 shapely click fire termcolor
    PYTHONPATH=/tmp/sahi_env python -m benchmarks.sahi_merge \\
        --model runs/tracking/blendmask_tiny_seed0/weights/last.pt --data runs/sliced960/data/data.yaml

Writes results.md into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_markdown
from blendseg.data.coco import open_split
from blendseg.engine.runner import load_model
from blendseg.evaluation.coco import COCOEvaluator
from blendseg.inference.predictor import Predictor
from blendseg.inference.result import Categories
from blendseg.inference.slicing import SliceSpec, merge_pieces, tile_pieces
from blendseg.structures import Instances, WindowMasks


def no_merge(pieces: list, hw: tuple[int, int], max_det: int) -> Instances:
    best = sorted(pieces, key=lambda p: -p[2])[:max_det]
    return _instances([(p[1], p[2], p[3], p[4]) for p in best], hw)


def sahi_merge(pieces: list, hw: tuple[int, int], kind: str, max_det: int) -> Instances:
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMSPostprocess
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_bool_mask_from_coco_segmentation, get_coco_segmentation_from_bool_mask

    h, w = hw
    preds = []
    for _, box, score, label, (y0, x0, win) in pieces:
        polys = get_coco_segmentation_from_bool_mask(win.numpy())
        polys = [(np.asarray(p, np.float64).reshape(-1, 2) + [x0, y0]).ravel().tolist() for p in polys]
        if not polys:
            continue
        preds.append(ObjectPrediction(box.tolist(), label, str(label), polys, score, [0, 0], [h, w]))
    post = {"GREEDYNMM": GreedyNMMPostprocess, "NMS": NMSPostprocess}[kind]
    merged = post(match_threshold=0.5, match_metric="IOS", class_agnostic=False)(preds)
    out = []
    for p in sorted(merged, key=lambda p: -p.score.value)[:max_det]:
        x0, y0, x1, y1 = (int(v) for v in p.bbox.to_xyxy())
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        shifted = [(np.asarray(s).reshape(-1, 2) - [x0, y0]).ravel().tolist() for s in p.mask.segmentation]
        win = torch.from_numpy(get_bool_mask_from_coco_segmentation(shifted, x1 - x0, y1 - y0))
        out.append((torch.tensor([x0, y0, x1, y1], dtype=torch.float32), p.score.value, p.category.id, (y0, x0, win)))
    return _instances(out, hw)


def _instances(items: list, hw: tuple[int, int]) -> Instances:
    boxes = torch.stack([b for b, *_ in items]) if items else torch.zeros(0, 4)
    scores = torch.tensor([s for _, s, *_ in items], dtype=torch.float32)
    labels = torch.tensor([c for _, _, c, _ in items], dtype=torch.int64)
    return Instances(boxes, scores, labels, WindowMasks([m for *_, m in items], hw))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/sahi_merge"))
    p.add_argument("--slice", type=int, default=320)
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--conf", type=float, default=0.05, help="tile instances under it dropped before any merge")
    a = p.parse_args()
    torch.set_num_threads(2)
    model, cfg, _ = load_model(a.model, "cpu")
    ds = open_split(a.data, "val")
    predictor = Predictor(model, cfg, Categories(ds.class_names, ds.contiguous_to_cat_id), 0.0, 100)
    spec = SliceSpec(a.slice, a.overlap)
    merges = {
        "none (all tile instances)": lambda r, ps, m, hw: no_merge(ps, hw, 100),
        "ours (mask overlap where tiles meet)": lambda r, ps, m, hw: merge_pieces(r, ps, m, spec, 100, hw),
        "sahi GREEDYNMM (box IOS 0.5)": lambda r, ps, m, hw: sahi_merge(ps, hw, "GREEDYNMM", 100),
        "sahi NMS (box IOS 0.5)": lambda r, ps, m, hw: sahi_merge(ps, hw, "NMS", 100),
    }
    evaluators = {k: COCOEvaluator(ds.coco, ds.contiguous_to_cat_id, ds.class_names, ("bbox", "segm")) for k in merges}
    seconds = dict.fromkeys(merges, 0.0)
    counts = dict.fromkeys(merges, 0)
    for info in ds.images:
        image = ds.read_image(info)
        hw = tuple(image.shape[-2:])
        rects, pieces, masks_made = tile_pieces(predictor.detect_tiles, image, spec, a.conf, 100)
        for name, merge in merges.items():
            t0 = time.perf_counter()
            dets = merge(rects, pieces, masks_made, hw)
            seconds[name] += time.perf_counter() - t0
            counts[name] += len(dets.scores)
            evaluators[name].process([info["id"]], [dets])
    rows = []
    for name, ev in evaluators.items():
        m = ev.evaluate(verbose=False)
        n = len(ds.images)
        rows.append(
            f"| {name} | {m['segm']['AP']:.1f} | {m['segm']['APs']:.1f} | {m['bbox']['AP']:.1f} | "
            f"{counts[name] / n:.0f} | {1e3 * seconds[name] / n:.0f} |"
        )
        print(rows[-1], flush=True)
    md = [
        f"{len(ds.images)} images of {a.data}; model {a.model}; tiles of {a.slice} px, overlap {a.overlap}, tile "
        f"instances >= {a.conf}; the same tile predictions for every row",
        "",
        "| merge | mask AP | mask AP_small | box AP | instances / image | merge ms / image |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    a.out.mkdir(parents=True, exist_ok=True)
    write_markdown(a.out / "results.md", md, env="PYTHONPATH=/tmp/sahi_env ")


if __name__ == "__main__":
    main()

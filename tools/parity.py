"""Check blendseg against a reference fixture directory (weights.safetensors, config.yaml or config.json,
input.npz, outputs.npz, meta.json): convert, run, compare every array named in meta.json.

    python tools/parity.py ../shared/fixtures/reference/blendmask_r18_tiny
    python tools/parity.py ../shared/fixtures/reference/yolact_plus_tiny_im400

AdelaiDet fixtures carry a detectron2 config.yaml; dbolya/yolact fixtures the official config dict (config.json,
with its ``eval_settings``) and state their mask tolerance as flipped pixels in meta.json's
``robustness.suggested_tolerances``.

Prints the max abs difference per array; exits 0 only when every float array is within its tolerance (meta.json
``tolerance``: a number or {array: number}; otherwise 1e-4 x max(1, max abs of the array)), every integer array
is equal and the final masks are equal outside ``final_mask_ambiguous_idx``. Exits 2 for fixtures whose
reference family has no converter yet.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from blendseg.convert.adelaidet import convert_adelaidet
from blendseg.convert.yolact import convert_yolact
from blendseg.modeling.fcos_inference import fcos_candidates, rescale_and_clip, select_detections
from blendseg.ops.blend import pool_bases
from blendseg.zoo import build_model

LEVEL_NAMES = ["p3", "p4", "p5", "p6", "p7"]


def _capture_last(module: torch.nn.Module, store: list) -> None:
    module.register_forward_hook(lambda _m, _i, out: store.append(out.detach()))


@torch.no_grad()
def run_adelaidet(fixture: Path) -> dict[str, np.ndarray]:
    """Our arrays under the fixture's names, for an AdelaiDet FCOS / BlendMask fixture."""
    cfg, state, unmapped = convert_adelaidet(str(fixture / "config.yaml"), str(fixture / "weights.safetensors"))
    if unmapped:
        raise SystemExit(f"converter left {len(unmapped)} keys unmapped, e.g. {unmapped[:3]}")
    model = build_model(cfg.model).eval()
    model.load_state_dict(state, strict=True)
    fcos = getattr(model, "fcos", model)
    feats: list = []
    fcos.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out))
    box_tower: list = []
    tower = fcos.head.bbox_tower if len(fcos.head.bbox_tower) else fcos.head.share_tower
    if len(tower):
        _capture_last(tower[-1], box_tower)
    inp = np.load(fixture / "input.npz")
    image = torch.from_numpy(inp["image_bgr"]).permute(2, 0, 1).flip(0).float()  # blendseg takes RGB
    out = model([image])
    fout = getattr(out, "fcos", out)
    arrays: dict[str, np.ndarray] = {f"backbone_{k}": v.numpy() for k, v in feats[0].items()}
    for i, lvl in enumerate(LEVEL_NAMES[: len(fout.logits)]):
        arrays[f"fpn_{lvl}"] = fout.features[lvl].numpy()
        arrays[f"head_logits_{lvl}"] = fout.logits[i].numpy()
        arrays[f"head_bbox_reg_{lvl}"] = fout.box_reg[i].numpy()
        arrays[f"head_ctrness_{lvl}"] = fout.quality[i].numpy()
        if box_tower:
            arrays[f"head_bbox_tower_{lvl}"] = box_tower[i].numpy()
        if fout.embeds is not None:  # BlendMask's attentions / MEInst's codes
            arrays[f"head_top_feats_{lvl}"] = fout.embeds[i].numpy()
            arrays[f"head_mask_coeffs_{lvl}"] = fout.embeds[i].numpy()
    c = cfg.model.fcos
    args = (fout.logits, fout.box_reg, fout.quality, fout.embeds, fout.locations, fcos.strides)
    cand = fcos_candidates(*args, c.inference_th, c.pre_nms_topk, c.thresh_with_ctr)[0]
    det = select_detections(cand, c.nms_th, c.post_nms_topk)
    for prefix, d in (("prenms", cand), ("det", det)):
        arrays.update({f"{prefix}_boxes": d.boxes.numpy(), f"{prefix}_scores": d.scores.numpy()})
        arrays.update({f"{prefix}_classes": d.labels.numpy(), f"{prefix}_locations": d.locations.numpy()})
        arrays[f"{prefix}_fpn_levels"] = d.levels.numpy()
    if d.embeds is not None:
        arrays["det_top_feat"] = det.embeds.numpy()
    size = tuple(int(v) for v in inp["image_bgr"].shape[:2])
    _, _, keep = rescale_and_clip(det.boxes, size, size)
    arrays["final_keep_index"] = keep.nonzero().squeeze(1).numpy()
    final = model.postprocess(out, [size])[0]
    arrays.update({"final_boxes": final.boxes.numpy(), "final_scores": final.scores.numpy()})
    arrays["final_classes"] = final.labels.numpy()
    if hasattr(out, "bases"):
        b = model.cfg.blendmask
        arrays["bases"] = out.bases.numpy()
        arrays["det_mask_logits"] = model.mask_logits(out.bases, [det])[0].numpy()
        first = det.boxes[:5]
        arrays["det_rois_first5"] = pool_bases(
            out.bases, first, torch.zeros(len(first), dtype=torch.int64), b.bottom_resolution, b.bases_stride
        ).numpy()
        arrays["final_masks"] = final.masks.numpy()
    if hasattr(model, "mask_encoding"):  # MEInst
        arrays["det_mask_coeffs"] = det.embeds.numpy()
        logits = model.mask_encoding.decode(det.embeds).view(-1, model.cfg.meinst.mask_size, model.cfg.meinst.mask_size)
        arrays["det_mask_logits"] = logits.numpy()
        arrays["det_mask_probs"] = model.mask_probs([det])[0].numpy()
        arrays["final_masks"] = final.masks.numpy()
    arrays["__preprocessed"] = fcos.preprocess([image])[0].numpy()
    return arrays


@torch.no_grad()
def run_yolact(fixture: Path) -> dict[str, np.ndarray]:
    """Our arrays under the fixture's names, for a dbolya/yolact fixture (official preprocessing: bilinear squash
    to max_size without antialiasing, then the model's normalisation)."""
    import dataclasses

    weights, config = str(fixture / "weights.safetensors"), str(fixture / "config.json")
    cfg, state, unmapped = convert_yolact(weights, config_path=config)
    if unmapped:
        raise SystemExit(f"converter left {len(unmapped)} keys unmapped, e.g. {unmapped[:3]}")
    settings = json.loads((fixture / "config.json").read_text()).get("eval_settings", {})
    head = dataclasses.replace(
        cfg.model.yolact,
        score_threshold=float(settings.get("postprocess.score_threshold", 0.0)),
        second_threshold=bool(settings.get("second_threshold", False)),
        nms="fast" if settings.get("detect.use_fast_nms", True) else "standard",
    )
    model = build_model(dataclasses.replace(cfg.model, yolact=head)).eval()
    model.load_state_dict(state, strict=True)
    feats: list = []
    model.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out))
    pyramid: list = []
    model.fpn.register_forward_hook(lambda _m, _i, out: pyramid.append(out))
    inp = np.load(fixture / "input.npz")
    image = torch.from_numpy(inp["image_bgr"]).permute(2, 0, 1).flip(0).float()
    size = cfg.data.square_size
    x = F.interpolate(image[None], (size, size), mode="bilinear", align_corners=False)[0]
    out = model([x])
    arrays = {"loc": out.loc[0], "conf": out.conf[0].softmax(-1), "mask_coef": out.coef[0], "priors": out.priors}
    arrays["proto"] = out.proto[0]
    for i, name in enumerate(("C2", "C3", "C4", "C5")):
        arrays[f"dbg_backbone_{name}_slice"] = feats[0][f"res{i + 2}"][0, :8, :6, :6]
    for i, p in enumerate(pyramid[0]):
        arrays[f"dbg_fpn_P{i + 3}_slice"] = p[0, :8, :6, :6]
    det = model.detect(out)[0]
    arrays.update(detect_boxes=det.boxes, detect_classes=det.labels, detect_scores=det.scores, detect_coefs=det.coefs)
    hw = tuple(int(v) for v in inp["image_bgr"].shape[:2])
    final = model.postprocess(out, [hw])[0]
    kept = det[det.scores > head.score_threshold]
    from blendseg.ops.masks import crop_masks

    cropped = crop_masks(torch.sigmoid(out.proto[0] @ kept.coefs.t()).permute(2, 0, 1), kept.boxes)
    arrays.update(masks_proto_cropped=cropped, classes=final.labels, box_scores=final.scores)
    arrays.update(boxes=final.boxes.long(), masks=final.masks.to(torch.uint8))
    if model.maskiou_net is not None:
        pred = model.maskiou_net(cropped[:, None])
        arrays.update(maskiou_pred=pred, maskiou_p=pred.gather(1, kept.labels[:, None])[:, 0])
        arrays["mask_scores"] = final.mask_scores
    normalized = (x - model.pixel_mean[:, None, None]) / model.pixel_std[:, None, None]
    arrays["__input_tensor"] = normalized[None]
    return {k: v.numpy() for k, v in arrays.items()}


def _mask_pixel_budget(meta: dict) -> int:
    """Flipped-pixel tolerance for final masks stated in meta.json (``masks: <= ~30 flipped pixels``), else 0."""
    text = str(meta.get("robustness", {}).get("suggested_tolerances", ""))
    m = re.search(r"masks: <= ~?(\d+) flipped pixels", text)
    return int(m.group(1)) if m else 0


def compare(fixture: Path, ours: dict[str, np.ndarray], meta: dict) -> bool:
    ref = np.load(fixture / "outputs.npz")
    inp = np.load(fixture / "input.npz")
    tol_cfg = meta.get("tolerance")
    names = list(meta.get("outputs", {}).get("arrays", {})) or list(ref.files)
    ok = True
    inputs = [n for n in ("preprocessed", "input_tensor") if n in inp.files]
    names = inputs + names
    budget = _mask_pixel_budget(meta)
    for name in names:
        if name == "final_mask_ambiguous_idx":
            continue
        r = inp[name] if name in inputs else ref[name]
        o = ours.get(f"__{name}" if name in inputs else name)
        if o is None:
            print(f"  {name:28s} NOT PRODUCED")
            ok = False
            continue
        if name == "final_masks":
            amb = ref["final_mask_ambiguous_idx"] if "final_mask_ambiguous_idx" in ref.files else np.zeros((0, 3), int)
            o, r = o.copy(), r.copy()
            if o.shape == r.shape:
                o[amb[:, 0], amb[:, 1], amb[:, 2]] = False
                r[amb[:, 0], amb[:, 1], amb[:, 2]] = False
            good = o.shape == r.shape and np.array_equal(o, r)
            diff = int((o != r).sum()) if o.shape == r.shape else -1
            verdict = "ok " if good else "BAD"
            print(f"  {name:28s} {verdict} differing pixels outside ambiguous: {diff} ({len(amb)} ambiguous)")
        elif o.shape != r.shape:
            good = False
            print(f"  {name:28s} BAD shape {o.shape} vs reference {r.shape}")
        elif name == "masks" and budget:
            diff = int((o != r).sum())
            good = diff <= budget
            print(f"  {name:28s} {'ok ' if good else 'BAD'} flipped pixels {diff} (tolerance {budget})")
        elif np.issubdtype(r.dtype, np.floating):
            tol = tol_cfg.get(name) if isinstance(tol_cfg, dict) else tol_cfg
            tol = float(tol) if tol is not None else 1e-4 * max(1.0, float(np.abs(r).max()) if r.size else 1.0)
            diff = float(np.abs(o.astype(np.float64) - r).max()) if r.size else 0.0
            good = diff <= tol
            print(f"  {name:28s} {'ok ' if good else 'BAD'} max abs diff {diff:.3g} (tolerance {tol:.3g})")
        else:
            good = np.array_equal(o, r)
            print(f"  {name:28s} {'ok ' if good else 'BAD'} {'equal' if good else 'differs'}")
        ok &= bool(good)
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fixture", type=Path)
    a = p.parse_args()
    meta = json.loads((a.fixture / "meta.json").read_text())
    torch.set_num_threads(1)  # the reference fixtures are made with one thread
    if (a.fixture / "config.yaml").is_file():
        arch = meta.get("model", {}).get("meta_architecture", "")
        if arch not in ("BlendMask", "OneStageDetector", "FCOS", ""):
            print(f"{a.fixture}: meta_architecture {arch!r} has no converter")
            return 2
        try:
            ours = run_adelaidet(a.fixture)
        except (SystemExit, ValueError, RuntimeError) as e:
            print(f"{a.fixture}: cannot convert / run ({e})")
            return 2
    elif (a.fixture / "config.json").is_file():
        try:
            ours = run_yolact(a.fixture)
        except (SystemExit, ValueError, RuntimeError, KeyError) as e:
            print(f"{a.fixture}: cannot convert / run ({e})")
            return 2
    else:
        print(f"{a.fixture}: neither config.yaml (AdelaiDet) nor config.json (dbolya/yolact)")
        return 2
    print(f"{a.fixture}:")
    ok = compare(a.fixture, ours, meta)
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

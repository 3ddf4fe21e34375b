"""Check blendseg against a reference fixture directory (weights.safetensors, config.yaml or config.json,
input.npz, outputs.npz, meta.json): convert, run, compare every array named in meta.json.

    python tools/parity.py ../shared/fixtures/reference/blendmask_r18_tiny
    python tools/parity.py ../shared/fixtures/reference/blendmask_panoptic_tiny
    python tools/parity.py ../shared/fixtures/reference/yolact_plus_tiny_im400
    python tools/parity.py ../shared/fixtures/reference/blendmask_r18_tiny --device cuda --tol-scale 10

AdelaiDet fixtures carry a detectron2 config.yaml; dbolya/yolact fixtures the official config dict (config.json,
with its ``eval_settings``) and state their mask tolerance as flipped pixels in meta.json's
``robustness.suggested_tolerances``.

Prints the max abs difference per array; exits 0 only when every float array is within its tolerance (meta.json
``tolerance``: a number or {array: number}; otherwise 1e-4 x max(1, max abs of the array)), every integer array
is equal and the final masks are equal outside ``final_mask_ambiguous_idx``. Arrays a fixture stores as corner
crops (``X_crop_tl`` / ``X_crop_br``) are compared with the same corners of ours. Panoptic fixtures: the semantic
argmax equal outside ``sem_seg_ambiguous_idx``; the panoptic segments the same (kind, class, instance) with the same
scores, their areas equal up to the ambiguous pixels they touch and the map (ids translated, since numbering may
differ) equal outside ``panoptic_ambiguous_idx``. Exits 2 for fixtures whose reference family has no converter yet.
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
from blendseg.modeling.core.fcos_inference import fcos_candidates, rescale_and_clip, select_detections
from blendseg.modeling.core.fuse import fuse as blendseg_fuse
from blendseg.ops.blend import pool_bases
from blendseg.zoo import build_model

LEVEL_NAMES = ["p3", "p4", "p5", "p6", "p7"]


def _capture_last(module: torch.nn.Module, store: list) -> None:
    module.register_forward_hook(lambda _m, _i, out: store.append(out.detach()))


def _fused(model: torch.nn.Module, fuse: bool) -> torch.nn.Module:
    if fuse:
        print(f"fused {blendseg_fuse(model)} batch norms into their convolutions")
    return model


@torch.no_grad()
def run_adelaidet(fixture: Path, device: str = "cpu", fuse: bool = False) -> dict[str, np.ndarray]:
    """Our arrays under the fixture's names, for an AdelaiDet FCOS / BlendMask fixture (the model on ``device``;
    ``fuse``: batch norms folded into their convolutions first)."""
    cfg, state, unmapped = convert_adelaidet(str(fixture / "config.yaml"), str(fixture / "weights.safetensors"))
    if unmapped:
        raise SystemExit(f"converter left {len(unmapped)} keys unmapped, e.g. {unmapped[:3]}")
    model = build_model(cfg.model).eval()
    model.load_state_dict(state, strict=True)
    model = _fused(model, fuse).to(device)
    fcos = getattr(model, "fcos", model)
    feats: list = []
    fcos.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out))
    inner = _capture_children(fcos.backbone)  # e.g. DLA's base_layer, stored by some fixtures for debugging
    box_tower: list = []
    tower = fcos.head.bbox_tower if len(fcos.head.bbox_tower) else fcos.head.share_tower
    if len(tower):
        _capture_last(tower[-1], box_tower)
    inp = np.load(fixture / "input.npz")
    image = torch.from_numpy(inp["image_bgr"]).permute(2, 0, 1).flip(0).float()  # blendseg takes RGB
    out = model([image])
    fout = getattr(out, "fcos", out)
    embeds = fout.dense_embeds(fcos.head)  # BlendMask's attentions are made at the kept locations only
    arrays: dict[str, np.ndarray] = {f"backbone_{k}": v.cpu().numpy() for k, v in {**inner, **feats[0]}.items()}
    if "p2" in fout.features:  # panoptic: P2 feeds the semantic branch only
        arrays["fpn_p2"] = fout.features["p2"].cpu().numpy()
    for i, lvl in enumerate(LEVEL_NAMES[: len(fout.logits)]):
        arrays[f"fpn_{lvl}"] = fout.features[lvl].cpu().numpy()
        arrays[f"head_logits_{lvl}"] = fout.logits[i].cpu().numpy()
        arrays[f"head_bbox_reg_{lvl}"] = fout.box_reg[i].cpu().numpy()
        arrays[f"head_ctrness_{lvl}"] = fout.quality[i].cpu().numpy()
        if box_tower:
            arrays[f"head_bbox_tower_{lvl}"] = box_tower[i].cpu().numpy()
        if embeds is not None:  # BlendMask's attentions / MEInst's codes
            arrays[f"head_top_feats_{lvl}"] = embeds[i].cpu().numpy()
            arrays[f"head_mask_coeffs_{lvl}"] = embeds[i].cpu().numpy()
    c = cfg.model.fcos
    args = (fout.logits, fout.box_reg, fout.quality, embeds, fout.locations, fcos.strides)
    cand = fcos_candidates(*args, c.inference_th, c.pre_nms_topk, c.thresh_with_ctr)[0]
    det = select_detections(cand, c.nms_th, c.post_nms_topk)
    for prefix, d in (("prenms", cand), ("det", det)):
        arrays.update({f"{prefix}_boxes": d.boxes.cpu().numpy(), f"{prefix}_scores": d.scores.cpu().numpy()})
        arrays.update({f"{prefix}_classes": d.labels.cpu().numpy(), f"{prefix}_locations": d.locations.cpu().numpy()})
        arrays[f"{prefix}_fpn_levels"] = d.levels.cpu().numpy()
    if d.embeds is not None:  # as the model decodes them (deferred attentions: made at the kept locations)
        arrays["det_top_feat"] = fcos.decode(fout)[0].embeds.cpu().numpy()
    size = tuple(int(v) for v in inp["image_bgr"].shape[:2])
    _, _, keep = rescale_and_clip(det.boxes, size, size)
    arrays["final_keep_index"] = keep.nonzero().squeeze(1).cpu().numpy()
    final = model.postprocess(out, [size])[0]
    arrays.update({"final_boxes": final.boxes.cpu().numpy(), "final_scores": final.scores.cpu().numpy()})
    arrays["final_classes"] = final.labels.cpu().numpy()
    if hasattr(out, "bases"):
        b = model.cfg.blendmask
        arrays["bases"] = out.bases.cpu().numpy()
        arrays["det_mask_logits"] = model.mask_logits(out.bases, [det])[0].cpu().numpy()
        first = det.boxes[:5]
        rois = (
            pool_bases(
                out.bases,
                first,
                torch.zeros(len(first), dtype=torch.int64, device=first.device),
                b.bottom_resolution,
                b.bases_stride,
            )
            .cpu()
            .numpy()
        )
        arrays.update(det_rois_first5=rois, det_rois_first3=rois[:3])  # fixtures store one or the other
        arrays["final_masks"] = final.masks.to_tensor().cpu().numpy()
    if hasattr(model, "mask_encoding"):  # MEInst
        arrays["det_mask_coeffs"] = det.embeds.cpu().numpy()
        logits = model.mask_encoding.decode(det.embeds).view(-1, model.cfg.meinst.mask_size, model.cfg.meinst.mask_size)
        arrays["det_mask_logits"] = logits.cpu().numpy()
        arrays["det_mask_probs"] = model.mask_probs([det])[0].cpu().numpy()
        arrays["final_masks"] = final.masks.to_tensor().cpu().numpy()
    if final.panoptic is not None:
        arrays.update(_panoptic_arrays(model, out, final, size))
    arrays["__preprocessed"] = fcos.preprocess([image])[0].cpu().numpy()
    return arrays


def _panoptic_arrays(model, out, final, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Panoptic BlendMask: the semantic logits, rows of their postprocessed map (for the fixture's corner crops),
    the semantic argmax, the panoptic map and its segments in the fixture's parallel-array form."""
    from blendseg.ops.panoptic import semantic_logits_rows

    p, pan = model.cfg.panoptic, final.panoptic
    logits = out.panoptic_logits
    arrays = {"sem_seg_logits": logits.cpu().numpy(), "sem_seg_argmax": pan.semantic.cpu().numpy()}
    # the postprocessed (S, H, W) logits are stored as corner crops: rows made on demand, as the model makes them
    arrays["__rows_sem_seg_logits_post"] = lambda a, b: (
        semantic_logits_rows(logits[0], size, size, p.common_stride, (a, b))[None].cpu().numpy()
    )
    info = pan.segments_info
    arrays["panoptic_seg"] = pan.panoptic_seg.cpu().numpy()
    arrays["segments_id"] = np.array([s["id"] for s in info], np.int32)
    arrays["segments_category_id"] = np.array([s["category_id"] for s in info], np.int64)
    arrays["segments_isthing"] = np.array([s["isthing"] for s in info], bool)
    arrays["segments_score"] = np.array([s.get("score", np.nan) for s in info], np.float32)
    arrays["segments_area"] = np.array([int((pan.panoptic_seg == s["id"]).sum()) for s in info], np.int64)
    arrays["segments_instance_id"] = np.array([s.get("instance_id", -1) for s in info], np.int64)
    return arrays


def _crop(ours: dict, name: str, shape: tuple[int, ...], image_hw: tuple[int, int]) -> np.ndarray | None:
    """``X_crop_tl`` / ``X_crop_br``: the top-left / bottom-right corner of our full ``X`` in the last two
    dimensions, sized as the fixture's crop; for maps we only make by rows (``__rows_X(a, b)``), those rows."""
    base, tag = name[: -len("_crop_tl")], name[-2:]
    h, w = shape[-2:]
    full = ours.get(base)
    if full is None and f"__rows_{base}" in ours:
        full = ours[f"__rows_{base}"](*((0, h) if tag == "tl" else (image_hw[0] - h, image_hw[0])))
    if full is None:
        return None
    return full[..., :h, :w] if tag == "tl" else full[..., -h:, -w:]


@torch.no_grad()
def run_yolact(fixture: Path, device: str = "cpu", fuse: bool = False) -> dict[str, np.ndarray]:
    """Our arrays under the fixture's names, for a dbolya/yolact fixture (official preprocessing: bilinear squash
    to max_size without antialiasing, then the model's normalisation; the model on ``device``)."""
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
    model = _fused(model, fuse).to(device)
    feats: list = []
    model.backbone.register_forward_hook(lambda _m, _i, out: feats.append(out))
    inner = _capture_children(model.backbone)  # DarkNet's pre-conv
    pyramid: list = []
    model.fpn.register_forward_hook(lambda _m, _i, out: pyramid.append(out))
    inp = np.load(fixture / "input.npz")
    image = torch.from_numpy(inp["image_bgr"]).permute(2, 0, 1).flip(0).float()
    size = cfg.data.square_size
    x = F.interpolate(image[None], (size, size), mode="bilinear", align_corners=False)[0].to(device)
    out = model([x])
    arrays = {
        "loc": out.loc[0],
        "conf": out.conf[0].softmax(-1),
        "mask_coef": out.dense_coef(model.prediction_layers[0])[0],
        "priors": out.priors,
    }
    arrays["proto"] = out.proto[0]
    for i in range(1, 6):  # C1 (DarkNet) .. C5: the stride-2^i map
        if f"res{i}" in feats[0]:
            arrays[f"dbg_backbone_C{i}_slice"] = feats[0][f"res{i}"][0, :8, :6, :6]
    if "_preconv" in inner:
        arrays["dbg_backbone_preconv_slice"] = inner["_preconv"][0, :8, :6, :6]
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
    arrays.update(boxes=final.boxes.long(), masks=final.masks.to_tensor().to(torch.uint8))
    if model.maskiou_net is not None:
        pred = model.maskiou_net(cropped[:, None])
        arrays.update(maskiou_pred=pred, maskiou_p=pred.gather(1, kept.labels[:, None])[:, 0])
        arrays["mask_scores"] = final.mask_scores
    normalized = (x - model.pixel_mean[:, None, None]) / model.pixel_std[:, None, None]
    arrays["__input_tensor"] = normalized[None]
    return {k: v.cpu().numpy() for k, v in arrays.items()}


def _capture_children(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensor outputs of ``module``'s direct children by name, filled as they run."""
    out: dict[str, torch.Tensor] = {}
    for name, child in module.named_children():
        child.register_forward_hook(lambda _m, _i, o, name=name: out.update({name: o}) if torch.is_tensor(o) else None)
    return out


def _mask_pixel_budget(meta: dict) -> int:
    """Flipped-pixel tolerance for final masks stated in meta.json (``masks: <= ~30 flipped pixels``), else 0."""
    text = str(meta.get("robustness", {}).get("suggested_tolerances", ""))
    m = re.search(r"masks: <= ~?(\d+) flipped pixels", text)
    return int(m.group(1)) if m else 0


def compare(
    fixture: Path, ours: dict[str, np.ndarray], meta: dict, tol_scale: float = 1.0, pixel_slack: int = 0
) -> bool:
    """Every array named in meta.json against ours; ``tol_scale`` multiplies the float tolerances (another device's
    kernels sum in another order), ``pixel_slack`` pixels of a mask or semantic argmax may differ outside the
    fixture's ambiguous ones (a fused model's rounding), integer arrays stay exact."""
    ref = np.load(fixture / "outputs.npz")
    inp = np.load(fixture / "input.npz")
    tol_cfg = meta.get("tolerance")
    names = list(meta.get("outputs", {}).get("arrays", {})) or list(ref.files)
    ok = True
    inputs = [n for n in ("preprocessed", "input_tensor") if n in inp.files]
    names = inputs + names
    budget = _mask_pixel_budget(meta)
    if "panoptic_seg" in names:
        ok &= _compare_panoptic(ref, ours)
    for name in names:
        if name.endswith("_ambiguous_idx") or name == "panoptic_seg" or name.startswith("segments_"):
            continue
        r = inp[name] if name in inputs else ref[name]
        o = ours.get(f"__{name}" if name in inputs else name)
        if o is None and name.endswith(("_crop_tl", "_crop_br")):
            o = _crop(ours, name, r.shape, tuple(inp["image_bgr"].shape[:2]) if "image_bgr" in inp.files else (0, 0))
        if o is None:
            print(f"  {name:28s} NOT PRODUCED")
            ok = False
            continue
        if name in ("final_masks", "sem_seg_argmax"):  # equal outside the pixels the fixture lists as ambiguous
            amb_name = name.replace("_argmax", "").replace("final_masks", "final_mask") + "_ambiguous_idx"
            amb = ref[amb_name] if amb_name in ref.files else np.zeros((0, r.ndim), int)
            diff = _differ_outside(o, r, amb)
            good = diff <= pixel_slack
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
            tol *= tol_scale
            diff = float(np.abs(o.astype(np.float64) - r).max()) if r.size else 0.0
            good = diff <= tol
            print(f"  {name:28s} {'ok ' if good else 'BAD'} max abs diff {diff:.3g} (tolerance {tol:.3g})")
        else:
            good = np.array_equal(o, r)
            print(f"  {name:28s} {'ok ' if good else 'BAD'} {'equal' if good else 'differs'}")
        ok &= bool(good)
    return ok


def _differ_outside(o: np.ndarray, r: np.ndarray, amb: np.ndarray) -> int:
    """Entries where o and r differ, leaving out the (K, ndim) indices ``amb``; -1 when the shapes differ."""
    if o.shape != r.shape:
        return -1
    differ = o != r
    differ[tuple(amb.T)] = False
    return int(differ.sum())


def _segment_keys(arrays) -> list[tuple]:
    """One key per segment that does not depend on its id: (isthing, category, instance) for things, (isthing,
    category) for stuff (one stuff segment per class)."""
    isthing, cat, inst = (arrays[f"segments_{k}"] for k in ("isthing", "category_id", "instance_id"))
    return [(bool(t), int(c), int(i) if t else -1) for t, c, i in zip(isthing, cat, inst)]


def _compare_panoptic(ref, ours: dict[str, np.ndarray]) -> bool:
    """The panoptic map and its segments, segment by segment (ids may be numbered differently): the same segments
    (kind, category, instance), the same scores, areas equal up to the ambiguous pixels they touch, and the same
    map (ids translated) outside ``panoptic_ambiguous_idx``."""
    if "panoptic_seg" not in ours:
        print(f"  {'panoptic_seg':28s} NOT PRODUCED")
        return False
    amb = ref["panoptic_ambiguous_idx"] if "panoptic_ambiguous_idx" in ref.files else np.zeros((0, 2), int)
    rk, ok_ = _segment_keys(ref), _segment_keys(ours)
    same = sorted(rk) == sorted(ok_) and len(set(rk)) == len(rk)
    print(f"  {'segments (kind, class, inst)':28s} {'ok ' if same else 'BAD'} {len(ok_)} vs reference {len(rk)}")
    if not same:
        return False
    to_ref = {int(ours["segments_id"][ok_.index(k)]): int(ref["segments_id"][i]) for i, k in enumerate(rk)}
    pan = ours["panoptic_seg"]
    mapped = np.zeros_like(pan)
    for our_id, ref_id in to_ref.items():
        mapped[pan == our_id] = ref_id
    r = ref["panoptic_seg"]
    differ = mapped != r
    ambiguous = np.zeros_like(differ)
    ambiguous[amb[:, 0], amb[:, 1]] = True
    bad_pixels = int((differ & ~ambiguous).sum())
    good = mapped.shape == r.shape and bad_pixels == 0
    print(f"  {'panoptic_seg':28s} {'ok ' if good else 'BAD'} differing pixels outside ambiguous: {bad_pixels} "
          f"({len(amb)} ambiguous, {int((differ & ambiguous).sum())} of them differ)")  # fmt: skip
    score_diff, area_ok = 0.0, True
    for i, k in enumerate(rk):
        j = ok_.index(k)
        rs, os_ = float(ref["segments_score"][i]), float(ours["segments_score"][j])
        score_diff = max(score_diff, 0.0 if np.isnan(rs) and np.isnan(os_) else abs(rs - os_))
        ref_id = int(ref["segments_id"][i])
        slack = int(((r == ref_id) | (mapped == ref_id))[ambiguous].sum())
        area_ok &= abs(int(ref["segments_area"][i]) - int(ours["segments_area"][j])) <= slack
    scores_ok = score_diff <= 1e-4  # NaN (stuff) on both sides counts as equal
    print(f"  {'segments_score':28s} {'ok ' if scores_ok else 'BAD'} max abs diff {score_diff:.3g} (tolerance 1e-4)")
    print(f"  {'segments_area':28s} {'ok ' if area_ok else 'BAD'} equal up to the ambiguous pixels of each segment")
    return good and scores_ok and area_ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fixture", type=Path)
    p.add_argument("--device", default="cpu", help="where the model runs (cuda: TF32 off)")
    p.add_argument("--tol-scale", type=float, default=1.0, help="multiply the float tolerances (other devices)")
    p.add_argument("--fuse", action="store_true", help="batch norms folded into their convolutions (predict --fuse)")
    p.add_argument("--pixel-slack", type=int, default=0, help="mask / argmax pixels allowed to differ outside the "
                   "fixture's ambiguous ones")  # fmt: skip
    a = p.parse_args()
    meta = json.loads((a.fixture / "meta.json").read_text())
    torch.set_num_threads(1)  # the reference fixtures are made with one thread
    if a.device.startswith("cuda"):  # full float32 convolutions and matmuls, as the reference's fixtures
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if (a.fixture / "config.yaml").is_file():
        arch = meta.get("model", {}).get("meta_architecture", "")
        if arch not in ("BlendMask", "OneStageDetector", "FCOS", ""):
            print(f"{a.fixture}: meta_architecture {arch!r} has no converter")
            return 2
        try:
            ours = run_adelaidet(a.fixture, a.device, a.fuse)
        except (SystemExit, ValueError, RuntimeError) as e:
            print(f"{a.fixture}: cannot convert / run ({e})")
            return 2
    elif (a.fixture / "config.json").is_file():
        try:
            ours = run_yolact(a.fixture, a.device, a.fuse)
        except (SystemExit, ValueError, RuntimeError, KeyError) as e:
            print(f"{a.fixture}: cannot convert / run ({e})")
            return 2
    else:
        print(f"{a.fixture}: neither config.yaml (AdelaiDet) nor config.json (dbolya/yolact)")
        return 2
    print(f"{a.fixture}:")
    ok = compare(a.fixture, ours, meta, a.tol_scale, a.pixel_slack)
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

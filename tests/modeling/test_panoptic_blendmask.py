"""Panoptic BlendMask: the semantic branch's layout and loss, the model contract with panoptic targets and
outputs, and the panoptic result against the combine op applied by hand."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from blendseg.modeling.methods.blendmask_panoptic import SemSegFPNHead, semantic_seg_loss
from blendseg.ops.panoptic import combine_semantic_and_instances, semantic_argmax
from blendseg.zoo import build_model, get_preset

from .test_blendmask import _batch


def _model(num_sem: int = 4):
    cfg = get_preset("blendmask_panoptic_tiny_test").model
    cfg = dataclasses.replace(cfg, panoptic=dataclasses.replace(cfg.panoptic, num_classes=num_sem))
    return build_model(cfg)


def test_semantic_head_has_detectron2_layout():
    head = SemSegFPNHead(["p2", "p3", "p4", "p5"], [256] * 4, [4, 8, 16, 32], 54)  # Base-Panoptic widths
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    convs = ["p2.0", "p3.0", "p4.0", "p4.2", "p5.0", "p5.2", "p5.4"]
    expected = {f"{c}.weight": (128, 256 if c.endswith(".0") else 128, 3, 3) for c in convs}
    expected.update({f"{c}.norm.{p}": (128,) for c in convs for p in ("weight", "bias")})
    expected.update({"predictor.weight": (54, 128, 1, 1), "predictor.bias": (54,)})
    assert shapes == expected  # no conv bias with GN, upsamplings at the odd indices
    feats = [torch.rand(1, 256, 64 // s, 96 // s) for s in (1, 2, 4, 8)]
    assert head(feats).shape == (1, 54, 64, 96)


def test_semantic_loss_by_hand_ignores_void_and_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)  # padded batch 16 x 20 at stride 4
    t0 = torch.randint(0, 3, (16, 20))
    t0[:3] = 255  # void
    t1 = torch.randint(0, 3, (10, 12))  # smaller image: the rest is padding
    loss = semantic_seg_loss(logits, [t0, t1])
    up = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
    terms = []
    for i, t in enumerate((t0, t1)):
        for y in range(t.shape[0]):
            for x in range(t.shape[1]):
                if t[y, x] != 255:
                    terms.append(-up[i, :, y, x].log_softmax(0)[t[y, x]])
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    all_void = semantic_seg_loss(logits, [torch.full((16, 20), 255), torch.full((4, 4), 255)])
    assert float(all_void.detach()) == 0.0 and all_void.requires_grad  # detectron2 would give NaN here


def test_contract_with_panoptic_targets_and_outputs():
    model = _model()
    images, targets = _batch()
    sems = [torch.randint(0, 4, im.shape[-2:], dtype=torch.uint8) for im in images]
    sems[1][:10] = 255
    out = model(images, [dict(t, panoptic_sem=s) for t, s in zip(targets, sems)])
    assert out.panoptic_logits.shape == (2, 4, 96 // 4, 128 // 4)
    assert {"loss_sem_seg", "loss_mask", "loss_basis_sem"} <= set(out.losses)
    sum(out.losses.values()).backward()
    assert model.panoptic_module.p5[0].weight.grad is not None and model.fcos.fpn.fpn_lateral2.weight.grad is not None
    assert "loss_sem_seg" not in model(images, targets).losses  # instance-only targets: no semantic loss
    model.eval()
    out = model(images)
    dets = model.postprocess(out, [(192, 256), (70, 100)])
    for d, size in zip(dets, [(192, 256), (70, 100)]):
        pan = d.panoptic
        assert pan.panoptic_seg.shape == size and pan.semantic.shape == size and pan.panoptic_seg.dtype == torch.int32
        ids = sorted(pan.panoptic_seg.unique().tolist())
        assert set(ids) - {0} == {s["id"] for s in pan.segments_info}
    assert dets[0][dets[0].scores > 2].panoptic is dets[0].panoptic  # a per-image field survives indexing


def test_panoptic_result_is_the_combine_of_the_final_instances():
    model = _model().eval()
    p = model.cfg.panoptic
    model.cfg = dataclasses.replace(
        model.cfg, panoptic=dataclasses.replace(p, instances_confidence_thresh=0.0, stuff_area_limit=10)
    )
    model.fcos.cfg = dataclasses.replace(
        model.fcos.cfg, fcos=dataclasses.replace(model.fcos.cfg.fcos, inference_th=0.0)
    )
    images, _ = _batch()
    out = model(images[:1])
    d = model.postprocess(out, [(96, 128)])[0]
    assert len(d) > 0
    semantic = semantic_argmax(out.panoptic_logits[0], (96, 128), (96, 128))
    seg, info = combine_semantic_and_instances(d.masks, d.scores, d.labels, semantic, p.overlap_thresh, 10, 0.0)
    assert torch.equal(d.panoptic.panoptic_seg, seg) and d.panoptic.segments_info == info
    assert any(s["isthing"] for s in info)


def test_panoptic_needs_the_p2_level():
    cfg = get_preset("blendmask_tiny_test").model
    cfg = dataclasses.replace(cfg, panoptic=dataclasses.replace(cfg.panoptic, enabled=True))
    with pytest.raises(ValueError, match="P2 needs res2"):
        build_model(cfg)

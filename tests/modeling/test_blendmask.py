"""BlendMask: contract, mask-loss normalisation by hand, on-the-fly semantic targets."""

import torch
import torch.nn.functional as F

from blendseg.modeling.methods.blendmask import BlendMaskOutput, basis_semantic_loss, blendmask_mask_loss
from blendseg.ops.blend import blend, pool_bases
from blendseg.ops.masks import crop_and_resize_masks, thing_semantic_map
from blendseg.zoo import build_model, get_preset


def _batch():
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    masks[0, 12:70, 10:60] = 1
    masks[1, 5:40, 40:90] = 1
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 90.0, 40.0]]),
            "labels": torch.tensor([1, 4]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 70, 100, dtype=torch.uint8),
        },
    ]
    return [torch.rand(3, 96, 128) * 255, torch.rand(3, 70, 100) * 255], targets


def test_contract():
    model = build_model(get_preset("blendmask_tiny_test").model)
    images, targets = _batch()
    out = model(images, targets)
    assert set(out.losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_basis_sem"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert model.fcos.head.embed_head.weight.grad is not None and model.basis_module.seg_head[0].weight.grad is not None
    assert model(images).losses == {}
    empty = [
        dict(t, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), masks=t["masks"][:0])
        for t in targets
    ]
    e = model(images, empty)
    assert float(e.losses["loss_mask"].detach()) == 0.0 and torch.isfinite(e.losses["loss_basis_sem"])
    model.eval()
    dets = model.postprocess(model(images), [(192, 256), (70, 100)])
    assert dets[0].masks.shape[1:] == (192, 256) and dets[0].masks.dtype == torch.bool


def test_mask_loss_equals_hand_computation():
    model = build_model(get_preset("blendmask_tiny_test").model)
    images, targets = _batch()
    out: BlendMaskOutput = model(images, targets)
    c = model.cfg.blendmask
    t = out.fcos.targets
    loss = blendmask_mask_loss(out, targets, c)
    attn_all = torch.cat([e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]) for e in out.fcos.embeds])
    total = 0.0
    for q, p in enumerate(t.pos_inds.tolist()):  # one positive at a time
        g = int(t.gt_inds[p])
        box = targets[0]["boxes"][g : g + 1]  # all GTs sit in image 0 here
        rois = pool_bases(out.bases, box, torch.zeros(1, dtype=torch.int64), c.bottom_resolution, c.bases_stride)
        logit = blend(rois, attn_all[p : p + 1], c.top_interp)
        target = crop_and_resize_masks(targets[0]["masks"][g : g + 1], box, c.bottom_resolution)
        total = total + F.binary_cross_entropy_with_logits(logit, target) * t.ctr_targets[q]
    torch.testing.assert_close(loss, total / t.loss_denorm)
    assert len(t.pos_inds) > 2


def test_thing_map_and_semantic_loss():
    masks = torch.zeros(2, 4, 5, dtype=torch.uint8)
    masks[0, :2, :3] = 1
    masks[1, 1:3, 2:4] = 1
    sem = thing_semantic_map(masks, torch.tensor([0, 2]), (8, 8))
    expected = torch.zeros(8, 8, dtype=torch.int64)
    expected[:2, :3] = 1
    expected[1:3, 2:4] = 3  # the later instance is painted over the earlier one
    assert torch.equal(sem, expected)
    logits = torch.randn(1, 4, 1, 1)
    tg = [{"masks": masks, "labels": torch.tensor([0, 2])}]
    # x1/8 nearest of the 8x8 map keeps pixel (0, 0) = class 1
    torch.testing.assert_close(
        basis_semantic_loss(logits, tg, (8, 8)), F.cross_entropy(logits, torch.ones(1, 1, 1, dtype=torch.int64))
    )


def test_paste_quirk_flag_only_changes_border_boxes():
    import dataclasses

    cfg = get_preset("blendmask_tiny_test").model
    cfg = dataclasses.replace(cfg, fcos=dataclasses.replace(cfg.fcos, inference_th=0.0, post_nms_topk=30))
    quirk = build_model(cfg).eval()
    torch.nn.init.constant_(quirk.fcos.head.bbox_pred.bias, 3.0)  # 3 strides each way: some boxes cross the border
    fixed_cfg = dataclasses.replace(cfg, blendmask=dataclasses.replace(cfg.blendmask, paste_in_clipped_box=False))
    fixed = build_model(fixed_cfg).eval()
    fixed.load_state_dict(quirk.state_dict())
    images, _ = _batch()
    a = quirk.postprocess(quirk(images[:1]))[0]
    b = fixed.postprocess(fixed(images[:1]))[0]
    torch.testing.assert_close(a.boxes, b.boxes)
    raw = quirk.fcos.decode(quirk(images[:1]).fcos)[0].boxes
    inside = (raw[:, 0] >= 0) & (raw[:, 1] >= 0) & (raw[:, 2] <= 128) & (raw[:, 3] <= 96)
    assert inside.any() and (~inside).any()
    assert torch.equal(a.masks[inside].to_tensor(), b.masks[inside].to_tensor())  # boxes inside the image: same masks
    assert not torch.equal(
        a.masks[~inside].to_tensor(), b.masks[~inside].to_tensor()
    )  # border-crossing boxes: the quirk shows


def test_ablation_variants_train_and_predict():
    import dataclasses

    import pytest

    base = get_preset("blendmask_tiny_test").model
    variants = [
        dict(blender="assembler", num_bases=4, attn_size=2),  # FCIS analogue: no top layer
        dict(attn_size=1),  # weighted-sum, YOLACT analogue
        dict(num_bases=1),  # one basis, sigmoid on both
        dict(bottom_sampling="nearest", top_interp="nearest"),
    ]
    images, targets = _batch()
    for v in variants:
        cfg = dataclasses.replace(base, blendmask=dataclasses.replace(base.blendmask, **v))
        model = build_model(cfg)
        assert (model.fcos.head.embed_head is None) == (v.get("blender") == "assembler")
        out = model(images, targets)
        assert torch.isfinite(out.losses["loss_mask"]) and float(out.losses["loss_mask"].detach()) > 0, v
        sum(out.losses.values()).backward()
        model.eval()
        assert model.postprocess(model(images))[0].masks is not None
    with pytest.raises(ValueError, match="blender"):
        build_model(dataclasses.replace(base, blendmask=dataclasses.replace(base.blendmask, blender="x")))


def test_bottom_modules_and_inputs_give_their_bases_stride():
    import dataclasses

    import pytest

    base = get_preset("blendmask_tiny_test")
    images, targets = _batch()
    variants = [  # (bottom head change, FPN inputs, expected bases stride)
        (dict(bottom_module="deeplab", bottom_in_features=("res3", "res5"), bases_stride=8), None, 8),  # C3, C5
        (dict(bottom_module="deeplab", bottom_in_features=("p3", "p5"), bases_stride=8), None, 8),
        (dict(bottom_module="deeplab", bottom_in_features=("p2", "p5"), bases_stride=4), ("res2",), 4),  # +s/4
        (dict(bottom_in_features=("p3",)), None, 4),  # Proto-P3
    ]
    for head, extra_in, stride in variants:
        model_cfg = base.model
        if extra_in:
            fpn = dataclasses.replace(model_cfg.fpn, in_features=(*extra_in, *model_cfg.fpn.in_features))
            model_cfg = dataclasses.replace(model_cfg, fpn=fpn)
        model_cfg = dataclasses.replace(model_cfg, blendmask=dataclasses.replace(model_cfg.blendmask, **head))
        model = build_model(model_cfg)
        out = model(images, targets)
        assert out.bases.shape[-2:] == (96 // stride, 128 // stride), head
        assert out.sem_logits is not None and torch.isfinite(out.losses["loss_basis_sem"])
        sum(out.losses.values()).backward()
        grads = [p.grad for p in model.basis_module.parameters() if p.requires_grad]
        assert all(g is not None for g in grads), head
        model.eval()
        with torch.no_grad():
            dets = model.postprocess(model(images[:1]))
        assert dets[0].masks.shape[-2:] == (96, 128)
    bad = dataclasses.replace(base.model.blendmask, bottom_module="deeplab", bottom_in_features=("p3", "p5"))
    with pytest.raises(ValueError, match="bases_stride is 4"):
        build_model(dataclasses.replace(base.model, blendmask=bad))
    bad = dataclasses.replace(base.model.blendmask, bottom_in_features=("p2",))
    with pytest.raises(ValueError, match=r"\['p2'\] are not produced"):
        build_model(dataclasses.replace(base.model, blendmask=bad))


def test_semantic_loss_uses_the_pipeline_map_when_given():
    masks = torch.zeros(1, 16, 16, dtype=torch.uint8)
    masks[0, :8] = 1
    sem = torch.zeros(16, 16, dtype=torch.uint8)
    sem[8:] = 3  # e.g. a crowd region the instance targets do not carry
    logits = torch.randn(1, 4, 2, 2)
    tg = {"masks": masks, "labels": torch.tensor([0])}
    from_masks = basis_semantic_loss(logits, [tg], (16, 16))
    from_map = basis_semantic_loss(logits, [{**tg, "sem_seg": sem}], (16, 16))
    torch.testing.assert_close(from_masks, F.cross_entropy(logits, torch.tensor([[[1, 1], [0, 0]]])))
    torch.testing.assert_close(from_map, F.cross_entropy(logits, torch.tensor([[[0, 0], [3, 3]]])))


def test_training_gradients_repeat_bit_for_bit_on_two_threads():
    """The same batch's gradients are bitwise equal pass after pass with 2 CPU threads. The blender's pooled bases
    are gathered per positive (many positives share a GT); gathered by indexing, their backward added the repeated
    rows with atomics in thread order, and two same-seed training runs drifted apart (issue 23)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = build_model(get_preset("blendmask_tiny_test").model)
        boxes = torch.tensor([[8.0, 8, 120, 120], [100, 20, 250, 200], [30, 130, 200, 250], [150, 150, 250, 250]])
        masks = torch.zeros(4, 256, 256, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = 1
        target = {"boxes": boxes, "labels": torch.tensor([0, 1, 2, 3]), "masks": masks}
        images, targets = [torch.rand(3, 256, 256) * 255] * 2, [target, target]  # 76 positives on 8 GTs
        grads = []
        for _ in range(6):
            model.zero_grad()
            sum(model(images, targets).losses.values()).backward()
            grads.append(model.basis_module.tower[-1].weight.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])

"""The model contract (style-anchors §8, principle 12) on the tiny test preset."""

import dataclasses

import pytest
import torch

from blendseg.modeling.core.fcos import FCOSOutput
from blendseg.structures import pad_images
from blendseg.zoo import build_model, get_preset


def _model(**fcos):
    cfg = get_preset("fcos_tiny_test").model
    if fcos:
        cfg = dataclasses.replace(cfg, fcos=dataclasses.replace(cfg.fcos, **fcos))
    return build_model(cfg)


def _targets():
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 90.0, 40.0]]),
            "labels": torch.tensor([1, 4]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def _images():
    return [torch.rand(3, 96, 128) * 255, torch.rand(3, 70, 100) * 255]  # mixed sizes


@pytest.mark.parametrize("train_mode", [True, False])
def test_losses_exactly_when_targets_given(train_mode):
    model = _model().train(train_mode)
    out = model(_images(), _targets())
    assert isinstance(out, FCOSOutput)
    assert set(out.losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert model(_images()).losses == {}
    assert out.image_sizes == [(96, 128), (70, 100)]
    assert out.logits[0].shape[-2:] == (96 // 8, 128 // 8)


def test_empty_targets_give_finite_losses_with_zero_box_terms():
    model = _model()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    out = model(_images(), empty)
    assert torch.isfinite(out.losses["loss_fcos_cls"]) and out.losses["loss_fcos_cls"] > 0
    assert float(out.losses["loss_fcos_loc"].detach()) == 0.0 and float(out.losses["loss_fcos_ctr"].detach()) == 0.0
    sum(out.losses.values()).backward()
    grads = [p.grad for p in model.head.bbox_pred.parameters()]
    assert all(g is not None for g in grads)  # still in the graph (DDP needs every parameter used)


def test_postprocess_zero_detections_and_original_sizes():
    model = _model(inference_th=1.0).eval()
    out = model(_images())
    dets = model.postprocess(out, [(192, 256), (140, 200)])
    assert [len(d) for d in dets] == [0, 0]
    model = _model(inference_th=0.0, post_nms_topk=7).eval()
    out = model(_images())
    same = model.postprocess(out, [(96, 128), (70, 100)])  # original size = network input size: boxes as decoded
    assert all(0 < len(d) <= 20 for d in same)  # ties may keep a few more than 7
    # originals 2x wider and 3x taller than what the network saw: every box scales by exactly that, x and y apart
    dets = model.postprocess(out, [(288, 256), (210, 200)])
    for d, s, (h, w) in zip(dets, same, [(288, 256), (210, 200)]):
        assert len(d) == len(s)
        torch.testing.assert_close(d.boxes, s.boxes * torch.tensor([2.0, 3.0, 2.0, 3.0]))
        assert float(d.boxes[:, 0::2].max()) <= w and float(d.boxes[:, 1::2].max()) <= h


def test_image_batch_input_equals_list_input():
    model = _model().eval()
    ims = _images()
    a = model(ims[:1])
    b = model(pad_images(ims[:1], 32))
    torch.testing.assert_close(a.logits[0], b.logits[0])


def test_padding_is_zero_after_normalisation():
    model = _model()
    ims = _images()
    x, sizes = model.preprocess(ims)
    assert x.shape[-2:] == (96, 128)
    assert float(x[1, :, 70:, :].abs().max()) == 0.0 and float(x[1, :, :, 100:].abs().max()) == 0.0


def test_autocast_bf16_on_cpu():
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_images(), _targets())
    assert all(torch.isfinite(v.float()) for v in out.losses.values())


@pytest.mark.parametrize("norm", ["GN", "BN", "none"])
def test_head_norm_variants_and_quality(norm):
    model = _model(norm=norm, box_quality="iou" if norm == "none" else "ctrness")
    out = model(_images(), _targets())
    assert all(torch.isfinite(v) for v in out.losses.values())
    if norm == "BN":  # one BN per level, as AdelaiDet's ModuleListDial
        assert isinstance(model.head.cls_tower[1], torch.nn.ModuleList)
        assert len(model.head.cls_tower[1]) == len(model.strides)


def test_deformable_head_towers():
    model = _model(use_deformable=True)
    assert type(model.head.cls_tower[-3]).__name__ == "DFConv2d"  # the last conv of each tower
    out = model(_images(), _targets())
    sum(out.losses.values()).backward()
    assert model.head.bbox_tower[-3].offset.weight.grad is not None

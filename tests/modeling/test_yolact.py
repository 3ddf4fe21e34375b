"""YOLACT: contract, matching rules on hand-built boxes, OHEM, loss normalisations by hand, YOLACT++ parts."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from blendseg.modeling.methods.yolact import YolactOutput
from blendseg.modeling.methods.yolact_loss import match, ohem_conf_loss
from blendseg.ops.anchors import encode_boxes
from blendseg.ops.masks import crop_masks
from blendseg.zoo import build_model, get_preset


def _batch(size=128):
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 10:60, 20:70] = 1
    masks[1, 70:120, 60:125] = 1
    t0 = {"boxes": torch.tensor([[20.0, 10, 70, 60], [60, 70, 125, 120]]), "labels": torch.tensor([1, 3]),
          "masks": masks, "crowd_boxes": torch.zeros(0, 4)}  # fmt: skip
    t1 = {"boxes": torch.tensor([[5.0, 5, 40, 50]]), "labels": torch.tensor([0]), "masks": masks[:1].clone() * 0,
          "crowd_boxes": torch.tensor([[60.0, 60, 128, 128]])}  # fmt: skip
    t1["masks"][0, 5:50, 5:40] = 1
    return [torch.rand(3, size, size) * 255, torch.rand(3, size, size) * 255], [t0, t1]


@pytest.mark.parametrize("preset", ["yolact_tiny_test"])
def test_contract(preset):
    model = build_model(get_preset(preset).model)
    images, targets = _batch()
    out = model(images, targets)
    assert isinstance(out, YolactOutput)
    assert set(out.losses) == {"loss_box", "loss_cls", "loss_mask", "loss_sem"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    assert model(images).losses == {}
    dets = model.postprocess(model(images), [(100, 150), (128, 128)])
    assert dets[0].masks.shape[1:] == (100, 150) and dets[0].masks.dtype == torch.bool
    assert (dets[0].boxes[:, 2] <= 150).all() and torch.equal(dets[0].boxes, dets[0].boxes.round())


def test_matching_rules_on_hand_built_boxes():
    # priors (cx, cy, w, h): 0 = the GT exactly, 1 = IoU 0.45 (neutral), 2 = far (background), 3 = inside a crowd
    priors = torch.tensor([
        [0.25, 0.25, 0.2, 0.2], [0.25 + 0.2 * 0.3793, 0.25, 0.2, 0.2], [0.8, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1],
    ])  # fmt: skip
    truths = torch.tensor([[0.15, 0.15, 0.35, 0.35], [0.76, 0.16, 0.78, 0.18]])  # GT 1: tiny, IoU 0.04 at best
    crowd = torch.tensor([[0.7, 0.7, 1.0, 1.0]])
    conf, idx = match(truths, torch.tensor([4, 2]), priors, 0.5, 0.4, crowd, 0.7)
    assert conf[0] == 5 and idx[0] == 0  # label + 1
    assert conf[1] == -1  # 0.4 <= IoU < 0.5: neutral
    assert conf[2] == 3 and idx[2] == 1  # the tiny GT still gets its best prior (forced one-to-one match)
    assert conf[3] == -1  # background prior covered by a crowd (IoF 1 > 0.7): neutral
    conf, _ = match(truths, torch.tensor([4, 2]), priors, 0.5, 0.4, None)
    assert conf[3] == 0


def test_ohem_takes_three_negatives_per_positive_per_image():
    conf = torch.randn(2, 50, 4)
    conf_t = torch.zeros(2, 50, dtype=torch.int64)
    conf_t[0, :2] = 1
    conf_t[0, 2:5] = -1  # neutrals never selected
    conf_t[1, 0] = 2
    loss = ohem_conf_loss(conf, conf_t, 3)
    expected = 0.0
    for i, npos in ((0, 2), (1, 1)):
        rank = torch.logsumexp(conf[i], 1) - conf[i, :, 0]
        rank[conf_t[i] != 0] = -1
        neg = rank.argsort(descending=True)[: 3 * npos]
        sel = torch.cat([(conf_t[i] > 0).nonzero()[:, 0], neg])
        expected = expected + F.cross_entropy(conf[i, sel], conf_t[i, sel], reduction="sum")
    torch.testing.assert_close(loss, expected)
    low = conf.bfloat16()  # logits of a bf16 autocast: the loss in float32 all the same (as F.cross_entropy's)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(ohem_conf_loss(low, conf_t, 3), ohem_conf_loss(low.float(), conf_t, 3))


@pytest.mark.parametrize("masks_to_train", [100, 2])
def test_mask_and_semantic_loss_normalisation_by_hand(monkeypatch, masks_to_train):
    cfg = get_preset("yolact_tiny_test").model
    cfg = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, masks_to_train=masks_to_train))
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.arange(n))  # the subsample keeps the first ones
    model = build_model(cfg)
    images, targets = _batch()
    out = model(images, targets)
    c = cfg.yolact
    H = W = 128
    scale = torch.tensor([W, H, W, H], dtype=torch.float32)
    h, w = out.proto.shape[1:3]
    total_pos, mask_sum = 0, 0.0
    for i, tg in enumerate(targets):
        truths = tg["boxes"] / scale
        crowd = tg["crowd_boxes"] / scale
        conf, idx = match(truths, tg["labels"], out.priors, c.pos_iou, c.neg_iou, crowd, c.crowd_iof)
        q = (conf > 0).nonzero()[:, 0]
        total_pos += len(q)
        gt = (F.interpolate(tg["masks"][None].float(), (h, w), mode="bilinear") > 0.5).float()[0]
        rescale = max(len(q) / masks_to_train, 1.0)  # old_num_pos / num_pos when subsampled
        assert masks_to_train == 100 or rescale > 1  # the subsampling really happens in the 2-mask case
        for p in q[:masks_to_train].tolist():  # one positive at a time: mean BCE over its GT box (proto pixels)
            box = truths[idx[p]]
            pred = crop_masks(torch.sigmoid(out.proto[i] @ out.coef[i, p])[None], box[None])[0]
            bce = F.binary_cross_entropy(pred, gt[idx[p]], reduction="sum")
            mask_sum = mask_sum + bce / ((box[2] - box[0]) * w * (box[3] - box[1]) * h) * rescale
    torch.testing.assert_close(out.losses["loss_mask"], mask_sum * c.mask_alpha / total_pos)
    sem = 0.0
    for i, tg in enumerate(targets):
        sh, sw = out.sem_logits.shape[-2:]
        gt = (F.interpolate(tg["masks"][None].float(), (sh, sw), mode="bilinear") > 0.5).float()[0]
        seg_t = torch.zeros_like(out.sem_logits[i])
        for m, lab in zip(gt, tg["labels"]):
            seg_t[lab] = torch.maximum(seg_t[lab], m)
        sem = sem + F.binary_cross_entropy_with_logits(out.sem_logits[i], seg_t, reduction="sum") / (sh * sw)
    torch.testing.assert_close(out.losses["loss_sem"], sem / 2)


def test_box_loss_uses_encoded_targets():
    model = build_model(get_preset("yolact_tiny_test").model)
    images, targets = _batch()
    out = model(images, targets)
    # the box loss: smooth-L1 of the positives' offsets vs encode(matched GT), x 1.5, / positives
    truths = targets[0]["boxes"] / 128
    conf, idx = match(truths, targets[0]["labels"], out.priors, 0.5, 0.4, targets[0]["crowd_boxes"] / 128)
    pos = conf > 0
    b0 = F.smooth_l1_loss(out.loc[0][pos], encode_boxes(truths[idx[pos]], out.priors[pos]), reduction="sum")
    truths1 = targets[1]["boxes"] / 128
    conf1, idx1 = match(truths1, targets[1]["labels"], out.priors, 0.5, 0.4, targets[1]["crowd_boxes"] / 128)
    pos1 = conf1 > 0
    b1 = F.smooth_l1_loss(out.loc[1][pos1], encode_boxes(truths1[idx1[pos1]], out.priors[pos1]), reduction="sum")
    torch.testing.assert_close(out.losses["loss_box"], (b0 + b1) * 1.5 / (pos.sum() + pos1.sum()))


def test_yolact_plus_rescoring_and_maskiou_loss():
    cfg = get_preset("yolact_tiny_test").model
    plus = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, maskiou=True, discard_mask_area=25))
    model = build_model(plus)
    images, targets = _batch(256)
    for t in targets:  # scale the hand-built instances to 256 px
        t["boxes"] = t["boxes"] * 2
        t["crowd_boxes"] = t["crowd_boxes"] * 2
        t["masks"] = t["masks"].repeat_interleave(2, 1).repeat_interleave(2, 2)
    out = model(images, targets)
    assert "loss_maskiou" in out.losses and torch.isfinite(out.losses["loss_maskiou"])
    sum(out.losses.values()).backward()
    assert model.maskiou_net.maskiou_net[0].weight.grad is not None
    huge = dataclasses.replace(plus, yolact=dataclasses.replace(plus.yolact, discard_mask_area=10**6))
    model2 = build_model(huge)
    out2 = model2(images, targets)
    assert float(out2.losses["loss_maskiou"].detach()) == 0.0  # every mask discarded (<= area rule), still in the graph
    model.eval()
    d = model.postprocess(model(images))[0]
    assert d.mask_scores is not None and (d.mask_scores <= d.scores + 1e-6).all()


def _crafted(raw: YolactOutput) -> YolactOutput:
    """``raw`` with detections written in: priors 0-2 of label 1 (scores 0.9, 0.8, 0.7) on boxes A, B, C in a row
    (IoU A-B = B-C = 0.6, A-C = 0.33), prior 3 far away of label 2 (0.5) with a label-3 score of 0.03; every other
    prior background."""
    boxes = torch.tensor([[0.10, 0.10, 0.30, 0.30], [0.15, 0.10, 0.35, 0.30], [0.20, 0.10, 0.40, 0.30],
                          [0.60, 0.60, 0.80, 0.80]])  # fmt: skip
    loc = torch.zeros_like(raw.loc)
    loc[0, :4] = encode_boxes(boxes, raw.priors[:4])
    probs = torch.zeros(raw.conf.shape[1:])  # (P, 1 + C): background first
    probs[:, 0] = 1.0
    for p, per_label in enumerate([{1: 0.9}, {1: 0.8}, {1: 0.7}, {2: 0.5, 3: 0.03}]):
        for label, score in per_label.items():
            probs[p, 1 + label] = score
        probs[p, 0] = 1.0 - sum(per_label.values())
    conf = probs.clamp(min=1e-13).log()[None]  # softmax gives the probabilities back
    return dataclasses.replace(raw, loc=loc, conf=conf)


def test_fast_nms_standard_nms_and_the_second_threshold_on_a_crafted_case():
    """Fast NMS (official) lets the suppressed B still suppress C; standard NMS keeps C. Fast NMS also keeps the
    per-class score 0.03 of a candidate prior (below nms_conf_thresh 0.05, official); ``second_threshold`` drops
    it. (Scores under 1e-6, the other labels of the candidate priors, are left out of the comparison.)"""
    cfg = get_preset("yolact_tiny_test").model
    images, _ = _batch()
    model = build_model(cfg).eval()
    raw = _crafted(model(images[:1]))
    found = {}
    for name, head in (("fast", {}), ("standard", dict(nms="standard")), ("second", dict(second_threshold=True))):
        model.cfg = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, **head))
        d = model.detect(raw)[0]
        found[name] = sorted((int(p), int(label), round(float(s), 2)) for p, label, s in
                             zip(d.prior_inds, d.labels, d.scores) if s > 1e-6)  # fmt: skip
    assert found["fast"] == [(0, 1, 0.9), (3, 2, 0.5), (3, 3, 0.03)]  # C gone with B; the 0.03 kept
    assert found["standard"] == [(0, 1, 0.9), (2, 1, 0.7), (3, 2, 0.5)]  # C restored; nothing under 0.05
    assert found["second"] == [(0, 1, 0.9), (3, 2, 0.5)]
    model.cfg = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, nms_conf_thresh=1.0))  # nothing
    d = model.postprocess(raw, [(50, 60)])[0]
    assert len(d) == 0 and d.masks.shape == (0, 50, 60) and d.boxes.shape == (0, 4)
    model.cfg = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, nms="bogus"))
    with pytest.raises(ValueError, match="yolact.nms"):
        model.detect(raw)


def test_robustness_flags_drop_tiny_boxes_and_clamp_decode():
    from blendseg.ops.anchors import decode_boxes

    priors = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    huge = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    width = lambda b: float(b[0, 2] - b[0, 0])  # noqa: E731
    assert width(decode_boxes(huge, priors)) > 250  # official: unclamped exp (0.1 * e^8)
    assert width(decode_boxes(huge, priors, clamp=True)) <= 0.1 * 1000 / 16 + 1e-5
    cfg = get_preset("yolact_tiny_test").model
    images, targets = _batch()
    targets[1]["boxes"] = torch.tensor([[5.0, 5, 7, 50]])  # 2 px wide: the image's only instance
    targets[1]["masks"] = torch.zeros_like(targets[1]["masks"])
    targets[1]["masks"][0, 5:50, 5:7] = 1
    absent = [targets[0], {**targets[1], "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                           "masks": targets[1]["masks"][:0]}]  # fmt: skip
    model = build_model(cfg)
    losses = {}
    for name, px, tg in (("plain", 0.0, targets), ("flagged", 4.0, targets), ("absent", 4.0, absent)):
        model.cfg = dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, discard_box_px=px))
        losses[name] = model(images, tg).losses
    # with the flag the 2 px box is dropped before matching: every loss as if the image had no instance
    for k, v in losses["absent"].items():
        torch.testing.assert_close(losses["flagged"][k], v, msg=k)
    assert all(torch.isfinite(v) for v in losses["plain"].values())
    assert not torch.equal(losses["plain"]["loss_box"], losses["flagged"]["loss_box"])  # kept: it is matched

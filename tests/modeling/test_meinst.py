"""MEInst: contract, encoding fitted before training, mask-loss normalisation by hand, loss / encoding variants
(the parity command: tests/test_parity_tool.py)."""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blendseg.modeling.core.fcos_loss import flatten_levels
from blendseg.modeling.methods.meinst import MEInstOutput
from blendseg.ops.masks import crop_and_resize_masks
from blendseg.zoo import build_model, get_preset

from .test_blendmask import _batch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "parity.py"


def _fitted(**head):
    cfg = get_preset("meinst_tiny_test").model
    if head:
        cfg = dataclasses.replace(cfg, meinst=dataclasses.replace(cfg.meinst, **head))
    model = build_model(cfg)
    d, p = model.mask_encoding.dim, model.mask_encoding.components.shape[1]
    q, _ = torch.linalg.qr(torch.randn(p, d))
    model.mask_encoding.load_fit(q.t().contiguous(), torch.linspace(20, 1, d), torch.randn(p))
    return model


def test_contract_and_unfitted_encoding_is_refused():
    images, targets = _batch()
    raw = build_model(get_preset("meinst_tiny_test").model)
    with pytest.raises(RuntimeError, match="not fitted"):
        raw(images, targets)
    model = _fitted()
    out = model(images, targets)
    assert isinstance(out, MEInstOutput)
    assert set(out.losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), "unused parameters"
    assert model.mask_encoding.components.grad is None  # buffers: not trained
    model.eval()
    assert model(images).losses == {}
    dets = model.postprocess(model(images), [(48, 64), (70, 100)])
    assert dets[0].masks.shape[1:] == (48, 64)
    assert "mask_encoding.components" in model.state_dict()  # the encoding travels in the checkpoint


@pytest.mark.parametrize("loss", ["mse", "l1", "smooth_l1"])
def test_mask_loss_normalisation_by_hand(loss):
    model = _fitted(mask_loss=loss)
    images, targets = _batch()
    torch.manual_seed(3)
    out = model(images, targets)
    t, c = out.fcos.targets, model.cfg.meinst
    torch.manual_seed(3)  # same jitter draw for the hand computation
    preds = flatten_levels(out.fcos.embeds)[t.pos_inds]
    gt = crop_and_resize_masks(targets[0]["masks"], targets[0]["boxes"], 28)[t.gt_inds[t.pos_inds]].flatten(1)
    codes = model.mask_encoding.encode(gt)
    fn = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[loss]
    total = sum(fn(preds[i], codes[i], reduction="sum") * t.ctr_targets[i] for i in range(len(preds)))
    expected = total / torch.clamp(t.loss_denorm * c.dim_mask, min=1.0)
    torch.testing.assert_close(out.losses["loss_mask"], expected)  # same jitter draw: the RNG is only used there


@pytest.mark.parametrize(
    "head", [dict(mask_loss="cosine"), dict(encoding="implicit"), dict(encoding="none"), dict(mask_pred="large_kernel")]
)
def test_variants_train_and_predict(head):
    model = _fitted(**head)
    images, targets = _batch()
    out = model(images, targets)
    assert torch.isfinite(out.losses["loss_mask"]) and float(out.losses["loss_mask"].detach()) > 0
    sum(out.losses.values()).backward()
    model.eval()
    d = model.postprocess(model(images[:1]))[0]
    assert d.masks is not None
    if head.get("encoding") == "none":
        assert model.fcos.head.embed_head.mask_pred.out_channels == 28 * 28


def test_fitting_on_too_few_masks_is_a_clear_error(synth_data):
    from blendseg.data.coco import CocoInstances
    from blendseg.data.encoding import fit_encoding
    from blendseg.data.sources import load_data
    from blendseg.errors import DataError

    split = load_data(synth_data).splits["val"]
    ds = CocoInstances(split.annotations, split.images)
    with pytest.raises(DataError, match="needs more masks than dimensions"):
        fit_encoding(ds, dim=10_000)
    fit = fit_encoding(ds, dim=8)
    assert fit["components"].shape == (8, 784) and 0.5 < fit["reconstruction_miou"] <= 1.0
    assert float(fit["explained_variance_ratio"].sum()) < 1.0

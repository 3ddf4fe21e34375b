"""AdelaiDet converter: numeric parity of the shared core on the reference fixture, and released key layouts."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from blendseg.config import BackboneConfig, BlendMaskConfig, BlendMaskHeadConfig, FCOSConfig, FPNConfig
from blendseg.convert.adelaidet import convert_adelaidet, d2_to_train_config, load_d2_yaml, map_key
from blendseg.zoo import build_model

from ..conftest import reference_dir

LEVELS = ["p3", "p4", "p5", "p6", "p7"]


def _tol(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def blendmask_fixture():
    d = reference_dir("blendmask_r18_tiny")
    cfg, state, unmapped = convert_adelaidet(str(d / "config.yaml"), str(d / "weights.safetensors"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was made with one thread
    blendmask = build_model(cfg.model).eval()
    blendmask.load_state_dict(state, strict=True)
    assert unmapped == []
    inp, outs = np.load(d / "input.npz"), np.load(d / "outputs.npz")
    image = torch.from_numpy(inp["image_bgr"]).permute(2, 0, 1).flip(0).float()  # our input is RGB
    with torch.no_grad():
        bout = blendmask([image])
    yield cfg, blendmask.fcos, image, inp, outs, bout.fcos, blendmask, bout
    torch.set_num_threads(threads)


def test_config_mapping(blendmask_fixture):
    cfg = blendmask_fixture[:6][0]
    assert cfg.model.backbone.depth == 18 and cfg.model.backbone.res2_out_channels == 64
    assert cfg.model.fpn.out_channels == 64 and cfg.model.fpn.top_levels == 2
    assert cfg.model.fcos.use_scale is False and cfg.model.fcos.thresh_with_ctr is True
    assert cfg.model.fcos.inference_th == pytest.approx(0.704)
    assert cfg.data.min_size_train == (640, 672, 704, 736, 768, 800)
    assert cfg.data.with_masks and cfg.data.with_sem_seg == cfg.model.blendmask.basis_loss_on
    assert cfg.model.blendmask.bottom_in_features == ("p3", "p4", "p5")


def test_preprocessing_and_backbone_match(blendmask_fixture):
    _, model, image, inp, outs, out = blendmask_fixture[:6]
    x, _ = model.preprocess([image])
    np.testing.assert_array_equal(x.numpy(), inp["preprocessed"])
    with torch.no_grad():
        feats = model.backbone(x)
    for name in ("res3", "res4", "res5"):
        ref = outs[f"backbone_{name}"]
        assert np.abs(feats[name].numpy() - ref).max() <= _tol(ref), name


def test_fpn_and_head_outputs_match_per_level(blendmask_fixture):
    _, _, _, _, outs, out = blendmask_fixture[:6]
    for i, lvl in enumerate(LEVELS):
        for key, ours in (
            (f"fpn_{lvl}", out.features[lvl]),
            (f"head_logits_{lvl}", out.logits[i]),
            (f"head_bbox_reg_{lvl}", out.box_reg[i]),
            (f"head_ctrness_{lvl}", out.quality[i]),
        ):
            ref = outs[key]
            assert ours.shape == ref.shape, key
            assert np.abs(ours.numpy() - ref).max() <= _tol(ref), key


def test_detections_match(blendmask_fixture):
    _, model, _, _, outs, out = blendmask_fixture[:6]
    det = model.decode(out)[0]
    assert det.labels.tolist() == outs["det_classes"].tolist()
    assert np.abs(det.boxes.numpy() - outs["det_boxes"]).max() <= _tol(outs["det_boxes"])
    assert np.abs(det.scores.numpy() - outs["det_scores"]).max() <= _tol(outs["det_scores"])
    np.testing.assert_array_equal(det.locations.numpy(), outs["det_locations"])
    assert det.levels.tolist() == outs["det_fpn_levels"].tolist()
    # loc_inds index the image's concatenated locations: they give back each detection's location
    np.testing.assert_array_equal(torch.cat(out.locations)[det.loc_inds].numpy(), outs["det_locations"])
    final = model.postprocess(out, [(256, 320)])[0]
    keep = outs["final_keep_index"]
    assert final.labels.tolist() == outs["final_classes"][: len(keep)].tolist()
    assert np.abs(final.boxes.numpy() - outs["final_boxes"][: len(keep)]).max() <= _tol(outs["final_boxes"])


def test_blendmask_bases_attentions_masks_match(blendmask_fixture):
    *_, outs, fout, blendmask, bout = blendmask_fixture
    assert np.abs(bout.bases.numpy() - outs["bases"]).max() <= _tol(outs["bases"])
    for i, lvl in enumerate(LEVELS[1:], start=1):  # P3's dense attention map is not stored (size)
        ref = outs[f"head_top_feats_{lvl}"]
        assert np.abs(fout.dense_embeds(blendmask.fcos.head)[i].detach().numpy() - ref).max() <= _tol(ref), lvl
    det = blendmask.fcos.decode(fout)[0]
    assert np.abs(det.embeds.numpy() - outs["det_top_feat"]).max() <= _tol(outs["det_top_feat"])
    logits = blendmask.mask_logits(bout.bases, [det])[0].numpy()
    assert np.abs(logits - outs["det_mask_logits"]).max() <= _tol(outs["det_mask_logits"])
    final = blendmask.postprocess(bout, [(256, 320)])[0]
    masks, ref = final.masks.to_tensor().numpy(), outs["final_masks"].copy()
    amb = outs["final_mask_ambiguous_idx"]
    masks[amb[:, 0], amb[:, 1], amb[:, 2]] = False
    ref[amb[:, 0], amb[:, 1], amb[:, 2]] = False
    assert masks.shape == ref.shape and np.array_equal(masks, ref)


def _config_for_layout(sd: dict[str, dict]) -> BlendMaskConfig:
    """Our model config for a released layout (what the released YAML sets), read off its keys."""
    dla = "backbone.bottom_up.level5.root.conv.weight" in sd
    res4 = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", k))}
    depth = 34 if dla else {6: 50, 23: 101}[len(res4)]
    deform = tuple(
        any(k.startswith(f"backbone.bottom_up.res{s}.") and "conv2_offset" in k for k in sd) for s in (2, 3, 4, 5)
    )
    tower = lambda name: len({k.split(".")[3] for k in sd if f"fcos_head.{name}." in k and len(sd[k]["shape"]) == 4})  # noqa: E731
    norm_key = next((k for k in sd if re.match(r"proposal_generator\.fcos_head\.\w+_tower\.1\.", k)), "")
    norm = "BN" if "running_mean" in "".join(k for k in sd if k.startswith(norm_key.rsplit(".", 2)[0])) else "GN"
    top = sum(f"backbone.top_block.p{i}.weight" in sd for i in (6, 7))
    strides = (8, 16, 32, 64, 128)[: 3 + top]
    bn_backbone = "backbone.bottom_up.stem.conv1.norm.num_batches_tracked" in sd
    tower_blocks = {int(k.split(".")[2]) for k in sd if re.match(r"basis_module\.tower\.\d+\.0\.weight", k)}
    basis = BlendMaskHeadConfig(
        basis_num_convs=len(tower_blocks) - 1,
        basis_convs_dim=sd["basis_module.refine.0.0.weight"]["shape"][0],
        basis_norm="BN" if "basis_module.refine.0.1.running_mean" in sd else "GN",
        basis_loss_on="basis_module.seg_head.0.weight" in sd,
    )
    return BlendMaskConfig(
        blendmask=basis,
        backbone=BackboneConfig(
            depth=depth, norm="BN" if bn_backbone or dla else "FrozenBN", freeze_at=0,
            deform_on_per_stage=deform, deform_modulated=True, deform_interval=3 if any(deform) else 1,
            name="dla" if dla else "resnet",
        ),
        fpn=FPNConfig(256, top, in_features=("level3", "level4", "level5") if dla else ("res3", "res4", "res5")),
        fcos=FCOSConfig(
            strides=strides, num_cls_convs=tower("cls_tower"), num_box_convs=tower("bbox_tower"),
            num_share_convs=tower("share_tower"), norm=norm, use_scale=any(".scales." in k for k in sd),
        ),
    )  # fmt: skip


def test_every_key_of_the_released_blendmask_layouts_maps():
    layouts = json.loads((reference_dir() / "state_dict_layouts.json").read_text())["configs"]
    checked = 0
    for name, entry in layouts.items():
        if "state_dict" not in entry:
            continue
        sd = entry["state_dict"]
        if entry["meta_architecture"] != "BlendMask":
            continue  # MEInst: test_meinst_presets_have_the_released_layouts
        ours = build_model(_config_for_layout(sd)).state_dict()
        mapped = {map_key(k, "blendmask"): v for k, v in sd.items()}
        assert None not in mapped, name
        assert sorted(set(mapped)) == sorted(ours), name
        for k, v in mapped.items():
            assert list(ours[k].shape) == v["shape"], (name, k)
        checked += 1
    assert checked == 7  # DLA-34 included


def test_base_resolution(tmp_path):
    (tmp_path / "Base.yaml").write_text(
        "MODEL:\n  FCOS:\n    NUM_CLASSES: 3\n    NMS_TH: 0.5\nSOLVER:\n  MAX_ITER: 10\n"
    )
    (tmp_path / "child.yaml").write_text("_BASE_: Base.yaml\nMODEL:\n  FCOS:\n    NMS_TH: 0.7\n")
    merged = load_d2_yaml(tmp_path / "child.yaml")
    assert merged == {"MODEL": {"FCOS": {"NUM_CLASSES": 3, "NMS_TH": 0.7}}, "SOLVER": {"MAX_ITER": 10}}
    assert dataclasses.asdict(FCOSConfig())["nms_th"] == 0.6


def test_panoptic_fixture_config_and_keys_map_with_nothing_left_over():
    d = reference_dir("blendmask_panoptic_tiny")
    cfg, state, unmapped = convert_adelaidet(str(d / "config.yaml"), str(d / "weights.safetensors"))
    assert unmapped == []
    p = cfg.model.panoptic
    assert p.enabled and (p.num_classes, p.convs_dim, p.loss_weight) == (54, 64, 0.5)
    assert (p.instances_confidence_thresh, p.overlap_thresh, p.stuff_area_limit) == (0.45, 0.4, 4096)
    assert cfg.model.fpn.in_features == ("res2", "res3", "res4", "res5") and cfg.data.with_panoptic
    assert cfg.model.fcos.strides == (8, 16, 32, 64, 128) and cfg.model.blendmask.bottom_in_features == (
        "p3",
        "p4",
        "p5",
    )
    model = build_model(cfg.model)
    model.load_state_dict(state, strict=True)  # every key of the reference, every key of ours
    assert any(k.startswith("panoptic_module.p5.4.") for k in state) and "fcos.fpn.fpn_lateral2.weight" in state
    # the preset carries the same panoptic settings as the reference config (widths aside)
    from blendseg.zoo import get_preset

    preset = get_preset("blendmask_panoptic_r50_1x").model
    assert dataclasses.replace(preset.panoptic, convs_dim=64, num_classes=54) == p
    assert preset.fpn.in_features == cfg.model.fpn.in_features


def test_panoptic_presets_have_the_released_layout_plus_the_panoptic_keys():
    """The released BlendMask/R_50_1x layout (state_dict_layouts.json) plus what Base-Panoptic adds: P2 in the FPN
    and detectron2's SemSegFPNHead (128 wide, GN, 54 classes) on P2-P5."""
    from blendseg.zoo import get_preset

    sd = json.loads((reference_dir() / "state_dict_layouts.json").read_text())["configs"]["BlendMask/R_50_1x.yaml"]
    expected = {map_key(k, "blendmask"): tuple(v["shape"]) for k, v in sd["state_dict"].items()}
    expected.update({"fcos.fpn.fpn_lateral2.weight": (256, 256, 1, 1), "fcos.fpn.fpn_lateral2.bias": (256,)})
    expected.update({"fcos.fpn.fpn_output2.weight": (256, 256, 3, 3), "fcos.fpn.fpn_output2.bias": (256,)})
    for conv in ("p2.0", "p3.0", "p4.0", "p4.2", "p5.0", "p5.2", "p5.4"):
        expected[map_key(f"panoptic_module.{conv}.weight", "blendmask")] = (
            128,
            256 if conv.endswith(".0") else 128,
            3,
            3,
        )
        for part in ("weight", "bias"):
            expected[f"panoptic_module.{conv}.norm.{part}"] = (128,)
    expected.update({"panoptic_module.predictor.weight": (54, 128, 1, 1), "panoptic_module.predictor.bias": (54,)})
    for name in ("blendmask_panoptic_r50_1x", "blendmask_panoptic_r50_3x"):
        ours = {k: tuple(v.shape) for k, v in build_model(get_preset(name).model).state_dict().items()}
        assert ours == expected, name


def test_unsupported_backbones_are_refused_by_name(tmp_path):
    (tmp_path / "vovnet.yaml").write_text("MODEL:\n  BACKBONE:\n    NAME: build_fcos_vovnet_fpn_backbone\n")
    with pytest.raises(ValueError, match="build_fcos_vovnet_fpn_backbone.*not supported"):
        d2_to_train_config(load_d2_yaml(tmp_path / "vovnet.yaml"))


def test_dla_config_and_weights_convert_with_nothing_left_over():
    d = reference_dir("blendmask_dla34_tiny")
    cfg, state, unmapped = convert_adelaidet(str(d / "config.yaml"), str(d / "weights.safetensors"))
    assert unmapped == []
    bb = cfg.model.backbone
    assert (bb.name, bb.depth, bb.norm, bb.freeze_at) == ("dla", 34, "SyncBN", 0)
    assert cfg.model.fpn.in_features == ("level3", "level4", "level5") and cfg.model.fcos.strides == (8, 16, 32)
    build_model(cfg.model).load_state_dict(state, strict=True)


def test_the_crop_of_the_dcni3_configs_converts_and_is_in_their_presets():
    """AdelaiDet's INPUT.CROP (RandomCropWithInstance): TYPE / SIZE / CROP_INSTANCE with d2's defaults."""
    from blendseg.zoo import get_preset

    on = d2_to_train_config({"INPUT": {"CROP": {"ENABLED": True}}}).data
    assert (on.crop_type, on.crop_size, on.crop_instance) == ("relative_range", (0.9, 0.9), True)
    assert d2_to_train_config({"INPUT": {"CROP": {"ENABLED": False}}}).data.crop_type == ""
    for name in ("blendmask_r101_dcni3_5x", "blendmask_550_r50_dcni3_5x", "blendmask_panoptic_r101_dcni3_5x"):
        assert get_preset(name).data.crop_type == "relative_range", name
    assert get_preset("blendmask_r50_1x").data.crop_type == ""

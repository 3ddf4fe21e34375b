"""Figures of each method's internals (``--show-bases``): one per method, a row per instance."""

import numpy as np
import pytest
from PIL import Image

import blendseg
from blendseg.cli import main
from blendseg.data.images import read_image
from blendseg.figures import PAD, TEXT, TILE, show_bases


def _tile(fig: Image.Image, row: int, col: int) -> np.ndarray:
    """(TILE, TILE) grey values of the tile at ``row`` (0: the first row under the title), ``col``."""
    y = TEXT * 3 + row * (TEXT * 2 + TILE + PAD * 2) + TEXT * 2
    x = PAD + col * (TILE + PAD)
    return np.asarray(fig.crop((x, y, x + TILE, y + TILE)).convert("L"), dtype=np.float32) / 255


def _resized(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((TILE, TILE), Image.BILINEAR)) > 127


# (header rows above the instances, the mask tile's column, whether the tile shows the box crop or the whole input)
LAYOUT = {"blendmask_tiny_test": (1, 9, "box"), "yolact_tiny_test": (1, 2, "input"), "meinst_tiny_test": (1, 2, "box")}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(LAYOUT))
def test_each_methods_figure_shows_the_masks_the_model_predicts(preset, trained, overfit_image):
    """A trained model's figure: its first instance row's mask tile (white = mask) shows the mask of the model's
    top detection (IoU > 0.6 at tile resolution: the figure draws the network's mask before pasting); box-only
    FCOS has no figure."""
    model = blendseg.load(trained(preset) / "weights" / "last.pt", "cpu")
    image = read_image(overfit_image())
    fig = show_bases(model.model, model.cfg, image, model.categories.thing_names, conf=0.3)
    top = model.predict(overfit_image(), conf=0.3)[0]
    assert len(top) >= 1
    rows, col, view = LAYOUT[preset]
    shown = _tile(fig, rows, col) >= 0.5
    mask = top.masks[0].numpy()
    if view == "box":
        x0, y0, x1, y1 = (int(round(float(v))) for v in top.boxes[0])
        mask = mask[y0:y1, x0:x1]
    expected = _resized(mask)
    iou = (shown & expected).sum() / max((shown | expected).sum(), 1)
    assert iou > 0.6, (preset, float(iou))
    fcos = blendseg.load("fcos_tiny_test")
    assert show_bases(fcos.model, fcos.cfg, image) is None  # box-only: no figure


def test_blendmask_figure_has_a_row_per_instance_and_the_cli_writes_it(checkpoint, tmp_path):
    model = blendseg.load(checkpoint)
    image = read_image(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    six = show_bases(model.model, model.cfg, image, model.categories.thing_names, conf=0.0)
    none = show_bases(model.model, model.cfg, image, model.categories.thing_names, conf=2.0)
    assert six.width >= TILE * 10  # box crop, K=4 RoI bases, 4 attentions, the mask
    assert six.height - none.height >= 6 * TILE  # six instance rows
    Image.fromarray(np.asarray(image.permute(1, 2, 0))).save(tmp_path / "a.png")
    args = ["predict", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--show-bases"]
    assert main(args) == 0
    assert Image.open(tmp_path / "o" / "a_bases.png").size == six.size

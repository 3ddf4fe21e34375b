"""Figures of each method's internals (``--show-bases``): one per method, a row per instance."""

import numpy as np
import pytest
from PIL import Image

import blendseg
from blendseg.cli import main
from blendseg.data.images import read_image
from blendseg.figures import TILE, show_bases


@pytest.mark.parametrize("preset", ["yolact_tiny_test", "meinst_tiny_test"])
def test_each_method_has_its_figure(preset):
    model = blendseg.load(preset)
    image = read_image(np.full((90, 120, 3), 90, np.uint8))
    fig = show_bases(model.model, model.cfg, image, None, conf=0.0)
    assert isinstance(fig, Image.Image) and fig.width >= 560
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

"""Figures of each method's internals (``--show-bases``): one per method, with a row per instance."""

import numpy as np
import pytest
from PIL import Image

import blendseg
from blendseg.cli import main
from blendseg.figures import TILE, show_bases


def _rows(fig: Image.Image) -> int:
    """Rows of tiles: the title line plus one band per row of the figure."""
    return round((fig.height - 3 * 12 - 12 * 4) / (TILE + 36))


@pytest.mark.parametrize("preset", ["yolact_tiny_test", "meinst_tiny_test"])
def test_each_method_has_its_figure(preset):
    model = blendseg.load(preset)
    image = blendseg.inference.sources.read_image(np.full((90, 120, 3), 90, np.uint8))
    fig = show_bases(model.model, model.cfg, image, None, conf=0.0)
    assert isinstance(fig, Image.Image) and fig.width >= 560
    assert show_bases(blendseg.load("fcos_tiny_test").model, blendseg.load("fcos_tiny_test").cfg, image) is None


def test_blendmask_figure_rows_per_instance_and_cli(checkpoint, tmp_path):
    model = blendseg.load(checkpoint)
    image = blendseg.inference.sources.read_image(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    one = show_bases(model.model, model.cfg, image, model.categories.thing_names, conf=0.0)
    assert one.width >= TILE * 10  # input crop, K=4 RoI bases, 4 attentions, the mask
    Image.fromarray(np.asarray(image.permute(1, 2, 0))).save(tmp_path / "a.png")
    assert (
        main(["predict", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--show-bases"]) == 0
    )
    assert Image.open(tmp_path / "o" / "a_bases.png").size == one.size

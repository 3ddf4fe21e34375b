"""Shared test fixtures: reference fixtures beside the checkout, a tiny synthetic COCO dataset, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# no figures in the suite's many tiny runs (about a second each); the tests of the figures turn them on (`figures`)
os.environ.setdefault("BLENDSEG_PLOTS", "0")

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
REALDATA = REFERENCE.parents[1] / "realdata"  # annotation tools' exports as their authors committed them


def pytest_addoption(parser):
    parser.addoption(
        "--train-seed", type=int, default=0,
        help="seed of the models conftest's `trained` fixture trains (default 0): the tests that use them must hold "
        "for any seed, as they must for the model another machine's rounding trains",
    )  # fmt: skip


def reference_dir(name: str = "", root: Path = REFERENCE) -> Path:
    """Path of ../shared/fixtures/reference[/name] (or of ``root``/name); skip when absent (a user's clone), fail
    when CI=true."""
    path = root / name if name else root
    if not path.exists():
        msg = f"{path} not found (it lives in ../shared beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true requires them")
        pytest.skip(msg)
    return path


@pytest.fixture
def figures(monkeypatch):
    """Runs and evaluations draw their figures (BLENDSEG_PLOTS=1, inherited by subprocesses)."""
    monkeypatch.setenv("BLENDSEG_PLOTS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """data.yaml of a small deterministic synthetic dataset (24 train, 8 val images, 96-128 px)."""
    from blendseg.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    return synthesize(out, train=24, val=8, seed=3, min_size=96, max_size=128)


def random_checkpoint(path: Path, preset: str, data_yaml: Path | None = None, **extra) -> Path:
    """A checkpoint of ``preset`` with random weights (seed 0; the data's class counts when ``data_yaml`` is
    given), its FCOS classifier (FCOS, BlendMask, MEInst) biased so that it detects plenty above any threshold."""
    from blendseg.engine.checkpoint import save_checkpoint
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.overrides import to_dict
    from blendseg.zoo import build_model, get_preset

    torch.manual_seed(0)
    cfg = get_preset(preset)
    if data_yaml is not None:
        cfg = with_num_classes(cfg, build_dataset(cfg, str(data_yaml), "train", train=True))
    model = build_model(cfg.model)
    head = getattr(getattr(model, "fcos", model), "head", None)
    if hasattr(head, "cls_logits"):
        torch.nn.init.constant_(head.cls_logits.bias, 2.0)
    return save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(cfg), "iteration": 0, **extra})


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A blendmask_tiny_test checkpoint with class names, its head biased so random weights detect things."""
    names = ["circle", "rectangle", "triangle", "ellipse", "star", "ring"]
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    ids = [11, 12, 13, 14, 15, 16]
    return random_checkpoint(path, "blendmask_tiny_test", class_names=names, contiguous_to_cat_id=ids)


# a few hundred steps on six small images: enough for every method to overfit them (about 15 s each on 2 cores)
OVERFIT = ["solver.max_iter=400", "solver.steps=[320]", "solver.warmup_iters=10", "solver.checkpoint_period=400",
           "data.num_workers=0"]  # fmt: skip


@pytest.fixture(scope="session")
def overfit_data(tmp_path_factory) -> Path:
    """data.yaml of six synthetic images (96-128 px) as its only split, ``train``: what the trained fixtures learn
    and are scored on."""
    from blendseg.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("overfit"), train=6, val=0, seed=5, min_size=96, max_size=128)


@pytest.fixture(scope="session")
def overfit_image(overfit_data):
    """``overfit_image(k=0)``: the k-th training image of ``overfit_data`` (by file name), (H, W, 3) uint8 RGB as
    the one image reader reads it."""
    import numpy as np

    from blendseg.data.images import read_image

    paths = sorted((overfit_data.parent / "train" / "images").iterdir())
    return lambda k=0: np.ascontiguousarray(read_image(paths[k]).permute(1, 2, 0).numpy())


@pytest.fixture(scope="session")
def trained(tmp_path_factory, overfit_data, pytestconfig):
    """``trained(preset)``: the run folder of ``preset`` trained with OVERFIT on ``overfit_data`` (once per session;
    ``weights/last.pt`` and ``train_log.jsonl`` inside), for tests that need a model whose detections mean something.

    Which model comes out depends on the machine (its kernels round differently, and 400 steps amplify that) and on
    ``--train-seed``: tests that use it compare confident detections with a score margin, never a count at a
    threshold or an exact value."""
    from blendseg.engine.runner import train
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import get_preset

    runs: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in runs:
            out = tmp_path_factory.mktemp(f"trained_{preset}")
            threads = torch.get_num_threads()
            try:
                overrides = [*OVERFIT, f"seed={pytestconfig.getoption('train_seed')}"]
                train(apply_overrides(get_preset(preset), overrides), str(overfit_data), out, evaluate=False)
            finally:
                torch.set_num_threads(threads)
            runs[preset] = out
        return runs[preset]

    return get

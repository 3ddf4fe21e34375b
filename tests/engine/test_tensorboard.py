"""log.tensorboard=true: the run folder gets TensorBoard events with the losses, lr, AP and the pictures; and the
end of a run leaves the evaluation report."""

import builtins

import pytest


@pytest.mark.slow
def test_a_run_writes_tensorboard_events(tmp_path, synth_data, checkpoint, figures):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from blendseg.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "blendmask_tiny_test",
                str(synth_data),
                "--out",
                str(out),
                "data.num_workers=0",
                "solver.max_iter=2",
                "log.tensorboard=true",
                "--weights",
                str(checkpoint),
                "solver.base_lr=0",
            ]
        )
        == 0
    )  # fmt: skip  (the checkpoint detects plenty: a report to write)
    acc = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "val/segm/AP", "val/bbox/AP"} <= set(tags["scalars"])
    assert any(t.startswith("train_batch/") for t in tags["images"])
    assert len([t for t in tags["images"] if t.startswith("val_pred/")]) == 3
    # the end of training leaves the evaluation report as `val --out` does
    import json

    assert (out / "MaskPR_curve.png").is_file() and (out / "coco_instances_results.json").is_file()
    assert set(json.loads((out / "metrics.json").read_text())["errors"]) == {"bbox", "segm"}


def test_without_tensorboard_the_error_names_the_extra(tmp_path, monkeypatch):
    from blendseg.config import ConfigError
    from blendseg.engine.runlog import tensorboard_writer

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"pip install 'blendseg\[tensorboard\]'"):
        tensorboard_writer(tmp_path)

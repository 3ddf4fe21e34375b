"""The one reader of weight files: safetensors and torch files, wrapped or not, never unpickling code."""

from __future__ import annotations

import pytest
import torch

from blendseg.weights_io import read_state_dict, read_weights


class Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_both_formats_the_wrappers_and_no_code(tmp_path, capsys):
    from safetensors.torch import save_file

    w = {"conv.weight": torch.randn(2, 3)}
    save_file(w, str(tmp_path / "a.safetensors"))
    torch.save({"model": {"module.conv.weight": w["conv.weight"], "step": 3}}, tmp_path / "b.pth")
    torch.save({"state_dict": {"conv.weight": w["conv.weight"]}, "epoch": 3}, tmp_path / "c.pth")
    for name in ("a.safetensors", "b.pth", "c.pth"):
        state = read_state_dict(tmp_path / name)
        assert list(state) == ["conv.weight"] and torch.equal(state["conv.weight"], w["conv.weight"]), name
    assert read_weights(tmp_path / "c.pth")["epoch"] == 3
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil.pth: not a PCA file blendseg can read"):
        read_weights(tmp_path / "evil.pth", "PCA file")
    assert "unpickled code ran" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="none.pth: backbone weights not found"):
        read_weights(tmp_path / "none.pth", "backbone weights")

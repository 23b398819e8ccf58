"""ONNX export of G: the file ONNX Runtime runs gives PyTorch's logits (max abs difference under 1e-4)."""

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from cycleseg.cli import main
from cycleseg.evaluate import load_run
from cycleseg.export import check_onnx, export_onnx

ERFNET_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "erfnet.yaml")
TINY = ["data.height=32", "data.width=64", "optim.batch_size=4", "optim.epochs=1", "optim.decay_start_epoch=0",
        "train.progress=false"]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "plain"
    assert main(["train", ERFNET_YAML, "--data", str(tiny_data), "--out", str(out), *TINY]) == 0
    return out


def test_onnx_logits_match_pytorch(run, tmp_path):
    result = export_onnx(run, tmp_path / "g.onnx")
    assert result["max_abs_diff"] < 1e-4
    assert result["argmax_agreement"] == 1.0


def test_onnx_axes_are_dynamic(run, tmp_path):
    """Exported at the training size, the model runs at another batch and size with the same logits."""
    export_onnx(run, tmp_path / "g.onnx", check=False)
    import torch

    models, _ = load_run(run, torch.device("cpu"))
    result = check_onnx(models.G, tmp_path / "g.onnx", (64, 96), batch=3)
    assert result["max_abs_diff"] < 1e-4


def test_cli_export(run, tmp_path, capsys):
    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000  # G's 2.06 M parameters as float32
    assert "max abs difference" in capsys.readouterr().out

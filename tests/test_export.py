"""ONNX export of G: the file ONNX Runtime runs gives PyTorch's logits (max abs difference under 1e-4)."""

import pytest

pytest.importorskip("onnxruntime")

from cycleseg.cli import main
from cycleseg.commands.export import check_onnx, export_onnx
from cycleseg.runs import load_run


@pytest.fixture(scope="module")
def run(trained_cycle_run):
    """The session's trained cycle run: export reads it (G only) and writes only where it is told."""
    return trained_cycle_run


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


def test_a_failed_write_leaves_the_previous_file(run, tmp_path, monkeypatch):
    """The ONNX file is written whole and then renamed: a full disk keeps the previous export intact."""
    from cycleseg.errors import RunError

    out = tmp_path / "g.onnx"
    out.write_bytes(b"previous export")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cycleseg.fileio.os.fsync", disk_full)
    with pytest.raises(RunError, match="g.onnx: could not write .No space left on device"):
        export_onnx(run, out, check=False)
    assert out.read_bytes() == b"previous export"
    assert not (tmp_path / "g.onnx.tmp").exists()

"""The one evaluation session (commands/session.py) through which evaluate, calibrate, diagnose (both modes),
predict and segment open a run: every command that reads data checks the data's classes against the run's in
one place, and `diagnose --along-training` opens the split once for all checkpoints."""

from pathlib import Path

import pytest
from PIL import Image

from cycleseg.cli import main
from cycleseg.commands import session
from cycleseg.commands.diagnose import diagnose_training
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.data.synthetic import make_synthetic
from cycleseg.errors import RunError
from cycleseg.runs import LOCK

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A 2-bit cycle run on the tiny data: 2 epochs of 2 iterations, each epoch's checkpoint kept."""
    out = tmp_path_factory.mktemp("session") / "q2"
    cfg = load_config(CYCLEGAN_YAML, [f"data.root={tiny_data}", "data.height=32", "data.width=64",
                                      "optim.batch_size=4", "optim.epochs=2", "optim.decay_start_epoch=0",
                                      "noise.kind=quantize", "noise.bits=2", "train.progress=false",
                                      "train.keep_checkpoints=2", "train.precision=fp32"])
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def other_classes(tmp_path_factory):
    """A folder dataset of 11 CamVid-like classes and void: not the run's 20 Cityscapes classes."""
    root = tmp_path_factory.mktemp("session") / "camvid"
    make_synthetic(root, num_train=2, num_val=2, size=(32, 64), seed=0, fmt="folder")
    return root


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK}


@pytest.mark.parametrize("command", ["calibrate", "predict"])
def test_calibrate_and_predict_refuse_data_with_other_classes(run, other_classes, tmp_path, capsys, command):
    before = _files(run)
    out = tmp_path / "pred"
    argv = [command, str(run), "--data", str(other_classes), "--quiet"]
    assert main(argv + (["--out", str(out)] if command == "predict" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cycleseg {command}: error: {other_classes}: its 12 classes"), err
    assert "not the 20 the run" in err[0], err
    assert _files(run) == before and not out.exists()  # nothing written: no calibrate_val.json, no predictions


def test_every_command_that_reads_data_checks_the_classes_in_the_session(run, tiny_data, tmp_path, monkeypatch,
                                                                        capsys):
    """Replace the session's one classes check: evaluate, calibrate, diagnose, diagnose --along-training and predict
    all stop there; segment, which reads photos and no data split, does not ask it."""
    asked = []

    def refuse(run_dir, cfg, data_root, source=None):
        asked.append((Path(run_dir), Path(data_root)))
        raise RunError(f"{data_root}: refused by the replaced check")

    monkeypatch.setattr(session, "check_classes", refuse)
    before = _files(run)
    commands = {
        "evaluate": ["evaluate", run, "--data", tiny_data],
        "calibrate": ["calibrate", run, "--data", tiny_data],
        "diagnose": ["diagnose", run, "--data", tiny_data],
        "diagnose --along-training": ["diagnose", run, "--data", tiny_data, "--along-training"],
        "predict": ["predict", run, "--data", tiny_data, "--out", tmp_path / "pred"],
    }
    for name, argv in commands.items():
        assert main([str(a) for a in argv] + ["--quiet"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"cycleseg {argv[0]}: error: {tiny_data}: refused by the replaced check"], (name, err)
    assert asked == [(run, tiny_data)] * len(commands)
    assert _files(run) == before and not (tmp_path / "pred").exists()

    photo = tmp_path / "street.png"
    Image.new("RGB", (48, 24), (90, 120, 60)).save(photo)
    assert main(["segment", str(run), str(photo), "--out", str(tmp_path / "seg"), "--precision", "fp32",
                 "--quiet"]) == 0
    assert len(asked) == len(commands) and (tmp_path / "seg" / "labels" / "street.png").is_file()


def test_along_training_opens_the_split_once(run, tiny_data, monkeypatch):
    opened = []
    open_split = session.open_split
    monkeypatch.setattr(session, "open_split", lambda cfg, split, **kw: opened.append(split) or open_split(
        cfg, split, **kw))
    curve = diagnose_training(run, tiny_data, max_images=2)
    assert [p["checkpoint"] for p in curve["points"]] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert opened == ["val"]
    assert all(p["num_images"] == 2 for p in curve["points"])


def test_the_model_part_has_no_split(run):
    model = session.open_model(run, "cpu", "best.pt")
    assert model.dataset is None and model.checkpoint == "best.pt" and model.models.is_cycle
    with pytest.raises(RunError, match="no data split opened"):
        model.loader()

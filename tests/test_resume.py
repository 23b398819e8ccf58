"""Reliability: exact resume after any crash, safe checkpoints, the non-finite guard (issue: reliability)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cycleseg.core.steps as steps_module
from cycleseg.commands.state import Progress, TrainState
from cycleseg.commands.train import train
from cycleseg.config import load_config
from cycleseg.core.models import build_models
from cycleseg.errors import RunError
from cycleseg.runs import BEST, LAST, load_checkpoint, save_checkpoint

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
# 8 images / batch 2 = 4 iterations per epoch; 3 epochs = 12 iterations; Gaussian noise so that the torch RNG
# matters; a checkpoint after every iteration.
TINY = ["train.precision=fp32", "data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=3", "optim.decay_start_epoch=1",
        "optim.pool_size=3", "noise.kind=gaussian", "noise.snr_db=5", "train.progress=false", "train.log_every=1",
        "train.eval_every=1", "train.checkpoint_every=1"]


def _cfg(data, *extra):
    return load_config(CYCLEGAN_YAML, [*TINY, f"data.root={data}", *extra])


def assert_same_state(a: dict, b: dict) -> None:
    """Weights of G, F, D and the optimizer states are bit-identical."""
    assert a["models"].keys() == b["models"].keys()
    for k in a["models"]:
        assert torch.equal(a["models"][k], b["models"][k]), k
    for oa, ob in zip(a["optimizers"], b["optimizers"], strict=True):
        for (ka, sa), (kb, sb) in zip(oa["state"].items(), ob["state"].items(), strict=True):
            assert ka == kb
            for name in sa:
                assert torch.equal(torch.as_tensor(sa[name]), torch.as_tensor(sb[name])), (ka, name)
    assert a["progress"]["step"] == b["progress"]["step"]
    assert len(a["pool"]["images"]) == len(b["pool"]["images"])
    for x, y in zip(a["pool"]["images"], b["pool"]["images"], strict=True):
        assert torch.equal(x, y)


@pytest.fixture(scope="module")
def reference_run(tiny_data, tmp_path_factory):
    """The folder of the uninterrupted run; it also keeps its last 2 epochs' checkpoints (train.keep_checkpoints
    copies last.pt and changes nothing that is trained)."""
    out = tmp_path_factory.mktemp("reference")
    train(_cfg(tiny_data, "train.keep_checkpoints=2"), out)
    return out


@pytest.fixture(scope="module")
def reference(reference_run):
    """The uninterrupted run's last.pt."""
    return load_checkpoint(reference_run / LAST)


@pytest.mark.slow
# stopped by train.max_iters mid-epoch; tests/test_kill_anywhere.py stops a run at 13 other moments (epoch ends too)
@pytest.mark.parametrize("stop_after", [5])
def test_resume_in_process_is_exact(tiny_data, tmp_path, reference, stop_after):
    train(_cfg(tiny_data, f"train.max_iters={stop_after}"), tmp_path)
    assert load_checkpoint(tmp_path / LAST)["progress"]["step"] == stop_after
    metrics = train(_cfg(tiny_data), tmp_path, resume=True, run_config=_cfg(tiny_data).to_dict())
    assert metrics["iterations"] == 12
    assert_same_state(load_checkpoint(tmp_path / LAST), reference)
    steps = [line for line in (tmp_path / "log.jsonl").read_text().splitlines() if '"lr"' in line]
    assert len(steps) == 12  # no step logged twice


def _cli(*args):
    return [sys.executable, "-m", "cycleseg.cli", *map(str, args)]


def _logged_step(log: Path) -> int:
    """The highest training step in log.jsonl so far (0 when none)."""
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}") and '"lr"' in line]
    return max(steps, default=0)


KILLS = 5


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tiny_data, tmp_path, reference):
    """Kill -9 the training process at random moments (checkpoint writes included), resume each time.

    Each kill waits until the process has trained one step beyond its checkpoint, then a random 0-300 ms more:
    with a checkpoint after every iteration, that lands in forward/backward passes and in checkpoint writes.
    """
    rng = random.Random(1234)
    out = tmp_path / "run"
    cmd = _cli("train", CYCLEGAN_YAML, "--data", tiny_data, "--out", out, *TINY)
    kills, starts = 0, 0
    while not (out / "metrics.json").exists():
        starts += 1
        assert starts <= KILLS + 3, "training never finished"
        resumed_from = load_checkpoint(out / LAST)["progress"]["step"] if (out / LAST).exists() else 0
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills < KILLS:
            deadline = time.time() + 120
            while proc.poll() is None and _logged_step(out / "log.jsonl") <= resumed_from:
                assert time.time() < deadline, "no training step logged in 120 s"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr.read()
        if (out / "run.json").exists():  # the run exists (a kill may land before its first checkpoint)
            cmd = _cli("train", "--resume", out)
    assert kills == KILLS
    assert_same_state(load_checkpoint(out / LAST), reference)
    print(f"{kills} SIGKILLs, {starts} starts, final state bit-identical")


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "optim.epochs=200", "optim.decay_start_epoch=100"]
    proc = subprocess.Popen(_cli("train", CYCLEGAN_YAML, "--data", tiny_data, "--out", out, *args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "log.jsonl").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and f"cycleseg train --resume {out}" in err and "Traceback" not in err
    step = load_checkpoint(out / LAST)["progress"]["step"]
    assert step >= 1
    # resume, then stop at a bound: it continues from the saved step rather than from zero
    proc = subprocess.run(_cli("train", "--resume", out, f"train.max_iters={step + 2}"), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(out / LAST)["progress"]["step"] == step + 2
    assert "max_iters: null" in (out / "config.yaml").read_text()  # the bound was for that session only


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / LAST
    save_checkpoint(path, {"value": torch.ones(3)})

    def dies(fd):
        raise KeyboardInterrupt  # the process dies with the new file half on disk, before the rename

    monkeypatch.setattr("cycleseg.fileio.os.fsync", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"value": torch.zeros(3)})
    assert torch.equal(load_checkpoint(path)["value"], torch.ones(3))


def test_disk_full_is_a_clear_error_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / LAST
    save_checkpoint(path, {"value": torch.ones(3)})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cycleseg.fileio.os.fsync", disk_full)
    with pytest.raises(RunError, match="could not write .No space left on device.*intact"):
        save_checkpoint(path, {"value": torch.zeros(3)})
    assert not (tmp_path / (LAST + ".tmp")).exists()
    assert torch.equal(load_checkpoint(path)["value"], torch.ones(3))


def test_disk_full_while_the_checkpoint_streams_keeps_the_previous_one(tmp_path, monkeypatch):
    """The checkpoint is serialised straight into the temporary file: a write failing half-way (disk full) is the
    same one-line RunError, and the temporary file goes."""
    path = tmp_path / LAST
    save_checkpoint(path, {"value": torch.ones(3)})
    real_save = torch.save

    def fills_the_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cycleseg.runs.checkpoint.torch.save", fills_the_disk)
    with pytest.raises(RunError, match="could not write .No space left on device.*intact"):
        save_checkpoint(path, {"value": torch.zeros(3)})
    monkeypatch.setattr("cycleseg.runs.checkpoint.torch.save", real_save)
    assert not (tmp_path / (LAST + ".tmp")).exists()
    assert torch.equal(load_checkpoint(path)["value"], torch.ones(3))


@pytest.mark.parametrize("content, needle", [
    (None, "truncated or corrupt"),  # a truncated real checkpoint
    (b"", "truncated or corrupt"),
    (b"\x00" * 100, "truncated or corrupt"),
])
def test_truncated_or_corrupt_checkpoint_fails_clearly(tmp_path, content, needle):
    path = tmp_path / LAST
    save_checkpoint(path, {"value": torch.ones(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(RunError, match=needle) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(RunError, match="not a cycleseg checkpoint"):
        load_checkpoint(path)


@pytest.mark.slow
@pytest.mark.parametrize("extra, needle", [
    (["model.kind=plain", "noise.kind=none", "noise.snr_db=null"], "checkpoint is of a cyclegan model with 20 classes, expected plain"),
    (["model.num_classes=12"], "checkpoint is of a cyclegan model with 20 classes, expected cyclegan with 12"),
])
def test_checkpoint_of_another_model_fails_clearly(tiny_data, reference, tmp_path, extra, needle):
    path = tmp_path / LAST
    save_checkpoint(path, {k: v for k, v in reference.items() if k not in ("format", "version")})
    cfg = _cfg(tiny_data, "model.num_classes=20", *extra)  # S as train() resolves it from the data
    with pytest.raises(RunError, match=needle) as e:
        TrainState(cfg, torch.device("cpu")).load(path)
    assert str(path) in str(e.value)


def _nan_after(monkeypatch, name, first_bad, last_bad=10**9):
    """Make the training loss `name` return NaN on its calls number first_bad..last_bad (1-based)."""
    real = getattr(steps_module, name)
    calls = {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if first_bad <= calls["n"] <= last_bad else loss

    monkeypatch.setattr(steps_module, name, patched)


@pytest.mark.slow
def test_nan_loss_is_skipped_and_counted(tiny_data, tmp_path, monkeypatch):
    _nan_after(monkeypatch, "image_reconstruction_loss", 3, 4)
    metrics = train(_cfg(tiny_data, "train.eval_every=0", "train.checkpoint_every=0"), tmp_path)
    assert metrics["nonfinite_skipped"] == 2 and metrics["iterations"] == 12
    state = load_checkpoint(tmp_path / LAST)
    assert all(torch.isfinite(v).all() for v in state["models"].values() if v.is_floating_point())
    log = (tmp_path / "log.jsonl").read_text()
    assert '"nonfinite_skipped": 1' in log and '"nonfinite_skipped": 2' in log


def test_a_run_of_nan_losses_stops_with_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    _nan_after(monkeypatch, "segmentation_loss", 4)  # from the 4th iteration on, J_seg is NaN
    cfg = _cfg(tiny_data, "model.kind=plain", "noise.kind=none", "noise.snr_db=null", "train.max_nonfinite=3")
    with pytest.raises(RunError, match="in 3 iterations in a row .step 6.*last.pt holds the last good state"):
        train(cfg, tmp_path)
    state = load_checkpoint(tmp_path / LAST)
    assert state["progress"]["step"] == 5  # steps 4 and 5 were skipped (and checkpointed), step 6 stopped it
    assert all(torch.isfinite(v).all() for v in state["models"].values() if v.is_floating_point())


@pytest.mark.slow
def test_best_checkpoint_tracks_validation_miou(reference_run):
    best = load_checkpoint(reference_run / BEST)
    vals = [line for line in (reference_run / "log.jsonl").read_text().splitlines() if "val/miou" in line]
    assert len(vals) == 3
    assert best["progress"]["best_miou"] == max(json.loads(v)["val/miou"] for v in vals)
    assert sorted(p.name for p in reference_run.glob("epoch_*.pt")) == ["epoch_0002.pt", "epoch_0003.pt"]


def test_progress_round_trips():
    p = Progress(epoch=2, batch_in_epoch=3, step=11, best_miou=4.5, nonfinite_in_a_row=1, nonfinite_total=2)
    assert Progress(**__import__("dataclasses").asdict(p)) == p


def test_a_skipped_generator_step_leaves_d_trainable(tiny_data, monkeypatch):
    """The NaN guard fires while D_X is frozen for the generator update; D must be unfrozen afterwards."""
    _nan_after(monkeypatch, "adversarial_loss", 1)
    cfg = _cfg(tiny_data, "model.num_classes=20")  # S as train() resolves it from the data
    models = build_models(cfg.model, cfg.noise)
    opt_g = torch.optim.Adam(list(models.G.parameters()) + list(models.F.parameters()))
    image, labels = torch.rand(2, 3, 32, 64) * 2 - 1, torch.randint(0, 20, (2, 32, 64))
    with pytest.raises(steps_module.NonFiniteError, match="J_gen is nan"):
        steps_module.generator_step(models, opt_g, image, labels, cfg.loss)
    assert all(p.requires_grad for p in models.D.parameters())


@pytest.mark.parametrize("extra, steps", [
    ([], [0, 12]),  # the start and the end: the 6 epoch ends in between add nothing a step checkpoint lacks
    (["train.eval_every=2"], [0, 8, 12]),  # after each validation (epochs 2 and 3 end at steps 8 and 12)
    (["train.checkpoint_every=0"], [0, 4, 8, 12]),  # 0: at every epoch end
    (["train.checkpoint_every=5"], [0, 5, 10, 12]),  # every 5 steps, and the end
])
def test_last_pt_is_written_at_an_epoch_end_only_when_it_adds_something(tiny_data, tmp_path, monkeypatch, extra,
                                                                          steps):
    written = []
    real = TrainState.save
    monkeypatch.setattr(TrainState, "save", lambda self, path, weights_only=False: (
        written.append(self.progress.step) if Path(path).name == LAST else None, real(self, path, weights_only))[1])
    cfg = _cfg(tiny_data, "model.kind=plain", "noise.kind=none", "noise.snr_db=null", "train.eval_every=0",
               "train.checkpoint_every=500", *extra)
    train(cfg, tmp_path)  # 8 images, batch 2: 4 steps an epoch, 12 in all
    assert sorted(set(written)) == steps

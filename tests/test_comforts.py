"""Training comforts (issue 14), each off by default: data.augment, train.image_every, train --init-from and a
weights-only best.pt."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from cycleseg import runs
from cycleseg.cli import main
from cycleseg.commands.train import train
from cycleseg.config import RESUMABLE_KEYS, load_config
from cycleseg.core.augment import augment_batch, augment_generator
from cycleseg.errors import ConfigError
from cycleseg.runs import BEST, LAST, load_checkpoint, save_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PLAIN, CYCLE = str(CONFIGS / "erfnet.yaml"), str(CONFIGS / "cyclegan.yaml")
# 8 images / batch 4 = 2 iterations per epoch
TINY = ["train.precision=fp32", "data.height=32", "data.width=64", "optim.epochs=2", "optim.decay_start_epoch=1",
        "train.progress=false", "train.log_every=1", "train.checkpoint_every=1"]


def _coordinates(batch=3, height=32, width=64):
    """Images whose channels 0 and 1 are each pixel's x and y, and labels y * width + x: the same pixel's position,
    so any misalignment of labels and image shows."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)]).expand(batch, 3, height, width).clone()
    labels = (ys * width + xs).long().expand(batch, height, width).clone()
    return image, labels


@pytest.mark.parametrize("mode", ["flip", "flip+scale"])
def test_augmentation_keeps_image_and_labels_aligned(mode):
    image, labels = _coordinates(batch=8)
    out, out_labels = augment_batch(image, labels, mode, max_scale=2.0, generator=augment_generator(0, 0, 0))
    assert out.shape == image.shape and out_labels.shape == labels.shape and out_labels.dtype == torch.long
    label_x, label_y = out_labels % 64, out_labels // 64
    if mode == "flip":  # exact: a flipped image is a permutation of pixels
        assert torch.equal(out[:, 0].long(), label_x) and torch.equal(out[:, 1].long(), label_y)
        assert any(torch.equal(out[k], image[k].flip(-1)) for k in range(8))
        assert any(torch.equal(out[k], image[k]) for k in range(8))
    else:  # bilinear samples of x and y lie within half a pixel of the nearest pixel the label took
        inside = (slice(None), slice(1, -1), slice(1, -1))  # the border clamps the bilinear coordinates
        assert (out[:, 0] - label_x)[inside].abs().max() <= 0.5 + 1e-4
        assert (out[:, 1] - label_y)[inside].abs().max() <= 0.5 + 1e-4
        assert not torch.equal(out, image)


def test_augmentation_is_deterministic_and_off_by_default():
    image, labels = _coordinates()
    a = augment_batch(image, labels, "flip+scale", generator=augment_generator(3, 1, 2))
    b = augment_batch(image, labels, "flip+scale", generator=augment_generator(3, 1, 2))
    c = augment_batch(image, labels, "flip+scale", generator=augment_generator(3, 1, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert load_config(None).data.augment == "none" and load_config(None).train.image_every == 0
    state = torch.get_rng_state()
    assert augment_batch(image, labels, "none") == (image, labels)  # the very same tensors
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG (noise, pool) is never drawn from
    augment_batch(image, labels, "flip+scale", generator=augment_generator(0, 0, 0))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("override, needle", [
    ("data.augment=rotate", "data.augment must be one of none, flip, flip+scale, got 'rotate'"),
    ("data.augment_scale=0.5", "data.augment_scale must be a finite number >= 1"),
    ("train.image_every=-1", "train.image_every must be >= 0"),
])
def test_comfort_settings_are_checked(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("+", r"\+")) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)
    assert load_config(None, ["data.augment=false"]).data.augment == "none"  # YAML's `off`
    assert "train.image_every" in RESUMABLE_KEYS and "data.augment" not in RESUMABLE_KEYS


def test_augmented_run_resumed_equals_the_uninterrupted_one(tiny_data, tmp_path, monkeypatch):
    import cycleseg.commands.train as train_module

    changed = []

    def spy(image, labels, *args, **kwargs):  # the training batches do go through the augmentation
        out = augment_batch(image, labels, *args, **kwargs)
        changed.append(not torch.equal(out[0], image))
        return out

    cfg = load_config(PLAIN, [*TINY, f"data.root={tiny_data}", "data.augment=flip+scale"])
    with monkeypatch.context() as m:
        m.setattr(train_module, "augment_batch", spy)
        train(cfg, tmp_path / "whole")
    assert len(changed) == 4 and all(changed)  # 4 training batches; validation is never augmented
    train(load_config(PLAIN, [*TINY, f"data.root={tiny_data}", "data.augment=flip+scale", "train.max_iters=3"]),
          tmp_path / "stopped")
    train(cfg, tmp_path / "stopped", resume=True, run_config=cfg.to_dict())
    a, b = load_checkpoint(tmp_path / "whole" / LAST), load_checkpoint(tmp_path / "stopped" / LAST)
    assert a["progress"]["step"] == b["progress"]["step"] == 4
    assert all(torch.equal(a["models"][k], b["models"][k]) for k in a["models"])


def test_image_every_writes_sample_images_to_tensorboard(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), *TINY, "train.max_iters=1",
                 "train.image_every=1", "noise.kind=gaussian", "noise.snr_db=5"]) == 0
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {f"images/{t}" for t in ("x", "y", "G_x", "x_rec", "F_y", "G_F_y")} <= tags
    image = events.Images("images/x_rec")[0]
    assert image.step == 1 and (image.width, image.height) == (64, 32)


def _g_parameters(models: dict) -> dict:
    return {k: v for k, v in models.items() if k.startswith("G.") and not k.endswith(("running_mean", "running_var",
                                                                                          "num_batches_tracked"))}


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_another_runs_weights(trained_cycle_run, tiny_data, tmp_path, capsys):
    source = load_checkpoint(trained_cycle_run / BEST)
    # a plain run's checkpoint (G only) starts a cycle model's G; F and D_X stay freshly initialised
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, {"config": source["config"], "model": {"kind": "plain", "num_classes": 20},
                            "models": {k: v for k, v in source["models"].items() if k.startswith("G.")},
                            "progress": {"step": 7}})
    out = tmp_path / "run"
    tiny_lr = "optim.lr=1e-12"  # one update that leaves the weights where they started, to within 1e-9
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), *TINY, "train.max_iters=1", tiny_lr,
                 "--init-from", str(plain)]) == 0
    assert f"initialised G from {plain.resolve()} (step 7)" in capsys.readouterr().out
    record = runs.read_status(out)["init_from"]
    assert record == {"path": str(plain.resolve()), "step": 7, "networks": ["G"]}
    weights = load_checkpoint(out / LAST)
    assert load_checkpoint(out / LAST)["progress"]["step"] == 1 and "optimizers" in weights
    for k, v in _g_parameters(source["models"]).items():
        assert torch.allclose(weights["models"][k], v, atol=1e-6), k
    # a run folder: its best.pt, all three networks
    out2 = tmp_path / "run2"
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out2), *TINY, "train.max_iters=1", tiny_lr,
                 "--init-from", str(trained_cycle_run)]) == 0
    record = runs.read_status(out2)["init_from"]
    assert record["path"] == str((trained_cycle_run / BEST).resolve()) and record["networks"] == ["G", "F", "D_X"]
    assert record["step"] == source["step"]
    weights = load_checkpoint(out2 / LAST)["models"]
    assert torch.allclose(weights["D.model.0.weight"], source["models"]["D.model.0.weight"], atol=1e-6)


def test_init_from_refuses_a_checkpoint_that_does_not_fit_and_resume(trained_cycle_run, tiny_data, tmp_path, capsys):
    out, other = tmp_path / "run", tmp_path / "other" / BEST
    other.parent.mkdir()
    save_checkpoint(other, {"model": {"kind": "cyclegan", "num_classes": 12}, "models": {}, "progress": {"step": 3}})
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), *TINY, "--init-from",
                 str(other.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{other}: checkpoint is of a cyclegan model with 12 classes" in err, err
    assert not out.exists()  # refused before the run was created
    source = load_checkpoint(trained_cycle_run / BEST)
    source["models"]["G.output_conv.bias"] = torch.zeros(3)
    save_checkpoint(other, {k: v for k, v in source.items() if k not in ("format", "version")})
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), *TINY, "--init-from", str(other)]) == 2
    assert "weights of G do not fit this run's model (output_conv.bias has shape (3,), this model (20,))" in \
        capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--resume", str(trained_cycle_run), "--init-from", str(trained_cycle_run)]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), "--init-from",
                 str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err


def test_best_checkpoint_holds_weights_only_and_evaluates(trained_cycle_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_cycle_run, run)
    best, last = load_checkpoint(run / BEST), load_checkpoint(run / LAST)
    assert (run / BEST).stat().st_size < 0.5 * (run / LAST).stat().st_size
    assert best["weights_only"] and not {"optimizers", "schedulers", "pool", "rng"} & best.keys()
    assert best["model"] == {"kind": "cyclegan", "num_classes": 20} and best["step"] == best["progress"]["step"]
    assert best["metrics"]["miou"] == best["progress"]["best_miou"]
    assert main(["evaluate", str(run), "--data", str(tiny_data), "--checkpoint", BEST]) == 0
    assert runs.read_status(run)["evaluations"]["val"] == runs.read_status(run)["evaluations"]["val"] | {
        "checkpoint": BEST, "step": best["step"]}
    assert json.loads(runs.artifact(run, "eval", "val").read_text())["miou"] is not None
    from cycleseg.commands.state import TrainState
    from cycleseg.errors import RunError

    cfg = load_config(None, ["noise.kind=quantize", "noise.bits=2", "model.num_classes=20"])
    with pytest.raises(RunError, match="holds weights only.*--init-from"):
        TrainState(cfg, torch.device("cpu")).load(run / BEST)
    assert "optimizers" in last


def test_init_from_run_stopped_before_its_first_checkpoint_resumes_from_the_same_weights(trained_cycle_run, tiny_data,
                                                                                          tmp_path, monkeypatch):
    import cycleseg.commands.train as train_module

    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train_module, "TrainState", killed)
        assert main(["train", CYCLE, "--data", str(tiny_data), "--out", str(out), *TINY, "train.max_iters=1",
                     "optim.lr=1e-12", "--init-from", str(trained_cycle_run)]) == 130  # stopped at start-up
    assert not (out / LAST).exists() and runs.read_status(out)["init_from"]["networks"] == ["G", "F", "D_X"]
    assert main(["train", "--resume", str(out)]) == 0
    source, weights = load_checkpoint(trained_cycle_run / BEST)["models"], load_checkpoint(out / LAST)["models"]
    assert torch.allclose(weights["F.output_conv.weight"], source["F.output_conv.weight"], atol=1e-6)

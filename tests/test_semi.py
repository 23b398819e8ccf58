"""Semi-supervised training (issue 15): data.labelled, unlabelled images through the forward cycle and D_Y.

What is checked:
- the labelled choice: deterministic for a seed, the same for the plain baseline and the cycle model, saved as
  RUN/labelled.txt, read back on resume, and a resume on data without those images refused in one line;
- the labels of the unlabelled images are never read: every one of them corrupted or deleted, the run still
  checks its data (full check), counts class weights, trains and resumes; one corrupted labelled label fails,
  naming the file;
- a semi run killed mid-epoch and resumed ends bit-identical to an uninterrupted one (G, F, D_X, D_Y, the three
  optimizers and schedules, both pools), unpaired label maps and augmentation included;
- semi_generator_step and discriminator_y_step against the equations written out by hand;
- the plain baseline on data.labelled reads exactly the labelled images, with the semi run's schedule;
- `cycleseg train` / `evaluate` / `table` on a shipped configs/semi config, and on a folder dataset whose
  unlabelled images have no label files.
"""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

import cycleseg.commands.train as train_module
import cycleseg.data.source as source_module
from cycleseg.cli import main
from cycleseg.commands.train import train
from cycleseg.config import load_config, uses_d_y, uses_unlabelled
from cycleseg.core.models import build_models
from cycleseg.core.pool import ImagePool
from cycleseg.core.steps import discriminator_y_step, semi_generator_step
from cycleseg.data.semi import labelled_split, stream_indices
from cycleseg.errors import ConfigError, DataError
from cycleseg.runs import LABELLED, LAST, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CYCLEGAN_YAML = str(ROOT / "configs" / "cyclegan.yaml")
# 8 training images, half of them labelled: 4 labelled / batch 2 = 2 iterations per epoch
TINY = ["train.precision=fp32", "data.height=32", "data.width=64", "optim.batch_size=2", "optim.epochs=1",
        "optim.decay_start_epoch=0", "optim.pool_size=3", "train.progress=false", "train.log_every=1",
        "train.eval_every=0", "data.labelled=1/2", "data.cache=off"]


def _cfg(data, *extra, config=CYCLEGAN_YAML):
    return load_config(config, [*TINY, f"data.root={data}", *extra])


def _copy(data: Path, to: Path) -> Path:
    return Path(shutil.copytree(data, to, ignore=shutil.ignore_patterns("cycleseg_cache")))


def _label_of(image: Path) -> Path:
    """The Cityscapes label file of an image path."""
    return Path(str(image).replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelIds.png"))


# ----------------------------------------------------------------------------------------------- the choice

def test_cached_and_png_labelled_sets_are_the_same(tiny_data, tmp_path):
    """An up-to-date cache serves the labelled items and the unlabelled images bit-identically to the PNGs, and the
    class counts of the labelled images; data.cache=require refuses a split whose images lack label files."""
    from cycleseg.data.cache import class_pixel_counts, prepare
    from cycleseg.data.semi import open_labelled_sets

    data = _copy(tiny_data, tmp_path / "data")
    prepare(data, (32, 64), ("train",), progress=False)
    sets = {}
    for mode in ("off", "require"):
        cfg = _cfg(data, f"data.cache={mode}")
        sets[mode] = open_labelled_sets(cfg, labelled_split(cfg))
    (labelled, unlabelled), (cached, cached_unlabelled) = sets["off"], sets["require"]
    assert type(cached.dataset).__name__ == "CachedDataset" and type(labelled.dataset).__name__ == "SplitDataset"
    assert len(labelled) == len(cached) == 4 and len(unlabelled) == len(cached_unlabelled) == 4
    for k in range(4):
        assert all(torch.equal(a, b) for a, b in zip(labelled[k], cached[k], strict=True))
        assert torch.equal(unlabelled[k], cached_unlabelled[k])
    assert (class_pixel_counts(labelled) == class_pixel_counts(cached)).all()
    split = labelled_split(_cfg(data))
    _label_of(data / split.paths(split.unlabelled)[0]).unlink()
    with pytest.raises(DataError, match="1 training images have no label file"):
        open_labelled_sets(_cfg(data, "data.cache=require"), labelled_split(_cfg(data)))


def test_labelled_choice_is_seeded_saved_and_a_resume_refuses_other_data(tiny_data, tmp_path, capsys):
    split = labelled_split(_cfg(tiny_data))
    assert len(split.labelled) == 4 and len(split.unlabelled) == 4 and split.labelled == sorted(split.labelled)
    assert labelled_split(_cfg(tiny_data)).labelled == split.labelled  # deterministic
    assert labelled_split(_cfg(tiny_data, "model.kind=plain")).labelled == split.labelled  # the baseline's too
    seeds = {tuple(labelled_split(_cfg(tiny_data, f"train.seed={s}")).labelled) for s in range(6)}
    assert len(seeds) > 1  # the seed chooses
    assert len(labelled_split(_cfg(tiny_data, "data.labelled=1/8")).labelled) == 1  # round(8 / 8)
    assert len(labelled_split(_cfg(tiny_data, "data.labelled=0.99")).labelled) == 7  # one is left unlabelled

    data = _copy(tiny_data, tmp_path / "data")
    (data / "mine.txt").write_text("# my labelled images\n" + "\n".join(split.paths(split.unlabelled[:3])) + "\n")
    assert labelled_split(_cfg(data, "data.labelled=mine.txt")).labelled == split.unlabelled[:3]  # relative to root
    (data / "bad.txt").write_text("leftImg8bit/train/nowhere/x.png\n")
    with pytest.raises(DataError, match=r"bad.txt: leftImg8bit/train/nowhere/x.png is not an image of the training"):
        labelled_split(_cfg(data, "data.labelled=bad.txt"))

    out = tmp_path / "run"
    train(_cfg(data, "train.max_iters=1"), out)
    assert (out / LABELLED).read_text().splitlines() == split.paths(split.labelled)
    gone = data / split.paths(split.labelled)[0]
    gone.unlink()
    _label_of(gone).unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "train.max_iters=2"]) == 2  # max_iters=1 finished it: extend
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out / LABELLED}: the labelled image {split.paths(split.labelled)[0]}" in err
    assert "no longer in the training split" in err


def test_config_rules_of_the_semi_keys():
    for overrides, needle in [(["data.labelled=0"], "data.labelled must be a fraction in (0, 1]"),
                              (["data.labelled=1.5"], "data.labelled must be a fraction in (0, 1]"),
                              (["data.labelled=nan"], "data.labelled must be a fraction in (0, 1]"),
                              (["optim.unlabelled_batch_size=2"], "optim.unlabelled_batch_size is only used by a semi"),
                              (["data.labelled=1/8", "model.kind=plain", "optim.unlabelled_batch_size=2"],
                               "optim.unlabelled_batch_size is only used by a semi"),
                              (["data.labelled=1/8", "optim.unlabelled_batch_size=-1"], "must be >= 0 or null"),
                              (["data.labelled=1", "optim.unlabelled_batch_size=0"],
                               "optim.unlabelled_batch_size is only used by a semi"),
                              (["model.kind=plain", "data.unpaired_labels=maps"], "data.unpaired_labels is only used"),
                              (["loss.adv_y=-1"], "loss.adv_y must be a finite number >= 0")]:
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert needle in str(e.value) and "\n" not in str(e.value)
    assert load_config(None, ["data.labelled=1/8"]).data.labelled == 0.125
    assert load_config(None, ["data.labelled=runs/a/labelled.txt"]).data.labelled == "runs/a/labelled.txt"
    assert uses_d_y(load_config(None, ["data.labelled=1/8"]))
    assert not uses_d_y(load_config(None, ["data.labelled=1/8", "loss.adv_y=0"]))
    assert not uses_d_y(load_config(None, ["data.labelled=1"]))  # fraction 1 is the paper's run
    assert not uses_d_y(load_config(None, ["data.labelled=1/8", "model.kind=plain"]))
    labelled_only = load_config(None, ["data.labelled=1/8", "optim.unlabelled_batch_size=0"])
    assert not uses_unlabelled(labelled_only) and not uses_d_y(labelled_only)  # the cycle on its labels alone


def test_stream_indices_use_every_item_once_per_pass():
    first, second = stream_indices(5, 3, range(5)), stream_indices(5, 3, range(5, 10))
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    assert stream_indices(5, 3, [7, 2]) == [second[2], first[2]]  # a position's item depends on nothing else


# --------------------------------------------------------------------------------- unlabelled labels unused

@pytest.mark.slow
def test_labels_of_unlabelled_images_are_never_read(tiny_data, tmp_path, capsys):
    """Every unlabelled image's label corrupted (junk bytes) or deleted: the full data check, the ENet class
    weights, training and a resume all pass; a corrupted labelled label stops the run naming the file."""
    data = _copy(tiny_data, tmp_path / "data")
    split = labelled_split(_cfg(data))
    unlabelled = [data / p for p in split.paths(split.unlabelled)]
    for k, image in enumerate(unlabelled):
        if k % 2:
            _label_of(image).unlink()  # no label file at all
        else:
            _label_of(image).write_bytes(b"junk, not a PNG" * 10)
    out = tmp_path / "run"
    checked = ["data.check=full", "loss.class_weights=enet"]
    train(_cfg(data, *checked, "train.max_iters=1"), out)  # stopped mid-epoch
    metrics = train(_cfg(data, *checked), out, resume=True, run_config=_cfg(data, *checked).to_dict())
    assert metrics["iterations"] == 2 and metrics["miou"] is not None
    weights = json.loads((out / "class_weights.json").read_text())
    assert sum(weights["pixels"]) == 4 * 32 * 64  # the 4 labelled images' pixels only

    _label_of(data / split.paths(split.labelled)[1]).write_bytes(b"junk")
    capsys.readouterr()
    assert main(["train", CYCLEGAN_YAML, "--data", str(data), "--out", str(tmp_path / "other"), *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(_label_of(data / split.paths(split.labelled)[1])) in err


# -------------------------------------------------------------------------------------------- exact resume

class Killed(BaseException):
    """The process dies here (train() catches no BaseException: nothing is saved, as with SIGKILL)."""


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    assert a["models"].keys() == b["models"].keys()
    assert any(k.startswith("D_Y.") for k in a["models"])  # D_Y is part of the state
    for k in a["models"]:
        assert torch.equal(a["models"][k], b["models"][k]), k
    assert len(a["optimizers"]) == len(b["optimizers"]) == 3  # G and F, D_X, D_Y
    for oa, ob in zip(a["optimizers"], b["optimizers"], strict=True):
        assert oa["param_groups"] == ob["param_groups"]
        for sa, sb in zip(oa["state"].values(), ob["state"].values(), strict=True):
            assert all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)
    assert a["schedulers"] == b["schedulers"]
    assert a["progress"] | {"train_seconds": 0} == b["progress"] | {"train_seconds": 0}
    for pool in ("pool", "pool_y"):
        assert len(a[pool]["images"]) == len(b[pool]["images"]) > 0, pool
        assert all(torch.equal(x, y) for x, y in zip(a[pool]["images"], b[pool]["images"], strict=True)), pool
        assert a[pool]["rng"] == b[pool]["rng"], pool


@pytest.mark.slow
def test_semi_run_killed_mid_epoch_and_resumed_is_bit_identical(tiny_data, tmp_path, monkeypatch):
    """Gaussian noise (the torch RNG), flips (the augmentation streams), 3 unlabelled images per iteration (the
    stream crosses its passes mid-batch) and unpaired label maps in the backward cycle and for D_Y."""
    maps = tmp_path / "maps"
    maps.mkdir()
    for k, label in enumerate(sorted((tiny_data / "gtFine" / "val").rglob("*_labelIds.png"))[:3]):
        shutil.copy(label, maps / f"map{k}.png")
    extra = ["optim.epochs=2", "optim.decay_start_epoch=1", "noise.kind=gaussian", "noise.snr_db=5",
             "data.augment=flip", "optim.unlabelled_batch_size=3", f"data.unpaired_labels={maps}", "loss.adv_y=0.5"]
    reference = tmp_path / "reference"
    assert train(_cfg(tiny_data, *extra), reference)["iterations"] == 4
    log = [json.loads(line) for line in (reference / "log.jsonl").read_text().splitlines()]
    assert {"loss/G/rec_x_u", "loss/G/adv_y", "loss/D_Y/total"} <= set(log[0])

    out = tmp_path / "run"
    real, calls = train_module.semi_generator_step, []

    def killed_in_step_2(*args, **kwargs):  # the process dies inside the second iteration, as with SIGKILL
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "semi_generator_step", killed_in_step_2)
    with pytest.raises(Killed):
        train(_cfg(tiny_data, *extra, "train.checkpoint_every=1"), out)
    monkeypatch.undo()
    assert load_checkpoint(out / LAST)["progress"]["batch_in_epoch"] == 1  # saved mid-epoch
    train(_cfg(tiny_data, *extra), out, resume=True, run_config=_cfg(tiny_data, *extra).to_dict())
    _assert_same_checkpoint(load_checkpoint(out / LAST), load_checkpoint(reference / LAST))
    assert (out / LABELLED).read_text() == (reference / LABELLED).read_text()


# ------------------------------------------------------------------------------- the steps, by the equations

S, B, BU, H, W = 20, 2, 3, 32, 32
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4  # as tests/test_generator_step_reference.py (measured there, margin > 10x)


def _setup(overrides, seed=0):
    cfg = load_config(None, ["model.num_classes=20", "data.labelled=1/8", *overrides])
    torch.manual_seed(seed)
    models = build_models(cfg.model, cfg.noise, d_y=uses_d_y(cfg))
    gen = torch.Generator().manual_seed(seed + 1)
    image = torch.rand(B, 3, H, W, generator=gen) * 2 - 1
    labels = torch.randint(0, S, (B, H, W), generator=gen)
    unlabelled = torch.rand(BU, 3, H, W, generator=gen) * 2 - 1
    for m in models.modules():  # BatchNorm statistics of this data, then eval mode (test_generator_step_reference)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        models.train()
        models.forward_cycle(torch.cat([image, unlabelled]))
        models.backward_cycle(labels)
    models.eval()
    return cfg, models, image, labels, unlabelled


def _cross_entropy(logits, labels):
    return -logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).mean()


def _one_hot(labels):
    return torch.zeros(labels.shape[0], S, *labels.shape[1:]).scatter_(1, labels.unsqueeze(1), 1.0)


def _gradients(loss, params):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True),
                            strict=True)]


def _relative_error(got, expected):
    scale = torch.sqrt(sum(e.pow(2).sum() for e in expected) / len(expected))
    return max(((g - e).norm() / scale).item() for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("overrides", [["noise.kind=quantize", "noise.bits=2", "loss.adv_y=0.3", "loss.alpha=0.4",
                                        "loss.beta=0.2", "loss.gamma=0.7"],
                                       ["loss.adv_y=0"]], ids=["quantize2_with_D_Y", "no_noise_no_D_Y"])
def test_semi_generator_step_matches_the_equations(overrides):
    """J_semi = J_gen(x_l, y_l) + gamma (1 - alpha) J_rec_X(x_u) + adv_y J_adv_Y(x_u), written out:
    J_rec_X(x_u) = mean |F(noise(G(x_u))) - x_u| (straight-through noise), J_adv_Y = mean (D_Y(softmax(G(x_u))) - 1)^2;
    the gradients of G and F and the update SGD(lr=1) made; D_X and D_Y frozen."""
    cfg, models, image, labels, unlabelled = _setup(overrides)
    with_d_y = cfg.loss.adv_y > 0
    assert (models.D_Y is not None) == with_d_y
    reference = copy.deepcopy(models)
    received, f_inputs = [], []
    models.noise.register_forward_hook(lambda module, args, output: received.append(output.detach().clone()))
    models.F.register_forward_pre_hook(lambda module, args: f_inputs.append(args[0].detach().clone()))
    params = [*models.G.parameters(), *models.F.parameters()]
    before = [p.detach().clone() for p in params]
    frozen = {k: v.clone() for k, v in models.state_dict().items() if k.startswith(("D.", "D_Y."))}
    opt = torch.optim.SGD(params, lr=1.0)
    losses, fake, segmentation = semi_generator_step(models, opt, image, labels, unlabelled, cfg.loss)
    assert len(received) == 2 and len(f_inputs) == 3  # noise on G(x_l) and G(x_u); F on those and on y

    # the equations, on a copy of the same models (the noise's values as F received them, straight-through)
    a, b, g, lam = cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma, cfg.loss.adv_y
    m = reference
    logits, logits_u = m.G(image), m.G(unlabelled)
    one_hot = next(x for x in f_inputs if torch.equal(x, _one_hot(labels)))  # y_bar as the step laid it out
    fake_ref = m.F(one_hot)
    terms = {
        "seg": _cross_entropy(logits, labels),
        "rec_x": (m.F(logits + (received[0] - logits).detach()) - image).abs().mean(),
        "adv": (m.D(fake_ref) - 1).pow(2).mean(),
        "rec_y": _cross_entropy(m.G(fake_ref), labels),
        "rec_x_u": (m.F(logits_u + (received[1] - logits_u).detach()) - unlabelled).abs().mean(),
    }
    weights = {"seg": g * a, "rec_x": g * (1 - a), "adv": (1 - g) * b, "rec_y": (1 - g) * (1 - b),
               "rec_x_u": g * (1 - a)}
    if with_d_y:
        terms["adv_y"] = (m.D_Y(torch.softmax(logits_u, dim=1)) - 1).pow(2).mean()
        weights["adv_y"] = lam
    else:
        assert segmentation is None and "loss/G/adv_y" not in losses
    total = sum(weights[k] * terms[k] for k in terms)
    for name, value in terms.items():
        assert losses[f"loss/G/{name}"].item() == pytest.approx(value.item(), rel=LOSS_RTOL), name
    assert losses["loss/G/total"].item() == pytest.approx(total.item(), rel=LOSS_RTOL)
    torch.testing.assert_close(fake, fake_ref.detach(), rtol=1e-5, atol=1e-6)
    if with_d_y:
        torch.testing.assert_close(segmentation, torch.softmax(logits_u, dim=1).detach(), rtol=1e-5, atol=1e-7)

    ref_params = [*m.G.parameters(), *m.F.parameters()]
    per_term = {k: _gradients(t, ref_params) for k, t in terms.items()}
    expected = [sum(weights[k] * per_term[k][i] for k in terms) for i in range(len(ref_params))]
    got = [p.grad for p in params]
    n_g = len(list(models.G.parameters()))
    assert _relative_error(got[:n_g], expected[:n_g]) < GRAD_RTOL, "G's gradient"
    assert _relative_error(got[n_g:], expected[n_g:]) < GRAD_RTOL, "F's gradient"
    for p, p0 in zip(params, before, strict=True):
        torch.testing.assert_close(p0 - p.detach(), p.grad, rtol=0, atol=1e-6 * (1 + p0.abs().max().item()))
    assert all(torch.equal(v, models.state_dict()[k]) for k, v in frozen.items())  # D_X, D_Y unchanged
    assert all(p.grad is None for d in (models.D, models.D_Y) if d is not None for p in d.parameters())
    # the comparison can fail: without the unlabelled terms the gradient is clearly another
    without = [sum(weights[k] * per_term[k][i] for k in terms if k in ("seg", "rec_x", "adv", "rec_y"))
               for i in range(len(ref_params))]
    assert _relative_error(got, without) > 100 * GRAD_RTOL


def test_discriminator_y_step_matches_the_equation():
    """J_disc_Y = mean (D_Y(onehot(y)) - 1)^2 + mean D_Y(s')^2, s' from the pool (returned as is until it is
    full); only D_Y moves, by -grad with SGD(lr=1)."""
    _, models, _, labels, unlabelled = _setup([])
    segmentation = torch.softmax(models.G(unlabelled), dim=1).detach()
    reference = copy.deepcopy(models.D_Y)
    inputs = []
    models.D_Y.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    others = {k: v.clone() for k, v in models.state_dict().items() if not k.startswith("D_Y.")}
    params = list(models.D_Y.parameters())
    before = [p.detach().clone() for p in params]
    losses = discriminator_y_step(models, torch.optim.SGD(params, lr=1.0), labels, segmentation, ImagePool(5))

    assert torch.equal(inputs[0], _one_hot(labels)) and torch.equal(inputs[1], segmentation)
    loss = (reference(inputs[0]) - 1).pow(2).mean() + reference(inputs[1]).pow(2).mean()
    assert losses["loss/D_Y/total"].item() == pytest.approx(loss.item(), rel=LOSS_RTOL)
    expected = _gradients(loss, list(reference.parameters()))
    assert _relative_error([p.grad for p in params], expected) < GRAD_RTOL
    for p, p0 in zip(params, before, strict=True):
        torch.testing.assert_close(p0 - p.detach(), p.grad, rtol=0, atol=1e-6 * (1 + p0.abs().max().item()))
    assert all(torch.equal(v, models.state_dict()[k]) for k, v in others.items())  # G, F, D_X unchanged


# --------------------------------------------------------------------------------- the plain baseline, the CLI

@pytest.mark.parametrize("model", [["model.kind=plain", "noise.kind=none"], ["optim.unlabelled_batch_size=0"]],
                         ids=["plain", "cycle-labelled-only"])
def test_labelled_only_models_train_on_exactly_the_labelled_images(tiny_data, tmp_path, monkeypatch, model):
    """The plain baseline, and the cycle with optim.unlabelled_batch_size 0, read the labelled images alone."""
    read = []
    real_image, real_label = source_module.SplitDataset.image, source_module.SplitDataset.label

    def image(self, index):
        if self.split == "train":
            read.append(("image", self.samples[index].image_path))
        return real_image(self, index)

    def label(self, index):
        if self.split == "train":
            read.append(("label", self.samples[index].image_path))
        return real_label(self, index)

    monkeypatch.setattr(source_module.SplitDataset, "image", image)
    monkeypatch.setattr(source_module.SplitDataset, "label", label)
    out = tmp_path / "plain"
    metrics = train(_cfg(tiny_data, *model), out)
    split = labelled_split(_cfg(tiny_data))  # the semi run's choice of the same seed
    labelled = {tiny_data / p for p in split.paths(split.labelled)}
    assert metrics["iterations"] == 2  # 4 labelled images / batch 2: one epoch over the labelled part
    assert {path for _, path in read} == labelled and len(read) == 8  # each image and label once
    assert (out / LABELLED).read_text().splitlines() == split.paths(split.labelled)
    assert "D_Y.model.0.weight" not in load_checkpoint(out / LAST)["models"]


@pytest.mark.slow
def test_cli_train_evaluate_and_table_on_a_semi_config(tiny_data, tmp_path, capsys):
    out = tmp_path / "semi"
    config = ROOT / "configs" / "semi" / "1-8_quant2.yaml"
    assert main(["train", str(config), "--data", str(tiny_data), "--out", str(out), "data.height=32", "data.width=64",
                 "optim.epochs=1", "optim.decay_start_epoch=0", "train.progress=false", "train.precision=fp32",
                 "data.cache=off"]) == 0
    assert "1 labelled training images of 8, 7 unlabelled (4 per iteration)" in capsys.readouterr().out
    assert len((out / LABELLED).read_text().splitlines()) == 1
    assert main(["evaluate", str(out), "--data", str(tiny_data), "--precision", "fp32", "--quiet"]) == 0
    assert json.loads((out / "eval_val.json").read_text())["psnr_db"] is not None
    assert main(["evaluate", str(out), "--data", str(tiny_data), "--checkpoint", "best.pt", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    assert "1-8_quant2" in capsys.readouterr().out


def test_folder_dataset_whose_unlabelled_images_have_no_label_files(tmp_path):
    from cycleseg.data.synthetic import make_synthetic

    root = Path(make_synthetic(tmp_path / "camvid", num_train=4, num_val=2, size=(32, 64), fmt="folder")["root"])
    cfg = _cfg(root, "data.labelled=1/4", "optim.batch_size=1", "optim.unlabelled_batch_size=1")
    split = labelled_split(cfg)
    for image in split.paths(split.unlabelled):
        (root / "labels" / Path(image).relative_to("images").with_suffix(".png")).unlink()
    assert train(cfg, tmp_path / "run")["iterations"] == 1
    with pytest.raises(DataError, match="image has no label"):  # a fully supervised run still needs every label
        train(load_config(CYCLEGAN_YAML, [*TINY[:-2], f"data.root={root}"]), tmp_path / "full")


def test_report_plots_miou_against_the_labelled_fraction(tmp_path):
    """The report's semi-supervised figure on constructed runs: one line per model, each point a config's mean over
    its seeds with the Student t interval (n = 2: t = 12.706), x the labelled fraction; no figure for one fraction."""
    from cycleseg.config import Config
    from cycleseg.report import RunRecord, labelled_fraction, plot_labelled_fraction

    def config(kind: str, labelled) -> dict:
        cfg = Config()
        cfg.model.kind, cfg.data.labelled = kind, labelled
        return cfg.to_dict()

    def group(name: str, kind: str, labelled, mious: list[float]) -> RunRecord:
        members = [RunRecord(name, tmp_path, config(kind, labelled), {"miou": m}, seed=k) for k, m in enumerate(mious)]
        return RunRecord(name, tmp_path, members[0].config, {"miou": sum(mious) / len(mious)}, members=members)

    groups = [group("1-8_nonoise", "cyclegan", 0.125, [20.0, 22.0]), group("1_nonoise", "cyclegan", None, [30.0, 34.0]),
              group("1-8_plain", "plain", 0.125, [18.0, 18.0])]
    assert [labelled_fraction(g.config) for g in groups] == [0.125, 1.0, 0.125]
    assert labelled_fraction(config("cyclegan", "lists/labelled.txt")) is None  # a file list: share unknown
    fig = plot_labelled_fraction(groups)
    ax = fig.axes[0]
    lines = {c.get_label(): c for c in ax.containers}
    assert set(lines) == {"cycle, paper, no noise", "plain ERFNet"}  # report.semi.model_label
    x, y = lines["cycle, paper, no noise"].lines[0].get_data()
    assert list(x) == [0.125, 1.0] and list(y) == [21.0, 32.0]
    segments = lines["cycle, paper, no noise"].lines[2][0].get_segments()  # the vertical error bars
    half_widths = [(seg[1][1] - seg[0][1]) / 2 for seg in segments]
    assert half_widths == pytest.approx([12.7062 * 2 ** 0.5 / 2 ** 0.5, 12.7062 * 2.828427 / 2 ** 0.5], rel=1e-4)
    assert plot_labelled_fraction(groups[::2][:1]) is None


def test_report_pairs_each_fraction_with_its_own_references(tmp_path):
    """Constructed runs of two fractions and two seeds: quant2 is paired with the no-noise run of its own fraction,
    and every cycle model with the plain ERFNet of its fraction (the same labelled images), seed by seed."""
    from cycleseg.config import Config
    from cycleseg.report import RunRecord, group_runs, labelled_fraction, paired_rows
    from cycleseg.report.semi import semi_contrasts

    def run(name: str, kind: str, noise: str, labelled, seed: int, miou: float) -> RunRecord:
        cfg = Config()
        cfg.model.kind, cfg.data.labelled, cfg.noise.kind = kind, labelled, noise
        if noise == "quantize":
            cfg.noise.bits = 2
        return RunRecord(f"{name}/seed{seed}", tmp_path, cfg.to_dict(), {"miou": miou, "psnr_db": 20.0 + seed},
                         group=name, seed=seed)

    mious = {("1-8", "plain"): (10.0, 12.0), ("1-8", "nonoise"): (15.0, 18.0), ("1-8", "quant2"): (16.0, 20.0),
             ("1", "plain"): (40.0, 41.0), ("1", "nonoise"): (39.0, 43.0), ("1", "quant2"): (45.0, 44.0)}
    runs = [run(f"{f}_{m}", "plain" if m == "plain" else "cyclegan", "quantize" if m == "quant2" else "none",
                0.125 if f == "1-8" else None, seed, values[seed])
            for (f, m), values in mious.items() for seed in (0, 1)]
    paired = {p["run"]: p for p in paired_rows(runs)}
    assert {k: p["reference"] for k, p in paired.items()} == {"1-8_quant2": "1-8_nonoise", "1_quant2": "1_nonoise"}
    assert paired["1-8_quant2"]["miou"].interval.values == (1.0, 2.0)  # 16 - 15, 20 - 18
    assert paired["1_quant2"]["miou"].interval.values == (6.0, 1.0)
    contrasts = semi_contrasts(group_runs(runs), labelled_fraction)
    semi = {r["run"]: r for r in contrasts if r["kind"] in ("semi − labelled-only", "cycle − plain")}
    assert {k: (r["reference"], r["fraction"]) for k, r in semi.items()} == {
        "1-8_nonoise": ("1-8_plain", 0.125), "1-8_quant2": ("1-8_plain", 0.125),
        "1_nonoise": ("1_plain", 1.0), "1_quant2": ("1_plain", 1.0)}
    diff = semi["1-8_quant2"]["difference"]
    assert diff.interval.values == (6.0, 8.0) and diff.interval.mean == 7.0
    assert diff.interval.half_width == pytest.approx(12.7062 * 2 ** 0.5 / 2 ** 0.5, rel=1e-4)  # sd sqrt(2), n = 2
    assert semi_contrasts(group_runs([r for r in runs if r.group.startswith("1_")]), labelled_fraction) == []  # no fraction below 1: no such table

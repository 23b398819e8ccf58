"""Config inheritance (`base: FILE`), and configs/paper/ as one base and a small file per row of Table 2 that load to
exactly the configs they were as 16 full copies (issue 36)."""

from pathlib import Path

import pytest

from cycleseg.config import Config, flat_items, load_config
from cycleseg.config_files import read_config_file
from cycleseg.errors import ConfigError
from cycleseg.experiments.plan import find_configs

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"

# configs/paper/nonoise.yaml as it loaded before configs/paper/ had a base (every key, flattened; with the
# quantizer's keys noise.scale, noise.scale_rms and noise.ste at their defaults, added since)
NONOISE = {
    "name": "nonoise", "data.root": "data/cityscapes", "data.format": "auto", "data.height": 256, "data.width": 512,
    "data.num_workers": 0, "data.max_train_images": None, "data.max_val_images": None, "data.cache": "auto",
    "data.cache_dir": None, "data.check": "fast", "data.augment": "none", "data.augment_scale": 1.5,
    "data.labelled": None, "data.unpaired_labels": None, "model.kind": "cyclegan", "model.arch": "erfnet",
    "model.f_input": "scores", "model.num_classes": None, "noise.kind": "none", "noise.bits": None,
    "noise.snr_db": None, "noise.sigma_rule": "equal_snr", "noise.scale": "none", "noise.scale_rms": 0.44,
    "noise.ste": "identity", "loss.alpha": 0.5, "loss.beta": 0.09090909090909091,
    "loss.gamma": 0.6451612903225806, "loss.ignore_background": False, "loss.class_weights": "none",
    "loss.adv_y": 0.03225806451612903, "loss.paired_f": 0.0, "optim.lr": 0.0002, "optim.beta1": 0.5,
    "optim.beta2": 0.999, "optim.batch_size": 4, "optim.epochs": 200, "optim.decay_start_epoch": 100,
    "optim.pool_size": 50, "optim.unlabelled_batch_size": None, "optim.kernel": "auto", "optim.f_warmup_iters": 0,
    "train.seed": 0, "train.device": "auto", "train.log_every": 10, "train.eval_every": 10, "train.max_iters": None,
    "train.progress": True, "train.print_every": 50, "train.checkpoint_every": 500, "train.keep_checkpoints": 0,
    "train.keep_every": 1, "train.max_nonfinite": 10, "train.image_every": 0, "train.precision": "auto",
    "train.channels_last": True, "train.compile": False,
}
# each row as it loaded then: the keys where it differed from nonoise
ROWS = {
    "gauss_14.50": {"name": "gauss_14.50", "noise.kind": "gaussian", "noise.snr_db": 14.5},
    "gauss_21.02": {"name": "gauss_21.02", "noise.kind": "gaussian", "noise.snr_db": 21.02},
    "gauss_30": {"name": "gauss_30", "noise.kind": "gaussian", "noise.snr_db": 30.0},
    "gauss_40": {"name": "gauss_40", "noise.kind": "gaussian", "noise.snr_db": 40.0},
    "gauss_7.38": {"name": "gauss_7.38", "noise.kind": "gaussian", "noise.snr_db": 7.38},
    "gauss_m0.55": {"name": "gauss_m0.55", "noise.kind": "gaussian", "noise.snr_db": -0.55},
    "gauss_m10": {"name": "gauss_m10", "noise.kind": "gaussian", "noise.snr_db": -10.0},
    "gauss_m15": {"name": "gauss_m15", "noise.kind": "gaussian", "noise.snr_db": -15.0},
    "gauss_m20": {"name": "gauss_m20", "noise.kind": "gaussian", "noise.snr_db": -20.0},
    "maxonly": {"name": "maxonly", "noise.kind": "max_only"},
    "nonoise": {},
    "plain": {"name": "plain", "model.kind": "plain"},
    "quant1": {"name": "quant1", "noise.kind": "quantize", "noise.bits": 1},
    "quant2": {"name": "quant2", "noise.kind": "quantize", "noise.bits": 2},
    "quant3": {"name": "quant3", "noise.kind": "quantize", "noise.bits": 3},
    "quant4": {"name": "quant4", "noise.kind": "quantize", "noise.bits": 4},
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_each_paper_row_loads_to_exactly_the_config_it_was(row):
    assert dict(flat_items(load_config(PAPER / f"{row}.yaml").to_dict())) == NONOISE | ROWS[row]


def test_the_paper_rows_are_small_files_over_one_base():
    rows = [e.name for e in find_configs([PAPER])]
    assert sorted(rows) == sorted(ROWS)  # a sweep of configs/paper leaves out _base.yaml
    for row in rows:
        lines = [line for line in (PAPER / f"{row}.yaml").read_text().splitlines() if not line.startswith("#")]
        assert lines[0].startswith("base: _base.yaml") and len(lines) <= 4, row


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_overrides_its_base_section_by_section(tmp_path):
    _write(tmp_path, "bases/paper.yaml", "base: ../root.yaml\nname: mid\noptim: {lr: 0.001, epochs: 8, "
                                          "decay_start_epoch: 4}\n")
    _write(tmp_path, "root.yaml", "noise: {kind: quantize, bits: 3}\noptim: {batch_size: 2}\n")
    child = _write(tmp_path, "runs/q2.yaml", "base: ../bases/paper.yaml  # relative to this file's folder\n"
                                             "noise: {bits: 2}\noptim: {lr: 0.002}\n")
    cfg = load_config(child, ["optim.epochs=10"])
    assert (cfg.name, cfg.noise.kind, cfg.noise.bits) == ("mid", "quantize", 2)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.decay_start_epoch, cfg.optim.batch_size) == (0.002, 10, 4, 2)
    assert cfg.data == Config().data
    assert "base" not in read_config_file(child)


@pytest.mark.parametrize("files, needle", [
    ({"a.yaml": "base: missing.yaml\n"}, "a.yaml: base 'missing.yaml': "),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "makes a cycle"),
    ({"a.yaml": "base: a.yaml\n"}, "makes a cycle"),
    ({"a.yaml": "base: 3\n"}, "base must name a YAML file"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "noise: {bitz: 2}\n"}, "b.yaml: unknown key 'noise.bitz'"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "optim: {epochs: many}\n"}, "b.yaml: optim.epochs must be int"),
])
def test_a_broken_base_is_one_line_naming_its_file(tmp_path, files, needle):
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "a.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)

"""Config loading: YAML + overrides, strict keys and types, cross-field rules."""

from pathlib import Path

import pytest

from cycleseg.config import Config, config_from_dict, load_config
from cycleseg.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_papers():
    cfg = Config()
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma) == (0.5, 1 / 11, 20 / 31)
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 0.5, 0.999)
    assert (cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.decay_start_epoch) == (4, 200, 100)
    assert cfg.optim.pool_size == 50
    assert (cfg.data.height, cfg.data.width) == (256, 512)
    assert cfg.model.num_classes == 20 and cfg.noise.kind == "none"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


def test_shipped_cyclegan_yaml_matches_defaults_except_root():
    cfg = load_config(CONFIGS / "cyclegan.yaml")
    default = Config()
    default.data.root = cfg.data.root
    assert cfg.to_dict() == default.to_dict()


def test_overrides_parse_yaml_scalars():
    cfg = load_config(None, ["noise.kind=quantize", "noise.bits=2", "optim.lr=1e-3", "loss.ignore_background=true",
                             "name=q2"])
    assert cfg.noise.bits == 2 and cfg.optim.lr == 1e-3 and cfg.loss.ignore_background is True and cfg.name == "q2"


def test_floats_written_as_text():
    cfg = load_config(None, ["loss.beta=1/11", "loss.gamma=20/31", "optim.lr=2e-4"])
    assert (cfg.loss.beta, cfg.loss.gamma, cfg.optim.lr) == (1 / 11, 20 / 31, 2e-4)
    with pytest.raises(ConfigError, match="loss.beta must be float"):
        load_config(None, ["loss.beta=1/0"])


def test_int_accepted_for_float():
    cfg = load_config(None, ["noise.kind=gaussian", "noise.snr_db=-10"])
    assert cfg.noise.snr_db == -10.0 and isinstance(cfg.noise.snr_db, float)


@pytest.mark.parametrize("overrides, needle", [
    (["noise.bitz=2"], "unknown key 'noise.bitz'"),
    (["foo=1"], "unknown key 'foo'"),
    (["optim.lr=fast"], "optim.lr must be float"),
    (["optim.epochs=2.5"], "optim.epochs must be int"),
    (["optim.batch_size=true"], "optim.batch_size must be int"),
    (["noise.kind=pink"], "noise.kind must be one of none, max_only, quantize, gaussian"),
    (["noise.kind=quantize"], "noise.bits must be an integer in 1..8"),
    (["noise.kind=quantize", "noise.bits=0"], "noise.bits must be an integer in 1..8"),
    (["noise.kind=quantize", "noise.bits=9"], "noise.bits must be an integer in 1..8"),
    (["noise.bits=2"], "noise.bits is only used with noise.kind=quantize"),
    (["noise.kind=gaussian"], "noise.snr_db is required"),
    (["noise.kind=gaussian", "noise.snr_db=3", "noise.sigma_rule=x"], "noise.sigma_rule must be one of"),
    (["model.kind=plain", "noise.kind=max_only"], "must be none for model.kind=plain"),
    (["model.kind=unet"], "model.kind must be one of cyclegan, plain"),
    (["loss.alpha=1.5"], "loss.alpha must be in [0, 1]"),
    (["data.height=100"], "data.height must be a multiple of 8"),
    (["optim.decay_start_epoch=300"], "optim.decay_start_epoch must be in 0..optim.epochs"),
    (["noise=3"], "noise must be a mapping"),
    (["noise.bits"], "expected key=value"),
])
def test_invalid_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_every_config_key_is_read_by_the_code():
    """Each dataclass field must be used somewhere in the package (no dead configuration)."""
    src = "\n".join(p.read_text() for p in (CONFIGS.parent / "src" / "cycleseg").glob("*.py")
                    if p.name != "config.py")
    cfg = Config().to_dict()
    missing = [f"{section}.{key}" for section, fields in cfg.items() if isinstance(fields, dict)
               for key in fields if f".{key}" not in src]
    assert missing == []


def test_round_trip_through_dict():
    cfg = load_config(None, ["noise.kind=gaussian", "noise.snr_db=7.38"])
    assert config_from_dict(cfg.to_dict()) == cfg

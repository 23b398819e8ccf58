"""Config loading: YAML + overrides, strict keys and types, cross-field rules."""

import ast
import dataclasses
import re
import typing
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
    assert cfg.model.num_classes is None and cfg.noise.kind == "none"  # S comes from the data


def test_num_classes_comes_from_the_data_or_is_checked_against_it(tiny_data, tmp_path):
    from cycleseg.data import resolve_classes
    from cycleseg.data.synthetic import make_synthetic

    cfg = Config()
    assert resolve_classes(cfg, tiny_data).num_classes == 20 and cfg.model.num_classes == 20  # Cityscapes: 19 + bg
    folder = make_synthetic(tmp_path / "camvid", num_train=1, num_val=1, size=(32, 64), fmt="folder")["root"]
    cfg = Config()
    assert resolve_classes(cfg, folder).num_evaluated == 11 and cfg.model.num_classes == 12  # 11 + void
    cfg = load_config(None, ["model.num_classes=20"])
    with pytest.raises(ConfigError, match=r"model.num_classes=20 but .*classes.yaml has 12 classes \(11 evaluated "
                                          r"\+ 1 void\); remove model.num_classes"):
        resolve_classes(cfg, folder)


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
    (["noise.bits"], "expected KEY=VALUE; e.g. noise.bits=2"),
    (["noise.bits", "2"], "expected KEY=VALUE; did you mean noise.bits=2?"),
    (["noise.bitz=2"], "unknown key 'noise.bitz' (did you mean 'noise.bits'?)"),
    (["train.lr=1e-3"], "unknown key 'train.lr' (did you mean 'optim.lr'?)"),
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


SECTION_CLASSES = {name: cls.__name__ for name, cls in typing.get_type_hints(Config).items()
                   if dataclasses.is_dataclass(cls)}  # "noise" -> "NoiseConfig", ...


def config_reads(source: str) -> set[tuple[str, str]]:
    """(section, key) of every setting a module reads: `<anything>.<section>.<key>` (cfg.noise.bits,
    self.cfg.loss.alpha), or `<name>.<key>` where, in the same function, <name> is a parameter or variable
    annotated with the section's class (`loss: LossConfig`) or assigned from `<anything>.<section>`.
    Assignments (`cfg.data.root = ...`), strings and comments do not count."""
    tree = ast.parse(source)
    class_to_section = {cls: section for section, cls in SECTION_CLASSES.items()}
    reads = set()
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        aliases = {}  # local name -> section
        annotated = [*scope.args.posonlyargs, *scope.args.args, *scope.args.kwonlyargs] if scope is not tree else []
        annotated += [(n.target, n.annotation) for n in ast.walk(scope)
                      if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        for item in annotated:
            name, annotation = (item.arg, item.annotation) if isinstance(item, ast.arg) else (item[0].id, item[1])
            if annotation is None:
                continue
            words = set(re.findall(r"\w+", ast.unparse(annotation)))
            for cls, section in class_to_section.items():
                if cls in words:
                    aliases[name] = section
        for n in ast.walk(scope):
            if (isinstance(n, ast.Assign) and isinstance(n.value, ast.Attribute)
                    and n.value.attr in SECTION_CLASSES):
                for target in n.targets:
                    if isinstance(target, ast.Name):
                        aliases[target.id] = n.value.attr
        for n in ast.walk(scope):
            if not (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)):
                continue
            if isinstance(n.value, ast.Attribute) and n.value.attr in SECTION_CLASSES:
                reads.add((n.value.attr, n.attr))
            elif isinstance(n.value, ast.Name) and n.value.id in aliases:
                reads.add((aliases[n.value.id], n.attr))
    return reads


def test_config_reads_finds_real_reads_only():
    source = """
def f(cfg, loss: LossConfig, other):
    noise = cfg.noise
    cfg.data.root = "x"          # a write, not a read
    note = "uses .height and cfg.data.width"  # a string
    return cfg.optim.lr, loss.alpha, noise.bits, other.gamma
"""
    assert config_reads(source) == {("optim", "lr"), ("loss", "alpha"), ("noise", "bits")}


def test_every_config_key_is_read_by_the_code():
    """Each dataclass field must be read somewhere in the package (no dead configuration)."""
    package = CONFIGS.parent / "src" / "cycleseg"
    reads = set()
    for path in sorted(package.rglob("*.py")):  # sub-packages (data/) included
        if path != package / "config.py":  # the loader reads every field by name: not a use
            reads |= config_reads(path.read_text())
    cfg = Config().to_dict()
    assert set(SECTION_CLASSES) == {section for section, fields in cfg.items() if isinstance(fields, dict)}
    missing = [f"{section}.{key}" for section, fields in cfg.items() if isinstance(fields, dict)
               for key in fields if (section, key) not in reads]
    assert missing == []


def test_round_trip_through_dict():
    cfg = load_config(None, ["noise.kind=gaussian", "noise.snr_db=7.38"])
    assert config_from_dict(cfg.to_dict()) == cfg

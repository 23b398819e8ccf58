"""Property-based tests (hypothesis): random invalid config values and CLI arguments never give a traceback.

Every invalid value must give a ConfigError (a one-line message naming the key) from the loader, and a one-line
error with exit code 2 from the command line.
"""

import contextlib
import dataclasses
import io
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cycleseg.cli import main
from cycleseg.config import Config, config_from_dict, load_config
from cycleseg.errors import ConfigError

CYCLEGAN_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml")
HINTS = typing.get_type_hints(Config)  # config.py uses postponed annotations: resolve the section classes
SECTIONS = [name for name, hint in HINTS.items() if dataclasses.is_dataclass(hint)]
KEYS = sorted(f"{section}.{f.name}" for section, cls in ((s, HINTS[s]) for s in SECTIONS)
              for f in dataclasses.fields(cls))

# Any YAML-representable value: the loader must answer every one with a Config or a ConfigError.
scalars = (st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)

# Values that are wrong for every key of a given type (a list or a mapping is never a scalar setting).
wrong_for_any_scalar = st.lists(scalars, min_size=0, max_size=3) | st.dictionaries(st.text(max_size=5), scalars,
                                                                                      max_size=2)


def _assert_one_line(error: ConfigError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)


def _set(raw: dict, key: str, value) -> dict:
    section, name = key.split(".")
    raw.setdefault(section, {})[name] = value
    return raw


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_for_any_key_gives_a_config_or_a_one_line_error(key, value):
    try:
        cfg = config_from_dict(_set({}, key, value))
    except ConfigError as e:
        _assert_one_line(e)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(KEYS), value=wrong_for_any_scalar)
def test_a_list_or_mapping_for_a_setting_is_an_error_naming_the_key(key, value):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_set({}, key, value))
    _assert_one_line(e.value)
    assert key in str(e.value)


RATES_AND_WEIGHTS = ["optim.lr", "optim.beta1", "optim.beta2", "loss.alpha", "loss.beta", "loss.gamma", "loss.adv_y",
                     "loss.paired_f"]
COUNTS = ["optim.batch_size", "optim.epochs", "optim.pool_size", "optim.decay_start_epoch", "data.num_workers",
          "data.height", "data.width", "train.log_every", "train.eval_every", "train.checkpoint_every",
          "train.keep_checkpoints", "train.max_nonfinite", "model.num_classes", "train.image_every",
          "optim.unlabelled_batch_size", "train.keep_every", "optim.f_warmup_iters", "train.print_every"]


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(RATES_AND_WEIGHTS),
       value=st.sampled_from([float("nan"), float("inf"), -float("inf")]) | st.floats(max_value=-1e-9))
def test_nan_inf_and_negative_rates_and_weights_are_rejected(key, value):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_set({}, key, value))
    _assert_one_line(e.value)
    assert key in str(e.value)


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(COUNTS), value=st.integers(max_value=-1))
def test_negative_counts_are_rejected(key, value):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_set({}, key, value))
    _assert_one_line(e.value)
    assert key in str(e.value)


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=15).filter(lambda k: k.split(".")[0] not in SECTIONS and k != "name"),
       value=scalars)
def test_unknown_keys_are_one_line_errors(key, value):
    with pytest.raises(ConfigError) as e:
        config_from_dict({key: value})
    _assert_one_line(e.value)
    assert "unknown key" in str(e.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.text(max_size=60) | st.binary(max_size=60))
def test_any_yaml_file_gives_a_config_or_a_one_line_error(tmp_path, document):
    path = tmp_path / "c.yaml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document)
    try:
        load_config(path)
    except ConfigError as e:
        _assert_one_line(e)
        assert str(path) in str(e)


def _run_main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse exits itself on usage errors
            code = e.code
    return code, err.getvalue()


override_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(KEYS) | override_text, value=override_text | st.sampled_from(
    ["nan", ".nan", "-.inf", "[1, 2]", "{a: 1}", "-1", "0", "1e-3", "1/0", "x" * 200, "'", "null", "true"]))
def test_cli_train_with_random_overrides_never_tracebacks(key, value):
    code, err = _run_main(["train", CYCLEGAN_YAML, "--out", "/nonexistent/run", "--dry-run", f"{key}={value}"])
    if code == 0:
        return  # a valid override: the resolved config was printed
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("cycleseg"), lines[0]


@settings(max_examples=100, deadline=None)
@given(argv=st.lists(st.sampled_from(["train", "evaluate", "table", "--split", "--size", "--data",
                                      "--out", "--resume", "--checkpoint", "--device", "x", "-1", "12x", "a=b",
                                      "--bogus", "/nonexistent"]), max_size=6))
def test_cli_random_argument_lists_never_traceback(argv):
    code, err = _run_main(argv)
    if code != 0:
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) <= 2, err  # argparse: usage line + one error line
        assert err.strip().splitlines()[-1].startswith("cycleseg"), err


# Every setting, written out by hand: a key added to config.py fails the test below until it is added here, and
# so gets considered for RATES_AND_WEIGHTS, COUNTS or OTHER_NUMBERS.
ALL_KEYS = [
    "data.root", "data.format", "data.height", "data.width", "data.num_workers", "data.max_train_images", "data.max_val_images",
    "data.cache", "data.cache_dir", "data.check", "data.augment", "data.augment_scale", "data.labelled",
    "data.unpaired_labels",
    "model.kind", "model.num_classes", "model.arch", "model.f_input",
    "noise.kind", "noise.bits", "noise.snr_db", "noise.sigma_rule", "noise.scale", "noise.scale_rms", "noise.ste",
    "loss.alpha", "loss.beta", "loss.gamma", "loss.ignore_background", "loss.class_weights", "loss.adv_y", "loss.paired_f",
    "optim.lr", "optim.beta1", "optim.beta2", "optim.batch_size", "optim.epochs", "optim.decay_start_epoch",
    "optim.pool_size", "optim.kernel", "optim.unlabelled_batch_size", "optim.f_warmup_iters",
    "train.seed", "train.device", "train.print_every", "train.log_every", "train.eval_every", "train.max_iters", "train.progress",
    "train.checkpoint_every", "train.keep_checkpoints", "train.keep_every", "train.max_nonfinite", "train.precision",
    "train.channels_last", "train.compile", "train.image_every",
]
# Numeric settings that are neither a rate nor a count, and why.
OTHER_NUMBERS = {
    "train.seed": "any integer is a seed",
    "noise.snr_db": "negative dB are valid SNRs (the paper goes down to -20 dB)",
    "noise.bits": "1..8 only, checked in test_config.py",
    "noise.scale_rms": "a finite number > 0, checked in test_noise_scale.py",
    "train.max_iters": ">= 1 or null",
    "data.max_train_images": ">= 1 or null",
    "data.max_val_images": ">= 1 or null",
    "data.augment_scale": ">= 1, a zoom factor (test_comforts.py)",
    "data.labelled": "a fraction in (0, 1], a file or null (test_semi.py)",
}


def _is_numeric(hint) -> bool:
    options = typing.get_args(hint) or (hint,)
    return any(t in (int, float) for t in options)


def test_keys_cover_every_setting():
    """The strategies above draw from every key of every section: the keys read from the dataclasses are the
    explicit list above, and the keys a Config writes (to_dict, another code path)."""
    assert KEYS == sorted(ALL_KEYS)
    written = [f"{section}.{key}" for section, fields in Config().to_dict().items() if isinstance(fields, dict)
               for key in fields]
    assert KEYS == sorted(written)
    assert {"optim.lr", "noise.bits", "train.max_nonfinite", "data.height"} <= set(KEYS)
    assert set(RATES_AND_WEIGHTS + COUNTS) <= set(KEYS)
    assert not set(RATES_AND_WEIGHTS) & set(COUNTS) and not set(OTHER_NUMBERS) & set(RATES_AND_WEIGHTS + COUNTS)
    numeric = {f"{section}.{f.name}" for section in SECTIONS
               for f in dataclasses.fields(HINTS[section])
               if _is_numeric(typing.get_type_hints(HINTS[section])[f.name])}
    assert numeric == set(RATES_AND_WEIGHTS) | set(COUNTS) | set(OTHER_NUMBERS)  # every number is tested somewhere


@pytest.mark.parametrize("key", sorted(OTHER_NUMBERS))
def test_other_numbers_reject_wrong_values(key):
    wrong = {"train.seed": 0.5, "noise.snr_db": [1], "noise.bits": 0, "train.max_iters": 0,
             "data.max_train_images": -1, "data.max_val_images": 0, "data.augment_scale": 0.9,
             "data.labelled": 0, "noise.scale_rms": 0}[key]
    raw = _set({}, key, wrong)
    if key in ("noise.bits", "noise.scale_rms"):
        raw["noise"]["kind"] = "quantize"
        raw["noise"].setdefault("bits", 2)
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    _assert_one_line(e.value)
    assert key in str(e.value)

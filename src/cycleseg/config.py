"""Run configuration: typed dataclasses, loaded from YAML (configs/) and overridden with `key=value` strings.

Every field has the paper's value as default (SPEC), so an empty YAML file is the paper's CycleGAN without
noise. Unknown keys, wrong types and out-of-range values raise ConfigError naming the key and the fix. A file
may start from another (`base: FILE`, config_files). The comment beside (or above) a field documents it: the page
docs/reference/config.md is generated from these comments (docs/config_reference.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from cycleseg.config_files import read_config_file, snr_source
from cycleseg.core.augment import AUGMENT_MODES
from cycleseg.core.noise import DEFAULT_SCALE_RMS, NOISE_KINDS, SCALES, SIGMA_RULES, STES
from cycleseg.errors import ConfigError

__all__ = [
    "F_INPUTS",
    "MODEL_ARCHS",
    "MODEL_KINDS",
    "RESUMABLE_KEYS",
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "NoiseConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "check_keys",
    "config_from_dict",
    "flat_items",
    "labelled_subset",
    "load_config",
    "uses_d_y",
    "uses_unlabelled",
]

MODEL_KINDS = ("cyclegan", "plain")
MODEL_ARCHS = ("erfnet", "resnet_small")  # networks.ARCHS (config imports no networks)
F_INPUTS = ("scores", "softmax")
CACHE_MODES = ("auto", "off", "require")
DATA_FORMATS = ("auto", "cityscapes", "folder")  # data.source.FORMATS (config imports nothing from data)
CHECK_MODES = ("fast", "full", "off")
CLASS_WEIGHTS = ("none", "enet")
# Keys that do not change what a run computes: where the data lives and how it is read, the device, how often
# to log and checkpoint, and where to stop. Only these may differ when a run is resumed (runs.resume_config)
# or a sweep continues a run; any other difference is refused, naming the key.
RESUMABLE_KEYS = (
    "data.root", "data.num_workers", "data.cache", "data.cache_dir", "data.check",
    "train.device", "train.progress", "train.print_every", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.keep_every",
    "train.max_nonfinite", "train.max_iters", "train.image_every",
)


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # the dataset folder; `--data` on the command line overrides it
    # cityscapes (leftImg8bit/, gtFine/) | folder (images/, labels/, classes.yaml) | auto: folder if ROOT has a
    # classes.yaml (docs/guide/own-data.md)
    format: str = "auto"
    height: int = 256  # images are resized to height x width (the paper: 256 x 512)
    width: int = 512  # see data.height; both multiples of 8, at least 32
    num_workers: int = 0  # DataLoader worker processes
    max_train_images: int | None = None  # use only the first N training images (quick runs); None = all
    max_val_images: int | None = None  # same for validation
    # `cycleseg prepare`'s cache: auto (use it when it matches, rebuild it when stale) | off | require.
    # bool too: YAML reads a bare `off` as false, which means "off" here
    cache: str | bool = "auto"
    cache_dir: str | None = None  # where `prepare` writes the cache; None = <root>/cycleseg_cache
    check: str | bool = "fast"  # data checks when training starts: fast (names, sizes, modes) | full | off
    # training batches only (docs/guide/train-evaluate.md, "Training comforts"); none = the paper. none | flip (random left-right flip)
    # | flip+scale (flip, then zoom in: a random window of 1/s of the size, s in [1, augment_scale], resized back)
    augment: str | bool = "none"
    augment_scale: float = 1.5  # flip+scale: largest zoom factor s (>= 1)
    # semi-supervised training (docs/guide/semi-supervised-training.md): which training images are labelled. null =
    # all (the paper); a fraction in (0, 1] (e.g. 1/8; 1 = null), chosen by train.seed; or a file listing them,
    # one image path relative to data.root per line (the file relative to data.root, or absolute). The rest of
    # the training split is unlabelled: its labels are never read. Saved as RUN/labelled.txt
    labelled: float | str | None = None
    # label maps without images for the backward cycle (y -> F -> G) and D_Y, besides those of the labelled
    # images: a folder of label PNGs in the dataset's label values (relative to data.root, or absolute); null = none
    unpaired_labels: str | None = None


@dataclass
class ModelConfig:
    kind: str = "cyclegan"  # "cyclegan": G, F and D_X (Fig. 2); "plain": ERFNet G with J_seg alone
    # G's and F's network: erfnet (the paper) | resnet_small (3 stride-1 residual blocks of 32 channels: the
    # laboratory of docs/mechanism.md, where hiding is cheap to learn on a CPU)
    arch: str = "erfnet"
    # what F reads in the forward cycle: scores (the paper: the noise injection's output) | softmax (its softmax,
    # the class probabilities, as in Mondal et al. 2019; D_Y always judges softmax(G(x)))
    f_input: str = "scores"
    # S, the number of class scores: null = from the data (Cityscapes: 19 classes + background = 20; a folder
    # dataset: its classes.yaml, + 1 for void); a number is checked against the data
    num_classes: int | None = None


@dataclass
class NoiseConfig:
    kind: str = "none"  # none | max_only | quantize | gaussian
    bits: int | None = None  # quantize: n in 1..8, 2^n levels on [-1, 1]
    # gaussian: target SNR in dB, or "from RUN_DIR": the SNR that `cycleseg calibrate` measured for that run's
    # noise (how the paper paired each Gaussian run with a quantizer); resolved before training
    snr_db: float | str | None = None
    sigma_rule: str = "equal_snr"  # gaussian: equal_snr (SPEC default) | paper_eq13 (eq. 13 taken literally)
    scale: str = "none"  # quantize: none (eq. 9 as written) | rms (noisy = s Q(logits / s), s = RMS(logits) / scale_rms)
    scale_rms: float = DEFAULT_SCALE_RMS  # quantize with scale rms: r, the RMS of the quantizer's input
    ste: str = "identity"  # quantize: straight-through gradient, identity (the paper) | clipped (0 beyond +-1)


@dataclass
class LossConfig:
    alpha: float = 0.5  # forward cycle: alpha J_seg + (1 - alpha) J_rec_X
    beta: float = 1 / 11  # backward cycle: beta J_adv + (1 - beta) J_rec_Y
    gamma: float = 20 / 31  # J_gen = gamma J_forward + (1 - gamma) J_backward
    ignore_background: bool = False  # leave background pixels (trainId 255) out of the cross entropies
    class_weights: str = "none"  # none (the paper) | enet: 1 / ln(1.02 + p_c) from the training class frequencies
    # semi-supervised: weight of J_adv_Y, a second least-squares PatchGAN D_Y judging softmax(G(x_u)) of the
    # unlabelled images against one-hot label maps; default (1 - gamma) beta = 1/31, the weight of J_adv; 0 = no D_Y
    adv_y: float = 1 / 31
    # weight w of a paired reconstruction loss for F on the labelled images, J_gen += w * mean |F(onehot(y)) - x|
    # (Mondal et al. 2019); 0 = none (the paper)
    paired_f: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 2e-4  # Adam's learning rate for G, F and the discriminators (the paper: 2e-4)
    beta1: float = 0.5  # Adam's beta_1 (the paper, as CycleGAN: 0.5)
    beta2: float = 0.999  # Adam's beta_2
    batch_size: int = 4  # images per iteration (per process under torchrun; the paper: 4 in all)
    epochs: int = 200  # total epochs
    decay_start_epoch: int = 100  # constant LR before this epoch, then linear decay to 0 at `epochs`
    pool_size: int = 50  # image history buffer for D_X (and for D_Y of a semi-supervised run)
    # semi-supervised: unlabelled images per iteration; null = batch_size; 0 = none: the cycle model on the labelled
    # images alone (no unlabelled forward cycle, no D_Y), the reference that isolates what unlabelled images add
    unlabelled_batch_size: int | None = None
    kernel: str = "auto"  # Adam implementation: auto (fused) | fused | foreach | loop
    # the first N iterations of the schedule train F alone on labels -> image, mean |F(onehot(y)) - x| (G and
    # D_X untouched), so that F can use what G passes before the cycle starts; 0 = none (the paper)
    f_warmup_iters: int = 0


@dataclass
class TrainConfig:
    seed: int = 0  # seeds the weights, the batch order, the noise, the pool and the augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10  # iterations between log.jsonl / TensorBoard entries
    eval_every: int = 10  # epochs between validations (the last epoch is always validated); 0 = last only
    max_iters: int | None = None  # stop after this many iterations (smoke tests); None = full schedule
    progress: bool = True  # tqdm progress bar (the command line turns it off when stderr is not a terminal)
    # iterations between plain progress lines on stdout (step, epoch, losses, it/s, ETA, peak memory), printed
    # where no bar is watched: the bar off, or stdout not a terminal (a batch system's log file); also one at each
    # validation; 0 = none
    print_every: int = 50
    # iterations between checkpoints (last.pt; also at the start, the end and after validations); 0 = every epoch end
    checkpoint_every: int = 500
    keep_checkpoints: int = 0  # also keep a copy of the last N epochs' checkpoints (epoch_NNNN.pt)
    keep_every: int = 1  # ... of every k-th epoch only (curves over a long run: diagnose --along-training)
    max_nonfinite: int = 10  # stop after this many iterations in a row with a NaN/inf loss or gradient
    image_every: int = 0  # iterations between sample images in TensorBoard (x, prediction, x_rec, F(y), ...); 0 = off
    # speed (docs/guide/performance.md); fp32 keeps the paper's numerics bit for bit
    precision: str = "auto"  # fp32 | bf16 | fp16 (CUDA, with a gradient scaler) | auto
    channels_last: bool = True  # NHWC memory format for the convolutions
    compile: bool = False  # torch.compile the networks (slow first iterations, needs a C++ compiler on CPU)


@dataclass
class Config:
    name: str = "cyclegan"  # in tables, reports, log lines (train appends its model/noise/loss overrides; --name)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (None: defaults) with its `base:` chain, apply `section.key=value` overrides, validate."""
    raw: dict[str, Any] = read_config_file(path, check_keys) if path is not None else {}
    apply_overrides(raw, overrides)
    override_keys = {o.partition("=")[0].strip() for o in overrides}
    try:
        return config_from_dict(raw, source=str(path) if path else "config")
    except ConfigError as e:  # an error in a command-line override: name the command line, not the YAML file
        if e.key in override_keys or any(k.startswith(f"{e.key}.") for k in override_keys):  # nois.kind=x: nois
            raise ConfigError(f"command line: {e.reason}", key=e.key) from None
        raise


def flat_items(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """[("section.key", value), ...] of a nested config dict, in order."""
    items = []
    for k, v in d.items():
        items += flat_items(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return items


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `a.b=value` entries into the nested dict `raw` (values parsed as YAML scalars)."""
    for i, item in enumerate(overrides):
        key, sep, text = item.partition("=")
        if not sep or not key:
            following = overrides[i + 1] if i + 1 < len(overrides) else None
            hint = (f"did you mean {item}={following}?" if key and following is not None and "=" not in following
                    else "e.g. noise.bits=2")
            raise ConfigError(f"override {item!r}: expected KEY=VALUE; {hint}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a config section")
        node[leaf] = value
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    cfg = _build(Config, raw, prefix="", source=source)
    _validate(cfg, source)
    return cfg


def check_keys(raw: dict[str, Any], source: str) -> None:
    """The keys and types of one file's settings (any part of a config), ConfigError naming `source`."""
    _build(Config, raw, prefix="", source=source)


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            why = f"unknown key {f'{prefix}{key}'!r}{_did_you_mean(prefix, str(key), fields)}; valid keys: " \
                  f"{', '.join(sorted(fields))}"
            raise ConfigError(f"{source}: {why}", key=f"{prefix}{key}", reason=why)
    kwargs = {}
    for name, value in raw.items():
        hint, key = hints[name], prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".", source)
        else:
            kwargs[name] = _check_type(value, hint, key, source)
    return cls(**kwargs)


def _did_you_mean(prefix: str, key: str, fields: set[str]) -> str:
    """" (did you mean 'noise.bits'?)": the closest key of the section (difflib), else a key of that name in another
    section (`train.lr` -> optim.lr); "" when nothing is close."""
    close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    if prefix:  # the right key in the wrong section
        elsewhere = [k for k, _ in flat_items(Config().to_dict()) if k.split(".")[-1] == key]
        if elsewhere:
            return f" (did you mean {elsewhere[0]!r}?)"
    return ""


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check value against int, float, str, bool or `X | None`; ints are accepted (and cast) for floats."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in args:
        return None
    for t in args:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str) and _parse_float(value) is not None:
            return _parse_float(value)
        if t is str and isinstance(value, str):
            return value
    if float in args and isinstance(value, (str, float)) and _is_number(value):  # nan, inf, 1/0
        why = f"{key} must be a finite number, got {value!r}"
    else:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in args)
        why = f"{key} must be {names}, got {value!r} ({type(value).__name__})"
    raise ConfigError(f"{source}: {why}", key=key, reason=why)


_Fail = Callable[[str, str], NoReturn]  # raises the ConfigError of (key, why), naming the config file


def _validate(cfg: Config, source: str) -> None:
    """Cross-field and range rules, checked before anything is built; the first broken rule is the error, in the
    order: data, model and noise, the semi-supervised keys, optimization and training."""

    def fail(key: str, why: str) -> NoReturn:
        raise ConfigError(f"{source}: {key} {why}", key=key, reason=f"{key} {why}")

    _validate_data(cfg, fail)
    _validate_model(cfg, fail)
    _validate_semi(cfg, fail)
    _validate_optim(cfg, fail)


def _validate_data(cfg: Config, fail: _Fail) -> None:
    """data.*: sizes, limits, the cache, check and augmentation modes (`off` in YAML arrives as false)."""
    d, lo = cfg.data, cfg.loss
    for key, v in (("data.height", d.height), ("data.width", d.width)):
        if v < 32 or v % 8:
            fail(key, f"must be a multiple of 8 and at least 32 (ERFNet and D_X downsample by 8), got {v}")
    if d.num_workers < 0:
        fail("data.num_workers", f"must be >= 0, got {d.num_workers}")
    for key, v in (("data.max_train_images", d.max_train_images), ("data.max_val_images", d.max_val_images)):
        if v is not None and v < 1:
            fail(key, f"must be >= 1 or null, got {v}")
    d.cache = "off" if d.cache is False else d.cache  # `data.cache: off` in YAML arrives as false
    d.check = "off" if d.check is False else d.check
    d.augment = "none" if d.augment is False else d.augment  # `data.augment: off` in YAML arrives as false
    for key, v, allowed in (("data.cache", d.cache, CACHE_MODES), ("data.check", d.check, CHECK_MODES),
                            ("loss.class_weights", lo.class_weights, CLASS_WEIGHTS),
                            ("data.augment", d.augment, AUGMENT_MODES)):
        if v not in allowed:
            fail(key, f"must be one of {', '.join(allowed)}, got {v!r}")
    if not (math.isfinite(d.augment_scale) and d.augment_scale >= 1.0):
        fail("data.augment_scale", f"must be a finite number >= 1 (the largest zoom-in factor), got {d.augment_scale}")
    if d.cache_dir is not None and not d.cache_dir.strip():
        fail("data.cache_dir", "must be a folder or null (null: <data.root>/cycleseg_cache)")


def _validate_model(cfg: Config, fail: _Fail) -> None:
    """model.*, the laboratory's keys (loss.paired_f, optim.f_warmup_iters), data.format and noise.*."""
    d, m, n, lo, o = cfg.data, cfg.model, cfg.noise, cfg.loss, cfg.optim
    if m.kind not in MODEL_KINDS:
        fail("model.kind", f"must be one of {', '.join(MODEL_KINDS)}, got {m.kind!r}")
    if m.f_input not in F_INPUTS:
        fail("model.f_input", f"must be one of {', '.join(F_INPUTS)}, got {m.f_input!r}")
    if m.arch not in MODEL_ARCHS:
        fail("model.arch", f"must be one of {', '.join(MODEL_ARCHS)}, got {m.arch!r}")
    if not (math.isfinite(lo.paired_f) and lo.paired_f >= 0.0):
        fail("loss.paired_f", f"must be a finite number >= 0 (0: no paired loss for F), got {lo.paired_f}")
    if o.f_warmup_iters < 0:
        fail("optim.f_warmup_iters", f"must be >= 0 (0: no warm-up of F), got {o.f_warmup_iters}")
    if m.kind != "cyclegan" and (lo.paired_f or o.f_warmup_iters):
        fail("loss.paired_f" if lo.paired_f else "optim.f_warmup_iters",
             "is only used by model.kind=cyclegan (the plain network has no F); remove it")
    if d.format not in DATA_FORMATS:
        fail("data.format", f"must be one of {', '.join(DATA_FORMATS)}, got {d.format!r}")
    if m.num_classes is not None and m.num_classes < 2:
        fail("model.num_classes", f"must be >= 2, got {m.num_classes}")
    if n.kind not in NOISE_KINDS:
        fail("noise.kind", f"must be one of {', '.join(NOISE_KINDS)}, got {n.kind!r}")
    if n.kind == "quantize" and (n.bits is None or not 1 <= n.bits <= 8):
        fail("noise.bits", f"must be an integer in 1..8 for noise.kind=quantize, got {n.bits}")
    if n.kind == "gaussian" and n.snr_db is None:
        fail("noise.snr_db", "is required for noise.kind=gaussian (target SNR in dB, e.g. 7.38)")
    if isinstance(n.snr_db, str) and snr_source(n.snr_db) is None:
        fail("noise.snr_db", f"must be a number in dB or 'from RUN_DIR', got {n.snr_db!r}")
    if n.kind != "gaussian" and n.snr_db is not None:
        fail("noise.snr_db", f"is only used with noise.kind=gaussian (kind is {n.kind}); remove it")
    for key, value, choices in (("sigma_rule", n.sigma_rule, SIGMA_RULES), ("scale", n.scale, SCALES), ("ste", n.ste, STES)):
        if value not in choices:
            fail(f"noise.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    if not (math.isfinite(n.scale_rms) and n.scale_rms > 0):
        fail("noise.scale_rms", f"must be a finite number > 0 (the paper's SNRs: {DEFAULT_SCALE_RMS}), got {n.scale_rms}")
    for key, value, unset in (("bits", n.bits, None), ("scale", n.scale, "none"), ("ste", n.ste, "identity"),
                              ("scale_rms", n.scale_rms, DEFAULT_SCALE_RMS)):  # the quantizer's own keys
        if n.kind != "quantize" and value != unset:
            fail(f"noise.{key}", f"is only used with noise.kind=quantize (kind is {n.kind}); remove it")
    if m.kind == "plain" and n.kind != "none":
        fail("noise.kind", "must be none for model.kind=plain (the plain ERFNet has no forward cycle)")


def _validate_semi(cfg: Config, fail: _Fail) -> None:
    """Semi-supervised training: data.labelled, data.unpaired_labels, optim.unlabelled_batch_size, loss.adv_y."""
    d, m, lo, o = cfg.data, cfg.model, cfg.loss, cfg.optim
    if isinstance(d.labelled, float) and not 0.0 < d.labelled <= 1.0:
        fail("data.labelled", f"must be a fraction in (0, 1] (e.g. 1/8), a file listing the labelled images or null "
                              f"(all labelled), got {d.labelled}")
    if isinstance(d.labelled, str) and (not d.labelled.strip() or _is_number(d.labelled)):
        fail("data.labelled", f"must be a fraction in (0, 1] (e.g. 1/8), a file listing the labelled images or null "
                              f"(all labelled), got {d.labelled!r}")
    if d.unpaired_labels is not None and not d.unpaired_labels.strip():
        fail("data.unpaired_labels", "must be a folder of label PNGs or null")
    if d.unpaired_labels is not None and m.kind != "cyclegan":
        fail("data.unpaired_labels", "is only used by the backward cycle of model.kind=cyclegan; remove it")
    if o.unlabelled_batch_size is not None and o.unlabelled_batch_size < 0:
        fail("optim.unlabelled_batch_size", f"must be >= 0 or null (null: optim.batch_size; 0: no unlabelled images), "
                                            f"got {o.unlabelled_batch_size}")
    if o.unlabelled_batch_size is not None and not (labelled_subset(cfg) and m.kind == "cyclegan"):
        fail("optim.unlabelled_batch_size", "is only used by a semi-supervised run (model.kind=cyclegan with "
                                            "data.labelled below 1); remove it")
    if not (math.isfinite(lo.adv_y) and lo.adv_y >= 0.0):
        fail("loss.adv_y", f"must be a finite number >= 0 (0: no D_Y), got {lo.adv_y}")


def _validate_optim(cfg: Config, fail: _Fail) -> None:
    """The loss weights, optim.* and train.*."""
    lo, o, t = cfg.loss, cfg.optim, cfg.train
    for key, v in (("loss.alpha", lo.alpha), ("loss.beta", lo.beta), ("loss.gamma", lo.gamma)):
        if not 0.0 <= v <= 1.0:
            fail(key, f"must be in [0, 1] (eqs. 5-7), got {v}")
    if not (math.isfinite(o.lr) and o.lr > 0):
        fail("optim.lr", f"must be a finite number > 0, got {o.lr}")
    for key, v in (("optim.beta1", o.beta1), ("optim.beta2", o.beta2)):
        if not 0.0 <= v < 1.0:
            fail(key, f"must be in [0, 1), got {v}")
    if o.batch_size < 1:
        fail("optim.batch_size", f"must be >= 1, got {o.batch_size}")
    if o.epochs < 1:
        fail("optim.epochs", f"must be >= 1, got {o.epochs}")
    if not 0 <= o.decay_start_epoch <= o.epochs:
        fail("optim.decay_start_epoch", f"must be in 0..optim.epochs ({o.epochs}), got {o.decay_start_epoch}; "
                                        f"when you change optim.epochs, set optim.decay_start_epoch too (the paper "
                                        f"decays over the second half: optim.decay_start_epoch={o.epochs // 2})")
    if o.pool_size < 0:
        fail("optim.pool_size", f"must be >= 0, got {o.pool_size}")
    if t.log_every < 1:
        fail("train.log_every", f"must be >= 1, got {t.log_every}")
    if t.print_every < 0:
        fail("train.print_every", f"must be >= 0 (0 = no progress lines), got {t.print_every}")
    if t.eval_every < 0:
        fail("train.eval_every", f"must be >= 0, got {t.eval_every}")
    for key, v in (("train.checkpoint_every", t.checkpoint_every), ("train.keep_checkpoints", t.keep_checkpoints)):
        if v < 0:
            fail(key, f"must be >= 0, got {v}")
    if t.keep_every < 1:
        fail("train.keep_every", f"must be >= 1 (keep every k-th epoch's checkpoint), got {t.keep_every}")
    if t.image_every < 0:
        fail("train.image_every", f"must be >= 0 (0 = no sample images), got {t.image_every}")
    if t.max_nonfinite < 1:
        fail("train.max_nonfinite", f"must be >= 1, got {t.max_nonfinite}")
    if t.max_iters is not None and t.max_iters < 1:
        fail("train.max_iters", f"must be >= 1 or null, got {t.max_iters}")
    if t.precision not in ("fp32", "bf16", "fp16", "auto"):
        fail("train.precision", f"must be fp32, bf16, fp16 or auto, got {t.precision!r}")
    if o.kernel not in ("auto", "fused", "foreach", "loop"):
        fail("optim.kernel", f"must be auto, fused, foreach or loop, got {o.kernel!r}")
    if not (t.device in ("auto", "cpu", "cuda") or (t.device.startswith("cuda:") and t.device[5:].isdigit())):
        fail("train.device", f"must be auto, cpu, cuda or cuda:N, got {t.device!r}")


def labelled_subset(cfg: Config) -> bool:
    """Whether the run trains on a labelled part of the training split only (data.labelled set and not 1): the
    plain baseline on that part, or a semi-supervised cycle model (`uses_unlabelled`)."""
    return cfg.data.labelled is not None and cfg.data.labelled != 1.0


def uses_unlabelled(cfg: Config) -> bool:
    """Whether the run is semi-supervised: a cycle model whose unlabelled images train through the forward cycle
    (not with optim.unlabelled_batch_size 0: the cycle model on its labelled images alone)."""
    return labelled_subset(cfg) and cfg.model.kind == "cyclegan" and cfg.optim.unlabelled_batch_size != 0


def uses_d_y(cfg: Config) -> bool:
    """Whether the run has the second discriminator D_Y (semi-supervised, loss.adv_y > 0)."""
    return uses_unlabelled(cfg) and cfg.loss.adv_y > 0


def _is_number(value: str | float) -> bool:
    """Whether `value` is a number at all (finite or not), e.g. "nan", "inf", "-inf", 1e999."""
    if isinstance(value, float):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _parse_float(text: str) -> float | None:
    """A float written as text: "1e-3" (which PyYAML reads as a string) or a fraction such as "1/11"."""
    try:
        num, sep, den = text.partition("/")
        value = float(num) / float(den) if sep else float(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None

"""The models of a run: its trained networks (`load_run`), the weights a new run starts from (`init_weights`),
and inference with the run's seeded noise (`seeded_inference`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cycleseg.config import MODEL_KINDS, Config, config_from_dict, uses_d_y
from cycleseg.core.models import Models, build_models
from cycleseg.core.precision import FP32, Precision
from cycleseg.errors import ConfigError, RunError
from cycleseg.runs.checkpoint import check_compatible, load_checkpoint
from cycleseg.runs.files import _first_line, read_yaml
from cycleseg.runs.paths import BEST, CLASSES, CONFIG, LAST
from cycleseg.runs.record import run_classes


def init_weights(source: str | Path, cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights a new run starts from (`train --init-from`): those of the networks that `source` (a checkpoint
    file, or a run directory: its best.pt, else its last.pt) and the model of `cfg` have in common, G always.

    A plain run's G may start a cycle model's G (and a cycle run's G a plain one). Returns (record, weights):
    record = {"path", "step", "networks"} for run.json, weights = {"G": state_dict, ...}. RunError naming the
    file when it is no checkpoint, holds another number of classes or weights that do not fit.
    """
    source = Path(source)
    path = (source / BEST if (source / BEST).is_file() else source / LAST) if source.is_dir() else source
    state = load_checkpoint(path)
    saved, model = state.get("model") or state.get("config", {}).get("model", {}), cfg.model
    if saved.get("num_classes") != model.num_classes or saved.get("kind") not in MODEL_KINDS:
        raise RunError(f"{path}: checkpoint is of a {saved.get('kind')} model with {saved.get('num_classes')} "
                       f"classes, this run is a {model.kind} model with {model.num_classes}; --init-from needs the "
                       f"same model.num_classes")
    target = build_models(model, cfg.noise, d_y=uses_d_y(cfg))  # only to check that the weights fit
    weights = {}
    for net in ("G", "F", "D", "D_Y"):
        part = {k[len(net) + 1:]: v for k, v in state.get("models", {}).items() if k.startswith(f"{net}.")}
        if part and getattr(target, net) is not None:
            expected = getattr(target, net).state_dict()
            problems = ([f"{k} is missing" for k in expected if k not in part]
                        + [f"{k} is not in this model" for k in part if k not in expected]
                        + [f"{k} has shape {tuple(part[k].shape)}, this model {tuple(v.shape)}"
                           for k, v in expected.items() if k in part and part[k].shape != v.shape])
            if problems:
                raise RunError(f"{path}: the weights of {net} do not fit this run's model ({problems[0]}"
                               f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''})")
            weights[net] = part
    if "G" not in weights:
        raise RunError(f"{path}: checkpoint holds no weights of G to initialise from")
    step = (state.get("progress") or {}).get("step", state.get("step"))
    names = [{"D": "D_X"}.get(net, net) for net in weights]
    return {"path": str(path.resolve()), "step": step, "networks": names}, weights


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", checkpoint: str = LAST, trust: bool = False
             ) -> tuple[Models, Config]:
    """The trained models (in eval mode, on `device`) and config of a run: its last.pt, or another file in it.
    `trust`: also read a checkpoint of cycleseg 0.1.0 (load_checkpoint)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run directory not found; pass the --out folder of `cycleseg train`")
    path = run_dir / checkpoint
    state = load_checkpoint(path, map_location=device, trust=trust)
    try:
        cfg = config_from_dict(state["config"], source=str(path))
        check_compatible(state, cfg.model.kind, cfg.model.num_classes, path)
        models = build_models(cfg.model, cfg.noise, d_y=uses_d_y(cfg))
        models.load_state_dict(state["models"])
    except (KeyError, RuntimeError, ConfigError) as e:
        raise RunError(f"{path}: checkpoint does not match its config ({_first_line(e)})") from None
    _require_run_model(run_dir, cfg, path, checkpoint)
    classes = run_classes(run_dir)
    if classes.num_classes != models.num_classes:  # a checkpoint copied in from another run
        raise RunError(f"{path}: holds a model of {models.num_classes} classes, but the run's {CLASSES} has "
                       f"{classes.num_classes}; this checkpoint comes from another run: copy that run's "
                       f"{checkpoint} here or point at that run")
    return models.to(device).eval(), cfg


def _require_run_model(run_dir: Path, cfg: Config, path: Path, checkpoint: str) -> None:
    """RunError naming the checkpoint file when it holds another kind of model than the run's config.yaml (a
    plain run's last.pt copied into a cycle run as epoch_0000.pt): the file is at fault, not the run."""
    if not (run_dir / CONFIG).is_file():
        return  # a run from before config.yaml: the checkpoint is all there is
    kind = (read_yaml(run_dir / CONFIG).get("model") or {}).get("kind")
    if kind is not None and kind != cfg.model.kind:
        raise RunError(f"{path}: holds a {cfg.model.kind} model, but the run {run_dir} is a {kind} model (its "
                       f"{CONFIG}); this checkpoint comes from another run: remove it, copy the run's own "
                       f"{checkpoint} here, or point at that other run")


@contextlib.contextmanager
def seeded_inference(module: torch.nn.Module, seed: int, device: torch.device | str = "cpu",
                     amp: Precision | None = None) -> Iterator[None]:
    """Eval mode, no autograd, the global RNG seeded with `seed` (the noise injection's Gaussian draws repeat)
    and, with `amp`, its autocast inside; the module's mode and the caller's RNG streams are restored after."""
    device = torch.device(device)
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode(), \
                (amp or FP32).autocast():
            torch.manual_seed(seed)
            yield
    finally:
        module.train(was_training)


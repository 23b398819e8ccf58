"""The training state: everything a run needs to go on exactly as if it had never stopped.

`TrainState` holds the models (G, F, D_X and the noise), both Adam optimizers and their LR schedules, the image
pool, the fp16 gradient scalers, the `Progress` counters and, in its `state_dict`, the RNG states. A
semi-supervised run with loss.adv_y > 0 adds D_Y, its Adam optimizer, LR schedule and pool of softmax maps. `save`
and `load` go through the run layer's atomic checkpoint files.
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cycleseg.config import Config, uses_d_y
from cycleseg.core import distributed, seeding
from cycleseg.core.models import build_models
from cycleseg.core.pool import ImagePool
from cycleseg.core.precision import PRECISION_DTYPES, Precision, make_adam, precision_reason, resolve_precision
from cycleseg.core.steps import lr_factor
from cycleseg.errors import RunError
from cycleseg.runs import (
    check_compatible,
    load_checkpoint,
    numpy_rng_from_plain,
    numpy_rng_to_plain,
    save_checkpoint,
)

__all__ = ["Progress", "TrainState"]


@dataclass
class Progress:
    """Where training stands. An epoch whose batches are all done but that is not closed yet (LR schedule step,
    validation) has batch_in_epoch == batches per epoch: a run stopped there closes it when resumed."""

    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0  # iterations done in total
    best_miou: float | None = None
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    validated_step: int | None = None  # step of the latest validation
    last_metrics: dict[str, Any] | None = None  # its results: what metrics.json reports at the end
    train_seconds: float = 0.0  # time spent training, over all sessions


class TrainState:
    """Models, optimizers, schedulers, pool, scalers and progress of one run (one process of it).

    `run_config` is the run's own config (a dict), stored in every checkpoint; a resumed session may run
    with other RESUMABLE_KEYS (train.max_iters, ...) without making them part of the run.
    """

    def __init__(self, cfg: Config, device: torch.device, run_config: dict[str, Any] | None = None) -> None:
        self.run_config = run_config if run_config is not None else cfg.to_dict()
        self.device = device
        self.requested_precision = cfg.train.precision
        self.amp = resolve_precision(cfg.train.precision, device)
        self.precision_reason = precision_reason(cfg.train.precision, self.amp)
        self.models = build_models(cfg.model, cfg.noise, d_y=uses_d_y(cfg)).to(device)
        if cfg.train.channels_last:
            self.models.to(memory_format=torch.channels_last)
        adam = {"lr": cfg.optim.lr, "betas": (cfg.optim.beta1, cfg.optim.beta2), "kernel": cfg.optim.kernel,
                "device": device}
        m = self.models
        self.opt_g = make_adam(list(m.G.parameters()) + (list(m.F.parameters()) if m.is_cycle else []), **adam)
        self.opt_d = make_adam(list(m.D.parameters()), **adam) if m.is_cycle else None
        # D_Y (semi-supervised, loss.adv_y > 0): its own Adam, schedule and pool of softmax maps, as D_X has
        self.opt_dy = make_adam(list(m.D_Y.parameters()), **adam) if m.D_Y is not None else None
        # past the last epoch nothing trains: 0 there (lr_factor divides by zero when decay_start_epoch == epochs,
        # and the last epoch's close asks for epoch `epochs`)
        schedule = lambda epoch: (lr_factor(epoch, cfg.optim.epochs, cfg.optim.decay_start_epoch)
                                  if epoch < cfg.optim.epochs else 0.0)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        self.pool = ImagePool(cfg.optim.pool_size, seed=cfg.train.seed + distributed.rank())
        # D_Y's pool: the seed of D_X's pool plus 1_000_003 (mix_seed(1, s) = 1_000_003 + s), its own stream
        pool_y_seed = seeding.mix_seed(1, cfg.train.seed + distributed.rank(), modulus=None)
        self.pool_y = ImagePool(cfg.optim.pool_size, seed=pool_y_seed) if m.D_Y is not None else None
        self.progress = Progress()

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.opt_g, self.opt_d, self.opt_dy) if o is not None]

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def use_precision(self, name: str, reason: str) -> None:
        """Run the networks in `name` (fp32 / bf16 / fp16) from now on; `reason` says why (run.json, log)."""
        if name != self.amp.name:
            self.amp = Precision(self.device.type, PRECISION_DTYPES[name])
        self.precision_reason = reason

    def close_epoch(self) -> None:
        """The end of an epoch: one step of the LR schedule, and on to the next epoch."""
        with warnings.catch_warnings():  # a run resumed at an epoch's end closes it before its first update
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
            for s in self.schedulers:
                s.step()
        self.progress.epoch += 1
        self.progress.batch_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        # Never let a checkpoint carry NaN weights. One check over all weights (one device sync, not one per
        # parameter); the name of the first bad one only when there is one.
        params = dict(self.models.named_parameters())
        if not torch.isfinite(torch.cat([p.detach().reshape(-1) for p in params.values()])).all():
            name = next(n for n, p in params.items() if not torch.isfinite(p).all())
            raise RunError(f"parameter {name} is not finite; not writing a checkpoint (the last one is kept)")
        return {
            "config": self.run_config,
            "model": {"kind": self.models.kind, "num_classes": self.models.num_classes},
            "models": self.models.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "pool": self.pool.state_dict(),
            **({"pool_y": self.pool_y.state_dict()} if self.pool_y is not None else {}),
            "scalers": [self.amp.scaler(o).state_dict() for o in self.optimizers] if self.amp.uses_scaler else [],
            "progress": asdict(self.progress),
            "precision": {"name": self.amp.name, "reason": self.precision_reason},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),  # (3, 625 ints, None): plain data already
                "numpy": numpy_rng_to_plain(np.random.get_state()),
            },
        }

    def weights_dict(self) -> dict[str, Any]:
        """What best.pt keeps (issue 14): the weights, config, model kind and classes, step, progress and metrics;
        no optimizer, schedule, pool or RNG state (a third of the size). `runs.load_run` reads it like last.pt."""
        full = self.state_dict()
        return {k: full[k] for k in ("config", "model", "models", "progress", "precision")} | {
            "weights_only": True, "step": self.progress.step, "metrics": self.progress.last_metrics}

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore everything `state_dict` saved, RNG states included; RunError naming `source` on a mismatch."""
        check_compatible(state, self.models.kind, self.models.num_classes, Path(source))
        if state.get("weights_only"):
            raise RunError(f"{source}: holds weights only (no optimizer or progress state), so a run cannot continue "
                           f"from it; resume from last.pt, or start a new run with --init-from {source}")
        try:
            self.models.load_state_dict(state["models"])
            for o, s in zip(self.optimizers, state["optimizers"], strict=True):
                o.load_state_dict(s)
            for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
                sch.load_state_dict(s)
                # the current epoch's rate from this session's schedule: the saved one unless a resume extended
                # optim.epochs (runs.resume_config allows that only where the epochs trained keep their rates)
                for group, base, factor in zip(sch.optimizer.param_groups, sch.base_lrs, sch.lr_lambdas, strict=True):
                    group["lr"] = base * factor(sch.last_epoch)
                sch._last_lr = [group["lr"] for group in sch.optimizer.param_groups]
            self.pool.load_state_dict(state["pool"])
            if self.pool_y is not None:
                self.pool_y.load_state_dict(state["pool_y"])
            if "precision" in state:  # the choice of `auto` made when the run started holds for all of it
                self.use_precision(state["precision"]["name"], state["precision"]["reason"])
            elif self.requested_precision == "auto" and self.device.type == "cpu":
                self.use_precision("fp32", "auto: fp32 on the CPU, the rule when this run's checkpoint was written")
            if self.amp.uses_scaler and state.get("scalers"):
                for o, s in zip(self.optimizers, state["scalers"], strict=True):
                    self.amp.scaler(o).load_state_dict(s)
            self.progress = Progress(**state["progress"])
            rng = state["rng"]
            numpy_state = numpy_rng_from_plain(rng["numpy"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise RunError(f"{source}: checkpoint does not match this run ({str(e).splitlines()[0]})") from None
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        random.setstate(rng["python"])
        np.random.set_state(numpy_state)

    def save(self, path: str | Path, weights_only: bool = False) -> None:
        """Write the state atomically (rank 0 only under torchrun: the ranks hold the same weights); with
        `weights_only`, just `weights_dict` (best.pt)."""
        if distributed.is_main():
            save_checkpoint(path, self.weights_dict() if weights_only else self.state_dict())

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path, map_location=self.device), source=str(path))
        distributed.broadcast_parameters(self.models)

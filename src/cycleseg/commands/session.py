"""One evaluation session: a trained run's models on a device and, for the commands that read data, one split of
a data folder, opened once.

`evaluate`, `calibrate`, `diagnose` (both modes), `predict` and `segment` set themselves up here and nowhere else,
so they agree on what opening a run means:

1. the device (`core.models.resolve_device`: auto, cpu, cuda, cuda:N) and the precision (`resolve_precision`);
2. the run's models and config from one checkpoint (`runs.load_run`), in eval mode on that device;
3. the run's class table, and, for a data folder, the check that its classes are the run's (`check_classes`,
   the one owner of that check: scoring labels of other classes, or writing predictions in another class table's
   values, would be meaningless);
4. the split opened once (`data.open_split`: the run's size, cache settings and data.max_*_images; optionally
   only its first `max_images`), and DataLoaders over it in order.

`segment` reads photos, not a split: it takes the model part only (`open_model`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from cycleseg import runs
from cycleseg.config import Config
from cycleseg.core.models import Models, resolve_device
from cycleseg.core.precision import Precision, resolve_precision
from cycleseg.data import ClassTable, DataSource, open_source, open_split
from cycleseg.errors import RunError
from cycleseg.runs import LAST

__all__ = ["Session", "check_classes", "open_model", "open_session"]


@dataclass
class Session:
    """A run opened for inference.

    Attributes:
        run_dir: the run folder; checkpoint: the file in it the models come from.
        models: G (and F, the noise injection, for cycle models), in eval mode on `device`.
        config: the run's config (from the checkpoint).
        amp: the precision the networks run in (autocast dtype, or fp32).
        classes: the run's class table (classes.yaml; Cityscapes for older runs).
        data_root, split, dataset: the split opened once; None for the model part alone (`open_model`).
        channels_last: whether the weights are NHWC (faster convolutions for inference).
    """

    run_dir: Path
    checkpoint: str
    device: torch.device
    models: Models
    config: Config
    amp: Precision
    classes: ClassTable
    data_root: str | Path | None = None
    split: str | None = None
    dataset: Dataset | None = None
    channels_last: bool = False

    def loader(self, batch_size: int | None = None) -> DataLoader:
        """The split in order, in batches of (image (B, 3, H, W), labels (B, H, W)); batch_size default: the
        run's optim.batch_size."""
        if self.dataset is None:
            raise RunError(f"{self.run_dir}: no data split opened; open the session with a data folder")
        return DataLoader(self.dataset, batch_size=batch_size or self.config.optim.batch_size, shuffle=False,
                          num_workers=self.config.data.num_workers, pin_memory=self.device.type == "cuda")

    def batches(self, command: str, progress: bool = False, batch_size: int | None = None
                ) -> Iterable[tuple[Tensor, Tensor]]:
        """`loader`, behind a progress bar titled "<command> <split>" (shown only with `progress`)."""
        return tqdm(self.loader(batch_size), desc=f"{command} {self.split}", unit="batch", disable=not progress,
                    dynamic_ncols=True, leave=False)

    def reload(self, checkpoint: str, require_cycle: str | None = None) -> Session:
        """The same session (device, precision, classes, split) with the models of another checkpoint of the run:
        `diagnose --along-training` follows the checkpoints over one split opened once."""
        models, cfg = _load(self.run_dir, self.device, checkpoint, self.channels_last, require_cycle)
        return dataclasses.replace(self, checkpoint=checkpoint, models=models, config=cfg)


def check_classes(run_dir: str | Path, cfg: Config, data_root: str | Path, source: DataSource | None = None
                  ) -> ClassTable:
    """The run's class table, after checking that the data folder `data_root` (read in the run's data.format, or
    the already opened `source`) has the same classes; RunError naming both otherwise. Every command that reads
    data with a run goes through here."""
    source = source or open_source(data_root, cfg.data.format)
    return runs.require_same_classes(run_dir, source.classes, data_root)


def open_model(run_dir: str | Path, device: str = "auto", checkpoint: str = LAST, precision: str = "fp32",
               channels_last: bool = False, trust: bool = False, require_cycle: str | None = None) -> Session:
    """The model part of a session: the run's models from `checkpoint` on `device`, its class table, no data.

    Args:
        precision: auto, fp32, bf16 or fp16 (core.precision.PRECISIONS); fp32 gives the reference numbers.
        channels_last: NHWC weights (faster convolutions for inference on CPUs and GPUs).
        trust: also read a checkpoint of cycleseg 0.1.0 (runs.load_checkpoint).
        require_cycle: for a command that needs F: the error's text after "RUN_DIR: " when the run is a plain
            ERFNet (checked before any data is opened).
    """
    dev = resolve_device(device)
    run_dir = Path(run_dir)
    models, cfg = _load(run_dir, dev, checkpoint, channels_last, require_cycle, trust)
    amp = resolve_precision(precision, dev)
    return Session(run_dir, checkpoint, dev, models, cfg, amp, runs.run_classes(run_dir),
                   channels_last=channels_last)


def open_session(run_dir: str | Path, data_root: str | Path, split: str, device: str = "auto",
                 checkpoint: str = LAST, precision: str = "fp32", max_images: int | None = None,
                 channels_last: bool = False, require_cycle: str | None = None) -> Session:
    """`open_model`, then the data folder's classes checked against the run's (`check_classes`) and `split` opened
    once as every command opens it (`data.open_split`), cut to its first `max_images` when given."""
    session = open_model(run_dir, device, checkpoint, precision, channels_last, require_cycle=require_cycle)
    source = open_source(data_root, session.config.data.format)  # opened once: the split's folder is walked once
    classes = check_classes(run_dir, session.config, data_root, source)
    dataset = open_split(session.config, split, root=data_root, source=source)
    if max_images is not None and max_images < len(dataset):
        dataset = Subset(dataset, range(max_images))
    return dataclasses.replace(session, classes=classes, data_root=data_root, split=split, dataset=dataset)


def _load(run_dir: Path, device: torch.device, checkpoint: str, channels_last: bool, require_cycle: str | None,
          trust: bool = False) -> tuple[Models, Config]:
    """runs.load_run, NHWC weights when asked, and the cycle-model check."""
    models, cfg = runs.load_run(run_dir, device, checkpoint, trust=trust)
    if channels_last:
        models.to(memory_format=torch.channels_last)
    if require_cycle is not None and not models.is_cycle:
        raise RunError(f"{run_dir}: {require_cycle}")
    return models, cfg

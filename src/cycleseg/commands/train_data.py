"""What a run trains and validates on: its data opened once (`open_train_data`), the batches of an epoch in
their seeded order (`epoch_batches`), the unlabelled and backward-cycle streams (`extra_batches`) and the class
weights (`enet_weights`).

The data is opened once per run (`data.open_source`) and passed down: each split's folder is walked once, for the
check, the labelled choice, the cache and the datasets together. Every order is a function of the seed and the
position in the run (`core.seeding`), so a run resumed anywhere sees the batches it would have seen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from cycleseg import runs
from cycleseg.commands.state import Progress
from cycleseg.config import Config, labelled_subset, uses_unlabelled
from cycleseg.core import distributed, seeding
from cycleseg.core.losses import enet_class_weights
from cycleseg.data import DataSource, open_split
from cycleseg.data.cache import class_pixel_counts
from cycleseg.data.check import require_valid
from cycleseg.data.semi import (
    LabelledSplit,
    LabelSubset,
    labelled_split,
    open_labelled_sets,
    open_unpaired_labels,
    stream_indices,
)

__all__ = ["TrainData", "describe_data", "enet_weights", "epoch_batches", "extra_batches", "open_train_data",
           "shard_size"]


@dataclass
class TrainData:
    """What a run trains and validates on."""

    labelled: Dataset  # (image, labels) items: the training split, or its labelled images (data.labelled)
    val_loader: DataLoader  # this rank's share of the validation split
    split: LabelledSplit | None = None  # data.labelled: the choice of labelled images (RUN/labelled.txt)
    unlabelled: Dataset | None = None  # semi-supervised: the other training images, (3, H, W) items, no labels
    backward: Dataset | None = None  # data.unpaired_labels: the backward cycle's label maps, (H, W) items


def open_train_data(cfg: Config, run_dir: Path, resume: bool, source: DataSource) -> TrainData:
    """The checked training data and the validation loader (this rank's share of it under torchrun), all from
    `source`, the run's data opened once.

    With data.labelled the labelled choice comes first (read back from RUN/labelled.txt on resume), so that the
    data check can leave the unlabelled images' labels unread."""
    progress = cfg.train.progress
    split = None
    if labelled_subset(cfg):
        split = labelled_split(cfg, runs.read_labelled(run_dir) if resume else None, str(run_dir / runs.LABELLED),
                               source=source)
    if cfg.data.check != "off":  # minutes into a run is a bad time to find a missing label
        require_valid(cfg.data.root, ("train", "val"), full=cfg.data.check == "full", progress=progress,
                      fmt=cfg.data.format, unlabelled=split.unlabelled_images() if split else frozenset(),
                      source=source)
    unlabelled = backward = None
    if split is None:
        train_set = open_split(cfg, "train", progress=progress, source=source)
    else:
        train_set, unlabelled = open_labelled_sets(cfg, split, progress)
        if not uses_unlabelled(cfg):  # the plain baseline, or the cycle with optim.unlabelled_batch_size 0, on the
            unlabelled = None          # labelled images alone: the others are not used
    if cfg.data.unpaired_labels is not None:  # the labelled images' label maps and the unpaired ones
        base, indices = (train_set.dataset, train_set.indices) if isinstance(train_set, Subset) else \
            (train_set, range(len(train_set)))
        backward = ConcatDataset([LabelSubset(base, indices), open_unpaired_labels(cfg, source)])
    val_set = open_split(cfg, "val", progress=progress, source=source)
    if distributed.is_distributed():  # each rank validates its share; the confusion matrices are summed
        val_set = Subset(val_set, range(distributed.rank(), len(val_set), distributed.world_size()))
    val_loader = DataLoader(val_set, batch_size=cfg.optim.batch_size, num_workers=cfg.data.num_workers,
                            pin_memory=torch.cuda.is_available())
    return TrainData(train_set, val_loader, split, unlabelled, backward)


def describe_data(data: TrainData, cfg: Config) -> str:
    """The log's note on a run with labelled and unlabelled images or unpaired label maps ("" for the paper's)."""
    parts = []
    if data.split is not None:
        parts.append(f"{len(data.split.labelled)} labelled training images of {len(data.split.samples)}"
                     + (f", {len(data.unlabelled)} unlabelled ({cfg.optim.unlabelled_batch_size or cfg.optim.batch_size}"
                        " per iteration)" if data.unlabelled is not None else " (the others are not used)"))
    if data.backward is not None:
        parts.append(f"backward cycle on {len(data.backward)} label maps "
                     f"({len(data.backward) - len(data.labelled)} unpaired)")
    return "".join(f"; {part}" for part in parts)


def enet_weights(cfg: Config, train_set: Dataset, run_dir: Path, device: torch.device) -> Tensor | None:
    """loss.class_weights=enet: (S,) weights 1 / ln(1.02 + p_c) from the training labels' class frequencies.

    Computed the same way at every start (a resumed run included), from the cache's counts when there is one;
    written to RUN_DIR/class_weights.json.
    """
    if cfg.loss.class_weights == "none":
        return None
    counts = torch.from_numpy(class_pixel_counts(train_set, progress=cfg.train.progress))
    weights = enet_class_weights(counts)
    if distributed.is_main():
        runs.write_json(run_dir / "class_weights.json", {"kind": cfg.loss.class_weights, "pixels": counts.tolist(),
                                                          "weights": weights.tolist()})
    return weights.to(device)


def shard_size(n: int) -> int:
    """Images per rank and epoch: every rank gets the same count (the order wraps around, as
    DistributedSampler pads), so all ranks run the same number of iterations."""
    return math.ceil(n / distributed.world_size())


def extra_batches(data: TrainData, cfg: Config, progress: Progress, count: int
                   ) -> Iterator[tuple[Tensor | None, Tensor | None]]:
    """(unlabelled images (B_u, 3, H, W), backward label maps (B, H, W)) of the next `count` iterations, None where
    the run has none (always, for the paper's runs).

    Each comes from an endless stream of shuffled passes over its dataset (data.semi.stream_indices), seeded by
    train.seed and positioned by the iteration's step and the rank: iteration `step` of rank r takes positions
    (step * world + r) * b .. + b - 1. A resumed run, mid-epoch or not, draws what it would have drawn, with
    nothing in the checkpoint; every unlabelled image is used once per pass over the unlabelled images.
    """
    world, rank = distributed.world_size(), distributed.rank()
    streams: list[Iterator[Tensor | None]] = []
    for dataset, batch, salt in ((data.unlabelled, cfg.optim.unlabelled_batch_size or cfg.optim.batch_size, 1),
                                 (data.backward, cfg.optim.batch_size, 2)):
        if dataset is None:
            streams.append(itertools.repeat(None))
            continue
        positions = [((progress.step + i) * world + rank) * batch + k for i in range(count) for k in range(batch)]
        stream_seed = seeding.mix_seed(cfg.train.seed, salt, multiplier=1_009, modulus=None)
        indices = stream_indices(len(dataset), stream_seed, positions)
        streams.append(iter(DataLoader(Subset(dataset, indices), batch_size=batch, num_workers=cfg.data.num_workers,
                                       generator=torch.Generator().manual_seed(cfg.train.seed),
                                       pin_memory=torch.cuda.is_available())))
    return zip(*streams)


def epoch_batches(dataset: Dataset, cfg: Config, progress: Progress, total: int) -> DataLoader:
    """The rest of the current epoch, at most up to iteration `total`: a shuffle fixed by (seed, epoch), minus
    the batches already trained.

    The order depends on nothing else, so a run resumed mid-epoch sees exactly the batches it would have.
    With several processes, rank r takes every world_size-th image of that order, starting at r.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(
        seeding.mix_seed(cfg.train.seed, progress.epoch, multiplier=100_003, modulus=None)))
    world = distributed.world_size()
    if world > 1:
        order = order.repeat(2)[: shard_size(len(dataset)) * world][distributed.rank()::world]
    batch = cfg.optim.batch_size
    remaining = order[progress.batch_in_epoch * batch:][: max(0, total - progress.step) * batch].tolist()
    return DataLoader(
        Subset(dataset, remaining),
        batch_size=batch,
        num_workers=cfg.data.num_workers,
        # An explicit generator keeps the DataLoader from drawing its worker seed from the global RNG.
        generator=torch.Generator().manual_seed(cfg.train.seed),
        pin_memory=torch.cuda.is_available(),
    )

"""The options several subcommands share, each defined once, as argparse parent parsers.

A subcommand takes an option by listing its parent: `sub.add_parser(name, parents=[options.data(),
options.split("split to evaluate")])`. Where a subcommand needs another default or wording, the definition
takes it as a parameter, so the option's name, type, choices and the rest of its help stay one definition.
The table of these options for the docs is docs/_incoming/cli.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cycleseg.core import precision as _precision
from cycleseg.runs import BEST, LAST

__all__ = ["CHECKPOINT_ALIASES", "CHECKPOINT_DEFAULT", "LABELLED_SPLITS", "SPLITS", "checkpoint", "checkpoint_name",
           "data", "data_format", "device", "max_images", "precision", "quiet", "run_data", "run_dir", "split"]

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")  # the splits with labels: what can be scored
# --checkpoint's default for every reader (evaluate, predict, diagnose, export, segment, and cycleseg.load):
# runs.LAST, the weights at the end of the schedule, as the paper reports its models (no choice on the validation
# split, which Table 2 scores) and as metrics.json, `table` and `report` count them. best.pt is opt-in.
CHECKPOINT_DEFAULT = LAST
CHECKPOINT_ALIASES = {"last": LAST, "best": BEST}


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def quiet() -> argparse.ArgumentParser:
    """--quiet (every subcommand): no progress bars."""
    parser = _parent()
    parser.add_argument("--quiet", action="store_true", help="no progress bars (shown only on a terminal anyway)")
    return parser


def run_dir(note: str | None = None) -> argparse.ArgumentParser:
    """RUN_DIR (positional, first): the run a command reads; `note` adds what kind of run it must be."""
    parser = _parent()
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="the --out folder of `cycleseg train`" + (f" {note}" if note else ""))
    return parser


def data(required: bool = True, role: str | None = None) -> argparse.ArgumentParser:
    """--data DIR: the dataset folder. `role` ends the help: what the folder is for, or what leaving it out means
    where it is optional."""
    parser = _parent()
    text = "dataset folder: the Cityscapes layout (leftImg8bit/, gtFine/) or a folder dataset (classes.yaml)"
    parser.add_argument("--data", type=Path, required=required, metavar="DIR",
                        help=f"{text}; {role}" if role else text)
    return parser


def run_data() -> argparse.ArgumentParser:
    """--data DIR of a command on a run: optional, the folder the run was trained on by default
    (runs.run_data_root)."""
    return data(required=False, role="default: the folder the run was trained on (its config.yaml's data.root)")


def split(what: str = "split to read", choices: Sequence[str] | None = LABELLED_SPLITS,
          repeat: str | None = None) -> argparse.ArgumentParser:
    """--split NAME (default val). `repeat`: the option may be given several times (a list, default None) and this
    says what none means."""
    parser = _parent()
    choices = list(choices) if choices is not None else None
    if repeat is not None:
        parser.add_argument("--split", action="append", choices=choices,
                            help=f"{what}; repeat for several (default: {repeat})")
    else:
        parser.add_argument("--split", default="val", choices=choices, help=f"{what} (default val)")
    return parser


def device() -> argparse.ArgumentParser:
    """--device: where the networks run (checked by core.models.resolve_device before any run is read)."""
    parser = _parent()
    parser.add_argument("--device", default="auto",
                        help="auto (default: the first CUDA GPU, else the CPU), cpu, cuda or cuda:N")
    return parser


def precision() -> argparse.ArgumentParser:
    """--precision: the autocast dtype of inference, one of core.precision.PRECISIONS."""
    parser = _parent()
    parser.add_argument("--precision", default="auto", choices=list(_precision.PRECISIONS),
                        help="auto (default): bf16 where it is native (CPUs with AVX512-BF16 or AMX: about 2x faster, "
                             "PSNR within 0.1 dB; GPUs: bf16, or fp16 on older ones), else fp32; fp32: the "
                             "reference numbers; fp16: CUDA GPUs only")
    return parser


def checkpoint_name(text: str) -> str:
    """A --checkpoint value: `last` and `best` name runs.LAST and runs.BEST; anything else is a file in RUN_DIR."""
    return CHECKPOINT_ALIASES.get(text, text)


def checkpoint(default: str | None = None, why: str | None = None) -> argparse.ArgumentParser:
    """--checkpoint FILE in RUN_DIR; default CHECKPOINT_DEFAULT (runs.LAST), or `default` with `why` for the
    subcommand that needs another."""
    parser = _parent()
    default = default or CHECKPOINT_DEFAULT
    why = why or "the weights at the end of training, what every command and cycleseg.load read"
    parser.add_argument("--checkpoint", default=default, type=checkpoint_name, metavar="FILE",
                        help=f"checkpoint file in RUN_DIR: {LAST} (the latest weights; `last`), {BEST} (the weights "
                             f"at the best validation mIoU; `best`) or another, e.g. epoch_0004.pt (default "
                             f"{checkpoint_name(default)}: {why})")
    return parser


def max_images() -> argparse.ArgumentParser:
    """--max-images N: the first N images of the split only."""
    parser = _parent()
    parser.add_argument("--max-images", type=int, metavar="N", help="use only the first N images of the split")
    return parser


def data_format() -> argparse.ArgumentParser:
    """--format: the data layout of the folder a data command reads."""
    parser = _parent()
    parser.add_argument("--format", default="auto", choices=["auto", "cityscapes", "folder"],
                        help="data layout (default auto: folder if DATA holds classes.yaml, else cityscapes)")
    return parser

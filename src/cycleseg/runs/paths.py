"""The names of a run directory's files (config.yaml, run.json, last.pt, ...) and of its per-split artifacts.

Nothing here touches the disk but `inside_run` (which resolves paths): every other module of the run layer
names files through these constants, so that one rename reaches every reader and writer.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
STATUS = "run.json"
LAST = "last.pt"  # the latest training state: what `evaluate` and `--resume` read
BEST = "best.pt"  # the weights (no optimizer state) with the best validation mIoU so far
METRICS = "metrics.json"
LOG = "log.jsonl"
VERSIONS = "versions.json"
CLASSES = "classes.yaml"
LABELLED = "labelled.txt"  # data.labelled: the run's labelled training images
LOCK = ".lock"  # RUN/.lock: flock'ed by the process that writes into the run; JSON of its holder inside
# What makes a folder a run directory (and so something --overwrite may clear): files only cycleseg writes.
_RUN_MARKERS = (STATUS, LAST)
# Everything a run and the commands on it write, which --overwrite removes: checkpoints and run.json first,
# config.yaml last, so that a kill in the middle never leaves old weights under a new config.
_ARTIFACTS = (LAST, STATUS, BEST, "epoch_*.pt", "*.tmp", METRICS, LOG, VERSIONS, "class_weights.json",
              "events.out.tfevents.*", "eval_*.json", "calibrate_*.json", "official_*.json", "diagnose_*.json",
              "diagnose_*.md", "diagnose_*", "predictions_*", LABELLED, CLASSES, CONFIG)


def artifact(run_dir: str | Path, kind: str, split: str | None = None) -> Path:
    """Path of a per-split artifact: artifact(run, "eval", "val") -> RUN/eval_val.json.

    kinds: eval, calibrate, calibrate_quantizers (calibrate --quantizers), official, diagnose (.json), diagnose_md
    (.md), diagnose_figures, diagnose_training (.json) and diagnose_training_png (the watermark along training),
    predictions (folders).
    """
    names = {"eval": "eval_{}.json", "calibrate": "calibrate_{}.json",
             "calibrate_quantizers": "calibrate_{}_quantizers.json", "official": "official_{}.json",
             "diagnose": "diagnose_{}.json", "diagnose_md": "diagnose_{}.md", "diagnose_figures": "diagnose_{}",
             "diagnose_training": "diagnose_{}_training.json", "diagnose_training_png": "diagnose_{}_training.png",
             "predictions": "predictions_{}"}
    if kind not in names:
        raise ValueError(f"unknown artifact kind {kind!r}")
    return Path(run_dir) / names[kind].format(split)


def inside_run(path: str | Path, run_dir: str | Path) -> bool:
    """Whether `path` is in (or is) the run directory `run_dir`."""
    return Path(path).resolve().is_relative_to(Path(run_dir).resolve())

"""The run directory: the one module that creates, overwrites, resumes, finishes and reads it.

A run directory holds one configuration and everything computed under it:

    config.yaml       the resolved config the run was created with (never rewritten)
    classes.yaml      the class table of its data (names, label values, colours; data/classes.py)
    run.json          status: state (running / finished / failed / interrupted), config hash, step,
                      and which checkpoint each evaluation used
    last.pt, best.pt  checkpoints (last.pt: the full training state; best.pt: the weights, config, step and
                      metrics at the best validation mIoU): torch's zip format holding only tensors and plain
                      data, read with torch.load(weights_only=True), so that a shared run never runs code
    epoch_NNNN.pt     per-epoch copies (train.keep_checkpoints)
    log.jsonl, events.out.tfevents.*   losses, LR, validation metrics
    metrics.json      final validation of `train`
    eval_<split>.json, calibrate_<split>.json, diagnose_<split>.{json,md}, diagnose_<split>/, official_<split>.json,
    predictions_<split>/, class_weights.json, versions.json
    labelled.txt      the labelled training images of a run on a labelled part of the data (data.labelled), one
                      path relative to the data root per line; what a resume trains on

Every write goes through `atomic_write`, so a crash never leaves half a file. A new run is created only after
its config and data passed their checks; `--overwrite` then removes every artifact of the old run, so that no
number of an old configuration can be read as one of the new. Resuming compares the requested settings with
the checkpoint's own config: only `config.RESUMABLE_KEYS` may differ. Which results of a run count (finished?
evaluated at its last step?) is decided in one place, `summary`.

The modules, lowest first: paths (the file names, `artifact`), files (atomic writes, JSON/YAML readers), lock
(`RunLock`: one writer per run), checkpoint (save/load/upgrade, formats v1 and v2), record (run.json, its data folder,
create/resume, the class table), models (`load_run`, `init_weights`, `seeded_inference`) and summary (one reader
of a run). This package re-exports their public names: `runs.X` is the way in. A test that monkeypatches a
function must patch the module that owns it (`cycleseg.fileio.os.fsync`): the package attribute is only a
second name, which the callers inside the package do not read. `runs.summary` is the function; its module is
`sys.modules["cycleseg.runs.summary"]`.
"""

from __future__ import annotations

from cycleseg.runs.checkpoint import (
    check_compatible,
    checkpoint_step,
    copy_checkpoint,
    load_checkpoint,
    numpy_rng_from_plain,
    numpy_rng_to_plain,
    save_checkpoint,
    upgrade_checkpoint,
    write_checkpoint,
)
from cycleseg.runs.files import (
    atomic_write,
    read_json,
    read_labelled,
    read_status,
    read_yaml,
    write_json,
    write_labelled,
    write_yaml,
)
from cycleseg.runs.lock import LOCK_ENV, RunInUse, RunLock, run_in_use, run_lock, writes_into_run
from cycleseg.runs.models import init_weights, load_run, seeded_inference
from cycleseg.runs.paths import (
    BEST,
    CLASSES,
    CONFIG,
    LABELLED,
    LAST,
    LOCK,
    LOG,
    METRICS,
    STATUS,
    VERSIONS,
    artifact,
    inside_run,
)
from cycleseg.runs.record import (
    DATA_AS_GIVEN,
    absolute_data,
    config_difference,
    config_hash,
    create_run,
    finished,
    missing_data,
    record_evaluation,
    require_new_run,
    require_same_classes,
    resume_config,
    rewrite_schedule,
    run_classes,
    run_data_root,
    schedule_changed,
    set_status,
    software_versions,
)
from cycleseg.runs.summary import RunSummary, summary  # binds `summary` to the function, over the submodule

__all__ = [
    "BEST",
    "CLASSES",
    "CONFIG",
    "DATA_AS_GIVEN",
    "LABELLED",
    "LAST",
    "LOCK",
    "LOCK_ENV",
    "LOG",
    "METRICS",
    "STATUS",
    "VERSIONS",
    "RunInUse",
    "RunLock",
    "RunSummary",
    "absolute_data",
    "artifact",
    "atomic_write",
    "check_compatible",
    "checkpoint_step",
    "config_difference",
    "config_hash",
    "copy_checkpoint",
    "create_run",
    "finished",
    "init_weights",
    "inside_run",
    "load_checkpoint",
    "load_run",
    "missing_data",
    "numpy_rng_from_plain",
    "numpy_rng_to_plain",
    "read_json",
    "read_labelled",
    "read_status",
    "read_yaml",
    "record_evaluation",
    "require_new_run",
    "require_same_classes",
    "resume_config",
    "rewrite_schedule",
    "run_classes",
    "run_data_root",
    "run_in_use",
    "run_lock",
    "save_checkpoint",
    "schedule_changed",
    "seeded_inference",
    "set_status",
    "software_versions",
    "summary",
    "upgrade_checkpoint",
    "write_checkpoint",
    "write_json",
    "write_labelled",
    "write_yaml",
    "writes_into_run",
]

"""The handlers of the `cycleseg` subcommands over many runs: table, sweep (in process, local or on Slurm),
sweep-status and report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cycleseg.cli.common import quiet_overrides, show_progress
from cycleseg.errors import ConfigError, DataError, Interrupted

__all__ = ["cmd_report", "cmd_sweep", "cmd_sweep_status", "cmd_table"]


def cmd_table(args: argparse.Namespace) -> int:
    print(_results_table(args.run_dirs, args.split))
    return 0


def _results_table(paths: list[Path], split: str) -> str:
    """The text of `cycleseg table` (report.tables.results_table: a row per run directory; with seeds, mean and
    95 % interval over them and paired differences to no noise)."""
    from cycleseg.report.tables import results_table

    return results_table(paths, split)


def cmd_sweep(args: argparse.Namespace) -> int:
    from cycleseg.experiments.sweep import run_sweep

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only is not None else None
    # argparse hands KEY=VALUE words that come before the options to the CONFIGS list
    args.overrides = [str(c) for c in args.configs if "=" in str(c)] + list(args.overrides) + quiet_overrides(args)
    args.configs = [c for c in args.configs if "=" not in str(c)]
    if not args.configs:
        raise ConfigError("sweep needs at least one config folder or YAML file, e.g. configs/paper")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    jobs = args.jobs if args.jobs is not None else len(gpus) if gpus else 1
    launcher = args.launcher or ("local" if jobs > 1 or gpus or args.threads else "inprocess")
    if args.dry_run:  # the plan of any launcher: which runs, in which order, what each would do
        from cycleseg.experiments.sweep import format_plan, plan_sweep

        print(format_plan(plan_sweep(args.configs, args.out, args.overrides, str(args.data) if args.data else None,
                                     only, args.retrain, args.seeds)))
        return 0
    if launcher == "slurm":
        return _submit_to_slurm(args, only)
    try:
        summary = run_sweep(args.configs, args.out, args.overrides, data_root=str(args.data) if args.data else None,
                            only=only, retrain=args.retrain, seeds=args.seeds, launcher=launcher, jobs=jobs,
                            gpus=gpus, threads=args.threads)
    except Interrupted as e:
        raise Interrupted(f"{str(e).split('; continue with')[0]}; continue the sweep with the same command",
                          e.signum) from None
    print(f"sweep done: {len(summary)} runs in {args.out}")
    print(_results_table([Path(s["run_dir"]) for s in summary], "val"))
    if args.report:
        return cmd_report(argparse.Namespace(sweep_dir=args.out, data=args.data, runs=None, examples=3, quiet=args.quiet,
                                             device="auto"))
    return 0


def _submit_to_slurm(args: argparse.Namespace, only: list[str] | None) -> int:
    """`sweep --launcher slurm`: one job array of the runs not finished nor queued yet; returns at once."""
    from cycleseg.experiments.slurm import submit_sweep, sweep_tasks
    from cycleseg.experiments.sweep import check_request, find_configs

    entries = find_configs(args.configs, only)
    check_request(entries, args.overrides + ([f"data.root={args.data.absolute()}"] if args.data else []), args.seeds)
    tasks = sweep_tasks(entries, args.out, args.overrides,
                        data_root=args.data, seeds=range(args.seeds) if args.seeds else None, retrain=args.retrain)
    done = submit_sweep(tasks, args.out, partition=args.partition, gpus_per_run=args.gpus_per_run,
                        cpus_per_run=args.cpus_per_run, time=args.time, max_parallel=args.max_parallel)
    submitted = sum(s.state == "submitted" for s in done)
    print(f"{submitted} of {len(tasks)} runs submitted to Slurm (the rest finished, already queued or in use "
          f"elsewhere); follow them with `cycleseg sweep status {args.out}`, logs in {args.out}/slurm/")
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from cycleseg.experiments.sweep import format_status, sweep_status

    states = sweep_status(args.sweep_dir)
    if (args.sweep_dir / "slurm" / "jobs.json").is_file():  # a sweep submitted with --launcher slurm
        from cycleseg.experiments.slurm import sweep_jobs

        jobs = {j["name"]: j for j in sweep_jobs(args.sweep_dir)}
        for state in states:
            if state.name in jobs:
                job = jobs[state.name]
                state.job = f"{job['job_id']} {job['slurm_state']}"
                if state.state == "pending" and job["slurm_state"] == "RUNNING":
                    state.state = "running"  # started, no checkpoint yet
    if args.json:
        print(json.dumps([{**{k: v for k, v in vars(s).items() if k != "run_dir"}, "run_dir": str(s.run_dir),
                           "detail": s.detail} for s in states], indent=2))
    else:
        print(format_status(args.sweep_dir, states))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cycleseg.report import build_report

    if args.examples < 1:
        raise ConfigError(f"--examples {args.examples}: must be >= 1")
    if args.data is not None and not _val_folder(args.data).is_dir():
        what = "folder not found" if not args.data.is_dir() else f"no validation images in {_val_folder(args.data)}"
        raise DataError(f"{args.data}: {what}; pass the data folder for Figure 3 with --data, "
                        "or leave --data out to use the runs' data.root")
    runs = [n.strip() for n in args.runs.split(",") if n.strip()] if args.runs else None
    md, page = build_report(args.sweep_dir, args.data, runs, args.examples, args.device, progress=show_progress(args))
    print(f"report written: {md} and {page}")
    return 0


def _val_folder(root: Path) -> Path:
    """Where the validation images of the dataset at `root` are (Cityscapes or folder layout)."""
    from cycleseg.data.source import data_format

    return root / ("images" if data_format(root) == "folder" else "leftImg8bit") / "val"

"""Launchers: each takes the `RunSpec`s of a sweep (`experiments.plan.plan`, already in dependency order) and runs
them. A launcher plans nothing and decides nothing: which runs exist, where they live, which waits for which
(`RunSpec.depends_on`) and whether a run is new, continued, retrained or done (`plan.decide`) come from
`experiments.plan`; the work on one run is `execute.run_one` (in whatever process the launcher puts it).

The launchers of `cycleseg sweep`:

- `inprocess`: one run after another in the sweep's own process;
- `local`: each run in a subprocess (`local.worker_main`), up to `jobs` at once, a run waiting for the run whose
  SNR it takes;
- Slurm (`cycleseg sweep --launcher slurm`): `experiments.slurm` submits the runs as a job array and returns; each
  array task runs `launchers.slurm_job.SlurmRun`, which runs `execute.run_one` in a child process.

A new launcher (a Ray cluster, an SSH pool, ...) is one file here, `launchers/<name>.py`, with

    def launch(specs: list[RunSpec], sweep: Sweep) -> list[dict[str, Any]]

that runs every spec in the order given (a spec may start once the run its `depends_on` names has ended),
calls `execute.run_one(spec, sweep.retrain, execute.prefix(spec, len(specs)), log, command)` for each, in
whatever process it likes (run_one takes the run's lock, decides, trains and evaluates), tells `sweep.book`
when each run starts and ends (`started`, `ended`: sweep.json, what `cycleseg sweep status` shows), and returns
one `execute.summary` per run that ran or was skipped. Then add the name to `LAUNCHERS` and its options to
`cli`'s sweep parser. A launcher that only submits and returns (like Slurm) may instead offer its own entry
taking `plan.plan`'s specs, as `experiments.slurm.sweep_tasks` / `submit_sweep` do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cycleseg.experiments.plan import RunSpec

__all__ = ["EXIT_IN_USE", "IN_USE", "LAUNCHERS", "Book", "Sweep"]

LAUNCHERS = ("inprocess", "local")  # the modules of this package that `cycleseg sweep --launcher NAME` runs
IN_USE = "in use"  # a run whose lock another process holds: a sweep leaves it alone and says so
EXIT_IN_USE = 75  # a run's process found its run in use elsewhere (EX_TEMPFAIL: try again later)


class Book(Protocol):
    """Where a launcher records each run's state (the sweep's sweep.json)."""

    def started(self, spec: RunSpec, pid: int, log: Path | None, start: float, gpu: str | None = None) -> None: ...

    def ended(self, spec: RunSpec, state: str, start: float, summary: dict[str, Any] | None = None,
              error: str | None = None, exit_code: int | None = None) -> None: ...


@dataclass
class Sweep:
    """What a launcher gets beside the specs: the sweep folder, the user's choices and the sweep's book."""

    sweep_dir: Path
    retrain: bool  # a run made with other settings is trained anew (else plan.decide refuses it)
    book: Book
    log: Callable[[str], None] = print  # one line per run and event
    jobs: int = 1  # runs at once (local)
    gpus: list[str] = field(default_factory=list)  # CUDA_VISIBLE_DEVICES per slot, round robin (local)
    threads: int | None = None  # torch threads per run (local; default: CPU cores // jobs)

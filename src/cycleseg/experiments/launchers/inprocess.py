"""The in-process launcher (the default of `cycleseg sweep`): one run after another in the sweep's own process,
with train's progress bar."""

from __future__ import annotations

import os
import time
from typing import Any

from cycleseg import runs
from cycleseg.errors import Interrupted, user_message
from cycleseg.experiments.launchers import IN_USE, Sweep, execute
from cycleseg.experiments.plan import RunSpec

__all__ = ["launch"]


def launch(specs: list[RunSpec], sweep: Sweep) -> list[dict[str, Any]]:
    """Run `specs` in order in this process; a run in use elsewhere is left alone (RunError at the end)."""
    done: list[dict[str, Any]] = []
    in_use: list[str] = []
    for spec in specs:
        start = time.time()
        prefix = execute.prefix(spec, len(specs))
        sweep.book.started(spec, os.getpid(), None, start)
        try:
            status = execute.run_one(spec, sweep.retrain, prefix, sweep.log)
        except runs.RunInUse as e:  # another process works on it: left alone, the other runs go on
            sweep.log(f"{prefix} in use elsewhere, left alone: {user_message(e)}")
            sweep.book.ended(spec, IN_USE, start, error=user_message(e))
            in_use.append(spec.name)
            continue
        except Interrupted as e:
            sweep.book.ended(spec, "interrupted", start, error=user_message(e))
            raise
        except BaseException as e:
            sweep.book.ended(spec, "failed", start, error=user_message(e) or type(e).__name__)
            raise
        done.append(execute.summary(spec, status, start))
        sweep.book.ended(spec, "skipped" if status == "done" else "finished", start, summary=done[-1])
    execute.refuse_in_use(in_use, len(specs), sweep.sweep_dir)
    return done

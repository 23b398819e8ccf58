"""What a training session shows and hears: the log (log.jsonl, TensorBoard, progress bar) and stop signals."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cycleseg.fileio import open_for_writing, read_text, require_file
from cycleseg.runs import LOG, atomic_write

__all__ = ["RunLogger", "StopSignals"]


class RunLogger:
    """Appends scalars to RUN/log.jsonl and TensorBoard event files in RUN, and drives the progress bar.

    Resumed at `step`, it drops what was logged after that step (those steps are trained again), and the
    validation logged at `step` itself unless the checkpoint includes it (`validated`).
    With `enabled` False (ranks other than 0 under torchrun) it does nothing.
    """

    def __init__(self, run_dir: Path, name: str, total: int, step: int = 0, resumed: bool = False,
                 validated: bool = False, progress: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=step, desc=name, unit="it", disable=not (progress and enabled),
                        dynamic_ncols=True)
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import, only needed to train

        path = run_dir / LOG
        if not resumed:
            path.unlink(missing_ok=True)
        elif require_file(path):  # a FIFO or device: RunError naming it, never opened
            kept = [line for line in read_text(path).splitlines(keepends=True) if line.strip()
                    and _keep(json.loads(line), step, validated)]
            atomic_write(path, "".join(kept))
        # appended to for the whole session; never through a link planted at its name (fileio.open_for_writing)
        self.jsonl = os.fdopen(open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")
        self.tb = SummaryWriter(log_dir=str(run_dir), purge_step=step if resumed else None)

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, **clean}) + "\n")
        self.jsonl.flush()
        for k, v in values.items():
            if math.isfinite(v):
                self.tb.add_scalar(k, v, step)

    def images(self, step: int, pictures: dict[str, Any]) -> None:
        """Sample pictures ((H, W, 3) uint8 arrays, train.image_every) to TensorBoard as images/<name>."""
        if not self.enabled:
            return
        for name, picture in pictures.items():
            self.tb.add_image(f"images/{name}", picture, step, dataformats="HWC")
        self.tb.flush()

    def advance(self) -> None:
        """One iteration done."""
        self.bar.update(1)

    def show(self, losses: dict[str, float]) -> None:
        """The latest logged losses beside the bar (J_seg, J_rec_X, J_adv, J_rec_Y, D)."""
        self.bar.set_postfix({_short(k): f"{float(v):.3g}" for k, v in losses.items() if k != "loss/G/total"},
                             refresh=False)

    def write(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.enabled:
            self.jsonl.close()
            self.tb.close()

    def __enter__(self) -> RunLogger:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keep(entry: dict[str, Any], step: int, validated: bool) -> bool:
    if entry["step"] != step:
        return entry["step"] < step
    return validated or not any(k.startswith("val/") for k in entry)


def _short(key: str) -> str:
    return {"loss/D/total": "D", "loss/D_Y/total": "D_Y"}.get(key, key.split("/")[-1])


class StopSignals:
    """Turns SIGINT and SIGTERM into a flag that the loop checks after each iteration (a safe point)."""

    def __enter__(self) -> StopSignals:  # noqa: PYI034
        self.signum: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

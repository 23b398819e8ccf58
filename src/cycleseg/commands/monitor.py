"""What a training session shows and hears: the log (log.jsonl, TensorBoard, progress bar, progress lines) and
stop signals.

On a terminal the session shows a tqdm bar. Where nobody watches a bar (stdout a file under a batch system, or the
bar turned off), it prints a plain line every `train.print_every` iterations and at each validation instead, as
mmsegmentation does: step / total, epoch, the loss terms, iterations per second, the ETA and the device's peak
memory, after a wall-clock timestamp. Every log.jsonl record carries the same fields (`Pace`).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cycleseg.fileio import open_for_writing, read_text, require_file
from cycleseg.runs import LOG, atomic_write

__all__ = ["Pace", "RunLogger", "StopSignals", "format_duration", "peak_memory_mib"]


class Pace:
    """How fast a training session goes: iterations per second since the previous call, the ETA (from the session's
    average, validations included) and the device's peak memory, with a wall-clock timestamp. One call per step:
    a second call at the same step returns the same fields."""

    def __init__(self, total: int, step: int, device: torch.device | None = None) -> None:
        self.total, self.device = total, device
        self.start_step = self.mark_step = step
        self.start = self.mark = time.perf_counter()
        self.cached: tuple[int, dict[str, Any]] | None = None

    def fields(self, step: int) -> dict[str, Any]:
        """{"time": ISO 8601, "total_steps", "it_per_s", "eta_s", "peak_memory_mib"} at `step` (None: not known
        yet, before the session's first iteration)."""
        if self.cached is not None and self.cached[0] == step:
            return self.cached[1]
        now = time.perf_counter()
        rate = (step - self.mark_step) / (now - self.mark) if step > self.mark_step and now > self.mark else None
        average = (step - self.start_step) / (now - self.start) if step > self.start_step and now > self.start else None
        eta = (self.total - step) / average if average else None
        if step > self.mark_step:
            self.mark, self.mark_step = now, step
        fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "total_steps": self.total,
                  "it_per_s": round(rate, 3) if rate is not None else None,
                  "eta_s": round(eta) if eta is not None else None, "peak_memory_mib": peak_memory_mib(self.device)}
        self.cached = (step, fields)
        return fields

    def pause_ended(self) -> None:
        """A validation ended: the next iterations per second count training only (the ETA keeps its time)."""
        self.mark = time.perf_counter()


def peak_memory_mib(device: torch.device | None) -> float:
    """The peak memory of the session in MiB: on a CUDA device what PyTorch's allocator reserved at most (about what
    nvidia-smi shows for the process, less the CUDA context); elsewhere the process's peak resident memory."""
    if device is not None and device.type == "cuda":
        return round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def format_duration(seconds: float | None) -> str:
    """A duration for people: "42 s", "12 min 5 s", "3 h 12 min", "2 d 4 h"; "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


class RunLogger:
    """Appends scalars to RUN/log.jsonl and TensorBoard event files in RUN, and drives the progress bar or, where
    no bar is watched, the progress lines.

    Resumed at `step`, it drops what was logged after that step (those steps are trained again), and the
    validation logged at `step` itself unless the checkpoint includes it (`validated`). Progress lines go to stdout
    every `print_every` iterations (0: none) when the bar is off or stdout is not a terminal; `epochs` is the
    schedule's length they show, `device` the one whose peak memory they report.
    With `enabled` False (ranks other than 0 under torchrun) it does nothing.
    """

    def __init__(self, run_dir: Path, name: str, total: int, step: int = 0, resumed: bool = False,
                 validated: bool = False, progress: bool = True, enabled: bool = True, print_every: int = 0,
                 epochs: int | None = None, device: torch.device | None = None) -> None:
        self.enabled, self.name, self.total, self.epochs = enabled, name, total, epochs
        self.bar = tqdm(total=total, initial=step, desc=name, unit="it", disable=not (progress and enabled),
                        dynamic_ncols=True)
        self.print_every = print_every if enabled and (self.bar.disable or not sys.stdout.isatty()) else 0
        self.pace = Pace(total, step, device)
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
        """One log.jsonl record (step, epoch, `values`, and the pace: time, total_steps, it_per_s, eta_s,
        peak_memory_mib) and `values` to TensorBoard."""
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, **clean, **self.pace.fields(step)}) + "\n")
        self.jsonl.flush()
        for k, v in values.items():
            if math.isfinite(v):
                self.tb.add_scalar(k, v, step)

    def line_due(self, step: int) -> bool:
        """Whether a progress line is printed after iteration `step` (every print_every, and the last)."""
        return bool(self.print_every) and (step % self.print_every == 0 or step == self.total)

    def line(self, step: int, epoch: int, values: dict[str, float], validation: bool = False) -> None:
        """The progress line of `step` (`values`: the loss terms and lr, or a validation's metrics), when lines
        are printed. `epoch`: 0-based, the one the step belongs to."""
        if not self.print_every:
            return
        pace = self.pace.fields(step)
        where = f"step {step}/{self.total}" + (f", epoch {epoch + 1}/{self.epochs}" if self.epochs else "")
        if validation:
            what = "validation: " + ", ".join(_metric(k, v) for k, v in values.items())
        else:
            what = ", ".join(f"{_short(k)} {_number(v)}" for k, v in values.items() if k != "loss/G/total")
        rate = f"{pace['it_per_s']:.2f} it/s" if pace["it_per_s"] is not None else "? it/s"
        memory = f"peak memory {pace['peak_memory_mib'] / 1024:.2f} GiB"
        self.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.name}: {where}: {what}; {rate}, "
                   f"ETA {format_duration(pace['eta_s'])}, {memory}")

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
        """A line on stdout, above the bar; flushed, since a batch system's log file is block-buffered."""
        if self.enabled:
            tqdm.write(text)
            sys.stdout.flush()

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


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _metric(key: str, value: float) -> str:
    """A validation metric of the progress line: "mIoU 13.9 %", "PSNR 15.00 dB", "SNR 4.70 dB"."""
    name = key.removeprefix("val/")
    return {"miou": f"mIoU {value:.1f} %", "psnr_db": f"PSNR {value:.2f} dB",
            "snr_db": f"SNR {value:.2f} dB"}.get(name, f"{name} {_number(value)}")


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

"""Checkpoint save and load: the safe format (v2, torch.load(weights_only=True)) beside cycleseg 0.1.0's (v1,
NumPy's RNG state pickled, read with weights_only=False), same model and state, side by side in one process.

    .venv/bin/python benchmarks/bench_checkpoint.py                 # the paper's model at 512x256, pool of 50
    .venv/bin/python benchmarks/bench_checkpoint.py --size 128x64 --repeats 3

last.pt is the full training state (weights, both Adams with their moments, schedules, a full image pool, RNG
states); best.pt the weights, config and metrics. Save = torch.save streamed into a temporary file, fsync, rename
(runs.atomic_write, as training does); load = the whole file into memory; step = the memory-mapped look at the
training step that sweep, evaluate and the Slurm worker take. The files are read back from the page cache.
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cycleseg import runs
from cycleseg.config import load_config
from cycleseg.commands.state import TrainState

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cyclegan.yaml"
V1 = "cycleseg-checkpoint-v1"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def trained_state(size: str) -> TrainState:
    """The paper's cycle model with its Adam moments filled (one step on random gradients) and a full pool."""
    width, height = (int(v) for v in size.split("x"))
    cfg = load_config(CONFIG, [f"data.height={height}", f"data.width={width}", "train.precision=fp32"])
    state = TrainState(cfg, torch.device("cpu"))
    for opt in state.optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p) * 1e-3
        opt.step()
    state.pool.query(torch.randn(cfg.optim.pool_size, 3, height, width))
    random.random(), np.random.rand(), torch.rand(1)
    return state


def v1_save(path: Path, state: dict) -> None:
    """What cycleseg 0.1.0's save_checkpoint wrote: NumPy's RNG state as an ndarray."""
    if "rng" in state:
        state = {**state, "rng": {**state["rng"], "numpy": np.random.get_state()}}
    runs.atomic_write(path, lambda f: torch.save({"format": V1, "version": "0.1.0", **state}, f))


def v1_load(path: Path, mmap: bool = False) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)  # 0.1.0's read


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x256", help="training size WIDTHxHEIGHT: the pool's images (default "
                                                          "512x256, the paper's)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per cell; the median is reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--out", default="benchmarks/results/bench_checkpoint", help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state = trained_state(args.size)
    contents = {"last.pt": state.state_dict, "best.pt": state.weights_dict}
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench_checkpoint_"))
    folder.mkdir(parents=True, exist_ok=True)
    formats = {
        "v1 (0.1.0, weights_only=False)": (v1_save, v1_load, lambda p: v1_load(p, mmap=True)["progress"]["step"]),
        "v2 (safe, weights_only=True)": (runs.save_checkpoint, runs.load_checkpoint, runs.checkpoint_step),
    }
    times: dict[tuple[str, str, str], list[float]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for _ in range(args.repeats):  # alternating, so that a busy machine slows both alike
        for file, make in contents.items():
            for fmt, (save, load, step) in formats.items():
                path = folder / f"{fmt[:2]}_{file}"
                times.setdefault((file, fmt, "save"), []).append(timed(lambda: save(path, make())))
                times.setdefault((file, fmt, "load"), []).append(timed(lambda: load(path)))
                times.setdefault((file, fmt, "step"), []).append(timed(lambda: step(path)))
                sizes[(file, fmt)] = path.stat().st_size
    assert runs.load_checkpoint(folder / "v2_last.pt")["format"] == "cycleseg-checkpoint-v2"
    for path in folder.glob("v?_*.pt"):
        path.unlink()

    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    rows = []
    for file in contents:
        for fmt in formats:
            rows.append({"file": file, "format": fmt, "bytes": sizes[(file, fmt)],
                         **{f"{op}_s": median[(file, fmt, op)] for op in ("save", "load", "step")}})
    meta = {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "threads": args.threads, "repeats": args.repeats, "size": args.size,
            "pool_size": state.pool.capacity, "folder": str(folder)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [f"{meta['cpu']}, torch {meta['torch']}, {args.threads} thread(s); the paper's cycle model at "
             f"{args.size}, pool of {meta['pool_size']}; median of {args.repeats}, v1 and v2 alternating", "",
             "| file | format | size MB | save s | load s | step (mmap) ms | size vs v1 | save vs v1 | load vs v1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next(x for x in rows if x["file"] == r["file"])
        lines.append(f"| {r['file']} | {r['format']} | {r['bytes'] / 1e6:.1f} | {r['save_s']:.3f} | "
                     f"{r['load_s']:.3f} | {1000 * r['step_s']:.1f} | {r['bytes'] / ref['bytes']:.3f}x | "
                     f"{r['save_s'] / ref['save_s']:.2f}x | {r['load_s'] / ref['load_s']:.2f}x |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

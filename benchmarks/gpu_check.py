"""Check and measure, on a machine with a CUDA GPU, what docs/guide/gpu.md promises; one JSON file, under 10 minutes.

    .venv/bin/python benchmarks/gpu_check.py                  # writes benchmarks/results/gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --out gpu.json --budget 300

What it runs, in this order, each step skipped (and recorded as skipped) once the time budget is spent:

1. a synthetic city of 64 + 16 images at 512x256, cached with `cycleseg prepare` (the paper's training size);
2. a short slice of the paper's 2-bit config (configs/paper/quant2.yaml, `cycleseg train`, 200 iterations) in
   each precision the GPU supports: fp32 (PyTorch's default, TF32 convolutions on Ampere and later), fp32 with
   TF32 off (NVIDIA_TF32_OVERRIDE=0: the numerics of the paper's GTX 1080 Ti), bf16 and fp16; per slice the
   iterations per second and the peak memory that train itself logs (log.jsonl), and what 148,750 iterations
   (the paper's 200 epochs) would take at that speed;
3. two of those runs at once on the one GPU (fp32): each one's speed and memory;
4. the CUDA rows of benchmarks/bench_train.py (512x256) and benchmarks/bench_infer.py (512x256, 1024x512);
5. with 2 GPUs or more, the slice under `torchrun --nproc_per_node=2` with optim.batch_size=2 (global batch 4,
   the paper's).

Without a CUDA GPU it prints one line and exits 0. `--cpu-smoke` runs every step on the CPU at a tiny size,
to check this script itself (tests/test_gpu_check.py); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_ITERATIONS = 148_750  # 2975 images / 4 = 744 per epoch, 200 epochs, as the paper counts them
CONFIG = ROOT / "configs" / "paper" / "quant2.yaml"


class Budget:
    """The time left; a step that starts after the deadline is skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _run(cmd: list[str], budget: Budget, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`cmd` from the repository root with src/ importable, killed when the budget runs out."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                              timeout=max(1.0, budget.left()))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, -9, "", "stopped: the time budget ran out")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cycleseg.cli", *args]


def _failed(proc: subprocess.CompletedProcess) -> dict:
    return {"failed": (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])[-1]}


def make_data(folder: Path, size: str, budget: Budget) -> Path:
    """The synthetic city at `size` (64 train, 16 val images), cached at that size."""
    data = folder / "data"
    for cmd in (_cli("make-synthetic", str(data), "--size", size, "--train", "64", "--val", "16"),
                _cli("prepare", str(data), "--size", size)):
        proc = _run(cmd, budget)
        if proc.returncode != 0:
            raise SystemExit(f"gpu_check: {' '.join(cmd[2:4])} failed: {_failed(proc)['failed']}")
    return data


def training_overrides(args: argparse.Namespace, precision: str, iterations: int) -> list[str]:
    size = ["data.height=32", "data.width=64"] if args.cpu_smoke else []
    return [*size, f"train.precision={precision}", f"train.max_iters={iterations}", "train.eval_every=0",
            "train.print_every=0", "train.log_every=10", "train.checkpoint_every=1000000", "train.progress=false"]


def read_slice(run: Path, warmup: int) -> dict:
    """Speed and memory of a finished slice, from train's own log.jsonl and metrics.json."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [r["it_per_s"] for r in records if "lr" in r and r["step"] > warmup and r.get("it_per_s")]
    metrics = json.loads((run / "metrics.json").read_text())
    rate = statistics.median(rates) if rates else None
    return {"precision": metrics["precision"], "iterations": metrics["iterations"],
            "it_per_s": round(rate, 2) if rate else None,
            "peak_memory_mib": max(r["peak_memory_mib"] for r in records),
            "paper_run_hours": round(PAPER_ITERATIONS / rate / 3600, 2) if rate else None}


def train_slices(args: argparse.Namespace, data: Path, folder: Path, budget: Budget) -> dict:
    """Step 2: the paper's 2-bit config for a few hundred iterations in each precision the GPU supports."""
    import torch

    slices = {"fp32": ("fp32", {}), "fp32, TF32 off": ("fp32", {"NVIDIA_TF32_OVERRIDE": "0"})}
    if not args.cpu_smoke:  # (a CPU without native bf16 would emulate it: slow, and no news for this check)
        slices |= {"bf16": ("bf16", {})} if torch.cuda.is_bf16_supported() else {}
        slices["fp16"] = ("fp16", {})
    results = {}
    for name, (precision, env) in slices.items():
        if budget.left() < 30:
            results[name] = {"skipped": "time budget spent"}
            continue
        run = folder / f"slice-{precision}-{len(results)}"
        start = time.monotonic()
        proc = _run(_cli("train", str(CONFIG), "--data", str(data), "--out", str(run),
                         *training_overrides(args, precision, args.iterations)), budget, env)
        results[name] = (read_slice(run, args.iterations // 4) | {"wall_s": round(time.monotonic() - start, 1)}
                         if proc.returncode == 0 else _failed(proc))
        print(f"gpu_check: {name}: {results[name]}", flush=True)
    return results


def two_runs(args: argparse.Namespace, data: Path, folder: Path, budget: Budget) -> dict:
    """Step 3: two fp32 slices at once on the one GPU."""
    if budget.left() < 60:
        return {"skipped": "time budget spent"}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    runs = [folder / f"pair-{k}" for k in (0, 1)]
    procs = [subprocess.Popen(_cli("train", str(CONFIG), "--data", str(data), "--out", str(run),
                                   *training_overrides(args, "fp32", args.iterations)), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for run in runs]
    results = {}
    for k, (proc, run) in enumerate(zip(procs, runs, strict=True)):
        try:
            _, err = proc.communicate(timeout=max(1.0, budget.left()))
        except subprocess.TimeoutExpired:
            proc.kill()
            results[f"run {k}"] = {"skipped": "time budget spent"}
            continue
        results[f"run {k}"] = (read_slice(run, args.iterations // 4) if proc.returncode == 0
                               else {"failed": (err.strip().splitlines() or ["?"])[-1]})
    print(f"gpu_check: two runs on one GPU: {results}", flush=True)
    return results


def benchmarks(args: argparse.Namespace, folder: Path, budget: Budget) -> dict:
    """Step 4: the CUDA rows of the training and inference benchmarks."""
    device = "cpu" if args.cpu_smoke else "cuda"
    train_sizes, infer_sizes = ("128x64", "128x64") if args.cpu_smoke else ("512x256", "512x256,1024x512")
    iters = ["--iters", "1", "--warmup", "0"] if args.cpu_smoke else ["--iters", "10", "--warmup", "3"]
    variants = ("reference,defaults (auto)" if args.cpu_smoke else
                "reference,eager fp32,+ bf16 autocast,defaults (auto),all: bf16 + channels_last + fused Adam")
    results = {}
    for name, cmd in (("bench_train", [str(ROOT / "benchmarks" / "bench_train.py"), "--devices", device, "--sizes",
                                       train_sizes, "--variants", variants, *iters]),
                      ("bench_infer", [str(ROOT / "benchmarks" / "bench_infer.py"), "--devices", device, "--sizes",
                                       infer_sizes, *iters])):
        if budget.left() < 45:
            results[name] = {"skipped": "time budget spent"}
            continue
        out = folder / name
        proc = _run([sys.executable, *cmd, "--out", str(out)], budget)
        results[name] = (json.loads(out.with_suffix(".json").read_text())["results"] if proc.returncode == 0
                         else _failed(proc))
        print(f"gpu_check: {name}: {len(results[name])} rows", flush=True)
    return results


def two_gpus(args: argparse.Namespace, data: Path, folder: Path, budget: Budget) -> dict:
    """Step 5: the slice under torchrun on 2 GPUs, batch 2 per process (the paper's global batch 4)."""
    import torch

    if not args.cpu_smoke and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU: torchrun needs 2"}
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if budget.left() < 60 or not Path(torchrun).exists():
        return {"skipped": "time budget spent" if budget.left() < 60 else "no torchrun"}
    run = folder / "torchrun"
    proc = _run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "cycleseg.cli", "train", str(CONFIG), "--data",
                 str(data), "--out", str(run), "optim.batch_size=2",
                 *training_overrides(args, "fp32", args.iterations)], budget)
    result = read_slice(run, args.iterations // 4) if proc.returncode == 0 else _failed(proc)
    print(f"gpu_check: torchrun on 2 GPUs: {result}", flush=True)
    return result


def machine(args: argparse.Namespace) -> dict:
    import torch

    if args.cpu_smoke:
        return {"device": "cpu (--cpu-smoke: the figures mean nothing)", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps (default 540)")
    parser.add_argument("--iterations", type=int, default=200, help="iterations per training slice (default 200)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU at a tiny size (tests)")
    args = parser.parse_args(argv)
    import torch

    if not (torch.cuda.is_available() or args.cpu_smoke):
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              "nothing measured, nothing written")
        return 0
    budget, start = Budget(args.budget), time.monotonic()
    report = {"machine": machine(args), "config": str(CONFIG.relative_to(ROOT)), "iterations": args.iterations}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        folder = Path(tmp)
        data = make_data(folder, "64x32" if args.cpu_smoke else "512x256", budget)
        report["training"] = train_slices(args, data, folder, budget)
        report["two_runs_one_gpu"] = two_runs(args, data, folder, budget)
        report |= benchmarks(args, folder, budget)
        report["torchrun_2_gpus"] = two_gpus(args, data, folder, budget)
    report["seconds"] = round(time.monotonic() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed: a reference step written the official repositories' way beside cycleseg's variants.

One training iteration of the cycle model (Table 1: generator step with both cycles, then the discriminator
step, 2-bit noise) at batch 4 on random data. "reference" is that iteration as the official ERFNet and CycleGAN
code does it (eager fp32, per-tensor Adam, no checks or casts, ~30 lines below); every other variant runs
cycleseg's own steps. Each variant runs in its own process, so its peak memory is its own, and with
--rounds N the variants alternate N times, so that a slow spell of the machine hits all of them.

    .venv/bin/python benchmarks/bench_train.py                       # 512x256 and 128x64, CPU (and CUDA if present)
    .venv/bin/python benchmarks/bench_train.py --sizes 256x128 --iters 3 --out bench_train

Writes OUT.json and OUT.md (a Markdown table with times and memory relative to the reference).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {  # name: train/optim settings; "reference" is written below the official repositories' way
    "reference": None,
    "eager fp32": {"precision": "fp32", "channels_last": False, "kernel": "loop", "compile": False},
    "+ channels_last": {"precision": "fp32", "channels_last": True, "kernel": "loop", "compile": False},
    "+ bf16 autocast": {"precision": "bf16", "channels_last": False, "kernel": "loop", "compile": False},
    "+ fused Adam": {"precision": "fp32", "channels_last": False, "kernel": "fused", "compile": False},
    "+ torch.compile": {"precision": "fp32", "channels_last": False, "kernel": "loop", "compile": True},
    "defaults (auto)": {"precision": "auto", "channels_last": True, "kernel": "auto", "compile": False},
    "all: bf16 + channels_last + fused Adam": {"precision": "bf16", "channels_last": True, "kernel": "fused",
                                         "compile": False},
    "all + compile": {"precision": "bf16", "channels_last": True, "kernel": "fused", "compile": True},
}


def reference_iteration(size: tuple[int, int], device: str):
    """One Table 1 iteration (2-bit noise) the way the official ERFNet and CycleGAN code is glued together by
    hand: eager fp32, per-tensor Adam, no checks, no casts, the loss written inline. Same networks."""
    import random

    import torch
    import torch.nn.functional as nnf

    from cycleseg.core.networks import PatchDiscriminator, image_generator, init_weights, segmentation_generator

    G, F, D = (init_weights(n.to(device)) for n in (segmentation_generator(20), image_generator(20),
                                                     PatchDiscriminator()))
    opt_g = torch.optim.Adam([*G.parameters(), *F.parameters()], lr=2e-4, betas=(0.5, 0.999), foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    image = torch.rand(4, 3, *size, device=device) * 2 - 1
    labels = torch.randint(0, 20, (4, *size), device=device)
    pool, rng = [], random.Random(0)

    def iteration() -> None:
        D.requires_grad_(False)
        logits = G(image)
        quantized = torch.round((logits.clamp(-1, 1) + 1) / (2 / 3)) * (2 / 3) - 1
        rec = F(logits + (quantized - logits).detach())  # straight-through
        fake = F(nnf.one_hot(labels, 20).permute(0, 3, 1, 2).float())
        score = D(fake)
        forward = 0.5 * nnf.cross_entropy(logits, labels) + 0.5 * (rec - image).abs().mean()
        backward = (1 / 11) * nnf.mse_loss(score, torch.ones_like(score)) \
            + (10 / 11) * nnf.cross_entropy(G(fake), labels)
        opt_g.zero_grad()
        ((20 / 31) * forward + (11 / 31) * backward).backward()
        opt_g.step()
        D.requires_grad_(True)
        queried = []
        for x in fake.detach():  # CycleGAN's image pool
            if len(pool) < 50:
                pool.append(x)
                queried.append(x)
            elif rng.random() < 0.5:
                i = rng.randrange(50)
                queried.append(pool[i])
                pool[i] = x
            else:
                queried.append(x)
        real, old = D(image), D(torch.stack(queried))
        loss_d = 0.5 * (nnf.mse_loss(real, torch.ones_like(real)) + nnf.mse_loss(old, torch.zeros_like(old)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

    return iteration


def measure(variant: str, size: tuple[int, int], device: str, iters: int, warmup: int, threads: int) -> dict:
    """Time `iters` training iterations of one variant in this process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    if variant == "reference":
        return _time(variant, reference_iteration(size, dev), dev, size, "fp32", iters, warmup)

    from cycleseg.config import Config, ModelConfig, NoiseConfig
    from cycleseg.core.models import build_models
    from cycleseg.core.pool import ImagePool
    from cycleseg.core.precision import make_adam, resolve_precision, to_memory_format
    from cycleseg.core.steps import discriminator_step, generator_step

    opts = VARIANTS[variant]
    cfg = Config()
    amp = resolve_precision(opts["precision"], dev)
    models = build_models(ModelConfig(), NoiseConfig(kind="quantize", bits=2)).to(dev)
    if opts["channels_last"]:
        models.to(memory_format=torch.channels_last)
    opt_g = make_adam(list(models.G.parameters()) + list(models.F.parameters()), 2e-4, (0.5, 0.999),
                      opts["kernel"], dev)
    opt_d = make_adam(list(models.D.parameters()), 2e-4, (0.5, 0.999), opts["kernel"], dev)
    if opts["compile"]:
        for net in (models.G, models.F, models.D):
            net.compile()
    pool = ImagePool(50)
    image = to_memory_format(torch.rand(4, 3, *size, device=dev) * 2 - 1, opts["channels_last"])
    labels = torch.randint(0, 20, (4, *size), device=dev)

    def iteration() -> None:
        _, fake = generator_step(models, opt_g, image, labels, cfg.loss, amp=amp)
        discriminator_step(models, opt_d, image, fake, pool, amp=amp)

    return _time(variant, iteration, dev, size, amp.name, iters, warmup)


def _time(variant: str, iteration, dev, size: tuple[int, int], precision: str, iters: int, warmup: int) -> dict:
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(warmup):
        iteration()
    warm = time.perf_counter() - start
    times = []
    for _ in range(iters):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        iteration()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": variant, "size": f"{size[1]}x{size[0]}", "device": dev.type, "precision": precision,
            "seconds_per_iter": times[len(times) // 2], "iters_per_s": 1 / times[len(times) // 2],
            "warmup_seconds": warm, "peak_memory_mb": peak / 2**20, "memory": "cuda allocated" if dev.type == "cuda"
            else "process max RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512x256,128x64", help="WIDTHxHEIGHT list (default 512x256,128x64)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (compilation happens here)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per variant, alternating (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: this machine)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--out", default="benchmarks/results/bench_train", help="output path without suffix")
    parser.add_argument("--_one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args._one:
        variant, size, device = json.loads(args._one)
        print(json.dumps(measure(variant, tuple(size), device, args.iters, args.warmup, args.threads)))
        return

    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    runs: dict[tuple, list[dict]] = {}
    for device in devices:
        for size in sizes:
            for round_ in range(args.rounds):  # alternate the variants, so a slow spell hits all of them
                for variant in variants:
                    one = json.dumps([variant, size, device])
                    proc = subprocess.run([sys.executable, __file__, "--_one", one, "--iters", str(args.iters),
                                           "--warmup", str(args.warmup), "--threads", str(args.threads)],
                                          capture_output=True, text=True, check=False)
                    if proc.returncode != 0:
                        print(f"{device} {size} {variant}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs.setdefault((device, r["size"], variant), []).append(r)
                    print(f"round {round_ + 1}: {device:<5} {r['size']:>8} {variant:<40} "
                          f"{r['seconds_per_iter']:.3f} s/it ({r['precision']}), peak {r['peak_memory_mb']:.0f} MB",
                          flush=True)
    results = []
    for rounds in runs.values():  # the median round of each variant
        rounds.sort(key=lambda r: r["seconds_per_iter"])
        results.append(rounds[len(rounds) // 2] | {"rounds": [r["seconds_per_iter"] for r in rounds]})
    write(results, Path(args.out), args)


def write(results: list[dict], out: Path, args: argparse.Namespace) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_model(),
            "threads": args.threads, "batch": 4, "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [(f"{meta['cpu']}, torch {meta['torch']}, {args.threads} threads, batch 4, median of {args.iters} "
              f"iterations after {args.warmup} warm-up, median of {args.rounds} alternating processes"), "",
             "| device | size | variant | precision | s/iter | it/s | time vs reference | peak MB | memory vs reference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = next((x for x in results if x["variant"] == "reference" and x["size"] == r["size"]
                    and x["device"] == r["device"]), None)
        rel_t = f"{r['seconds_per_iter'] / ref['seconds_per_iter']:.2f}x" if ref else "–"
        rel_m = f"{r['peak_memory_mb'] / ref['peak_memory_mb']:.2f}x" if ref else "–"
        lines.append(f"| {r['device']} | {r['size']} | {r['variant']} | {r['precision']} | "
                     f"{r['seconds_per_iter']:.3f} | {r['iters_per_s']:.2f} | {rel_t} | {r['peak_memory_mb']:.0f} | "
                     f"{rel_m} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def cpu_model() -> str:
    """`lscpu`'s model name (the figures differ between CPU models; say which one measured them)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()

"""Training speed of the two architectures (model.arch): ERFNet (the paper's) beside the small stride-1 residual
generator of the mechanism laboratory (resnet_small, docs/mechanism.md).

One iteration is cycleseg's own Table 1 step (generator step with both cycles, then the discriminator step;
no noise, fp32, channels-last off) on random data. The two architectures alternate over --rounds, so that a slow
spell of the machine hits both; the median time per iteration of each is reported, as iterations per second
and per core-hour, with the ratio resnet_small / erfnet.

    .venv/bin/python benchmarks/bench_arch.py                         # 32x32 batch 8 and 128x64 batch 4, 1 thread
    .venv/bin/python benchmarks/bench_arch.py --sizes 32x32 --batch 8 --threads 1 --out benchmarks/results/bench_arch

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _setup(arch: str, size: tuple[int, int], batch: int):
    import torch

    from cycleseg.config import load_config
    from cycleseg.core.models import build_models
    from cycleseg.core.pool import ImagePool

    cfg = load_config(None, ["model.num_classes=20", f"model.arch={arch}", "train.precision=fp32"])
    models = build_models(cfg.model, cfg.noise)
    opt_g = torch.optim.Adam([*models.G.parameters(), *models.F.parameters()], lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(models.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    image = torch.rand(batch, 3, *size) * 2 - 1
    labels = torch.randint(0, 20, (batch, *size))
    return cfg, models, opt_g, opt_d, ImagePool(50), image, labels


def _time_iterations(state, iters: int) -> float:
    from cycleseg.core.steps import discriminator_step, generator_step

    cfg, models, opt_g, opt_d, pool, image, labels = state
    start = time.perf_counter()
    for _ in range(iters):
        _, fake = generator_step(models, opt_g, image, labels, cfg.loss)
        discriminator_step(models, opt_d, image, fake, pool)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32x32,128x64", help="WIDTHxHEIGHT list (default 32x32,128x64)")
    parser.add_argument("--batch", default="8,4", help="batch size per size (default 8,4)")
    parser.add_argument("--iters", type=int, default=5, help="iterations per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="benchmarks/results/bench_arch")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    rows = []
    for (width, height), batch in zip(sizes, batches, strict=True):
        states = {arch: _setup(arch, (height, width), batch) for arch in ("erfnet", "resnet_small")}
        times: dict[str, list[float]] = {arch: [] for arch in states}
        for state in states.values():
            _time_iterations(state, 1)  # warm-up
        for _ in range(args.rounds):
            for arch, state in states.items():
                times[arch].append(_time_iterations(state, args.iters))
        median = {arch: statistics.median(t) for arch, t in times.items()}
        rows.append({"size": f"{width}x{height}", "batch": batch,
                     **{f"{arch}_s_per_iter": median[arch] for arch in median},
                     "ratio_resnet_small_over_erfnet": median["erfnet"] / median["resnet_small"]})
        print(f"{width}x{height} batch {batch}: erfnet {1 / median['erfnet']:.2f} it/s, resnet_small "
              f"{1 / median['resnet_small']:.2f} it/s ({median['erfnet'] / median['resnet_small']:.2f}x)", flush=True)
    result = {"cpu": _cpu_model(), "threads": args.threads, "torch": torch.__version__, "iters": args.iters,
              "rounds": args.rounds, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training speed by architecture ({result['cpu']}, {args.threads} thread(s), torch {torch.__version__})",
             "", (f"One Table 1 iteration (both cycles and D_X, no noise, fp32), median of {args.rounds} rounds of "
                  f"{args.iters} iterations."), "",
             "| size | batch | erfnet it/s | resnet_small it/s | resnet_small it per core-hour | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['batch']} | {1 / r['erfnet_s_per_iter']:.2f} | "
                     f"{1 / r['resnet_small_s_per_iter']:.2f} | "
                     f"{3600 / r['resnet_small_s_per_iter'] / args.threads:,.0f} | "
                     f"{r['ratio_resnet_small_over_erfnet']:.2f}x |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Data loading speed: the PNG path against the cache of `cycleseg prepare`, side by side in one run.

    .venv/bin/python benchmarks/bench_data.py                     # 40 generated 2048x1024 images, read at 512x256
    .venv/bin/python benchmarks/bench_data.py --data /data/cityscapes --split val

Without --data, generates --images synthetic images of --source-size (WIDTHxHEIGHT) into a temporary folder in
the Cityscapes layout. Prepares the cache at --size, then times whole epochs of a DataLoader as training builds
them (a new loader per epoch, shuffled, pinned memory when a GPU is present) over both paths and each
--workers setting, after one warm-up epoch per setting (so both read files from the OS page cache). Prints a
Markdown table and writes it, with the settings and the machine, as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from cycleseg.data import CityscapesDataset
from cycleseg.data.cache import CachedDataset, prepare
from cycleseg.data.synthetic import make_synthetic


def parse_size(text: str) -> tuple[int, int]:
    """'512x256' -> (H, W) = (256, 512)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def time_epochs(dataset, batch_size: int, workers: int, epochs: int) -> float:
    """Seconds per epoch (mean of `epochs`) after one warm-up epoch; each epoch builds its own DataLoader."""
    def one_epoch(epoch: int) -> None:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(epoch), pin_memory=torch.cuda.is_available())
        for image, labels in loader:
            assert image.shape[0] > 0 and labels.shape == image.shape[:1] + image.shape[2:]

    one_epoch(-1)
    start = time.perf_counter()
    for epoch in range(epochs):
        one_epoch(epoch)
    return (time.perf_counter() - start) / epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a Cityscapes-layout folder (default: generate one)")
    parser.add_argument("--split", default="train", help="split to read (default train)")
    parser.add_argument("--images", type=int, default=40, help="images to generate without --data (default 40)")
    parser.add_argument("--source-size", default="2048x1024", help="size of the generated images (default 2048x1024)")
    parser.add_argument("--size", default="512x256", help="size read at, as training does (default 512x256)")
    parser.add_argument("--batch-size", type=int, default=4, help="batch size (default 4, the paper's)")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to time (default 0,2)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per setting (default 3)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/bench_data.json"), help="JSON output")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "cityscapes"
            print(f"generating {args.images} images of {args.source_size} in {data} ...", file=sys.stderr)
            make_synthetic(data, num_train=args.images, num_val=0, size=parse_size(args.source_size), seed=0)
        cache_dir = Path(tmp) / "cache"  # never write into a real data set's folder from a benchmark
        start = time.perf_counter()
        prepare(data, size, splits=(args.split,), cache_dir=cache_dir, progress=sys.stderr.isatty())
        prepare_seconds = time.perf_counter() - start
        datasets = {"png": CityscapesDataset(data, args.split, size),
                    "cache": CachedDataset(data, args.split, size, cache_dir)}
        n = len(datasets["png"])
        with Image.open(datasets["png"].samples[0].image_path) as im:
            source = f"{im.size[0]}x{im.size[1]}"
        rows = []
        for path, dataset in datasets.items():
            for w in workers:
                seconds = time_epochs(dataset, args.batch_size, w, args.epochs)
                rows.append({"path": path, "num_workers": w, "batch_size": args.batch_size,
                             "pin_memory": torch.cuda.is_available(), "seconds_per_epoch": round(seconds, 4),
                             "images_per_s": round(n / seconds, 1)})

    best = {p: max(r["images_per_s"] for r in rows if r["path"] == p) for p in datasets}
    ratio = best["cache"] / best["png"]
    print(f"{n} images of {source} read at {args.size}, batch {args.batch_size}, shuffled, a new DataLoader per "
          f"epoch, mean of {args.epochs} epochs after a warm-up; cache built in {prepare_seconds:.1f} s; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print("| path | num_workers | pin_memory | images/s | s/epoch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['num_workers']} | {r['pin_memory']} | {r['images_per_s']:.1f} | "
              f"{r['seconds_per_epoch']:.3f} |")
    print(f"\ncache / PNG, best setting of each: {ratio:.1f}x")
    report = {"images": n, "source_size": source, "size": args.size, "split": args.split, "epochs": args.epochs,
              "prepare_seconds": round(prepare_seconds, 2), "rows": rows, "best_images_per_s": best,
              "ratio": round(ratio, 1), "cpus": os.cpu_count(), "torch": torch.__version__,
              "platform": platform.platform(), "command": " ".join(["benchmarks/bench_data.py", *(argv or sys.argv[1:])])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference speed of G: eager fp32 beside the optimized PyTorch path and ONNX Runtime, images/s.

    .venv/bin/python benchmarks/bench_infer.py                    # 512x256 and 1024x512, batch 4, CPU (+ CUDA)
    .venv/bin/python benchmarks/bench_infer.py --sizes 512x256 --batch 1

Writes OUT.json and OUT.md (a Markdown table with the speed-up over eager fp32).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from cycleseg.core.networks import segmentation_generator
from cycleseg.core.precision import resolve_precision, to_memory_format


def timed(fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median seconds of one call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def variants(G: torch.nn.Module, x: torch.Tensor, device: torch.device) -> dict[str, Callable[[], object]]:
    """name -> a call that segments the batch x (B, 3, H, W)."""
    G_cl = copy.deepcopy(G).eval().to(memory_format=torch.channels_last)
    x_cl = to_memory_format(x, True)
    amp = resolve_precision("bf16" if device.type == "cpu" else "auto", device)

    def eager() -> object:
        with torch.no_grad():
            return G(x)

    def inference_cl() -> object:
        with torch.inference_mode():
            return G_cl(x_cl)

    def inference_cl_amp() -> object:
        with torch.inference_mode(), amp.autocast():
            return G_cl(x_cl)

    out = {"eager fp32 (no_grad)": eager, "inference_mode + channels_last": inference_cl,
           f"+ {amp.name} autocast (optimized)": inference_cl_amp}
    return out


def onnx_runner(G: torch.nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp()) / "g.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(G.cpu(), (x.cpu(),), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": x.cpu().numpy()}
    return lambda: session.run(None, feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512x256,1024x512", help="WIDTHxHEIGHT list")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--out", default="benchmarks/results/bench_infer", help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [torch.device(name) for name in names]
    results = []
    for device in devices:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for size_text in args.sizes.split(","):
            width, height = (int(v) for v in size_text.split("x"))
            torch.manual_seed(0)
            G = segmentation_generator(20).to(device).eval()
            x = torch.rand(args.batch, 3, height, width, device=device) * 2 - 1
            runs = variants(G, x, device)
            if device.type == "cpu":
                runner = onnx_runner(G, x, args.threads)
                if runner is not None:
                    runs["ONNX Runtime (CPU)"] = runner
            for name, fn in runs.items():
                seconds = timed(fn, args.iters, args.warmup, sync)
                r = {"device": device.type, "size": size_text, "batch": args.batch, "variant": name,
                     "seconds_per_batch": seconds, "images_per_s": args.batch / seconds}
                results.append(r)
                print(f"{device.type:<5} {size_text:>9} {name:<34} {r['images_per_s']:.2f} images/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
            "batch": args.batch, "iters": args.iters}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [f"torch {meta['torch']}, {args.threads} threads, batch {args.batch}, median of {args.iters}", "",
             "| device | size | variant | images/s | vs eager fp32 |", "|---|---|---|---|---|"]
    for r in results:
        ref = next(x for x in results if x["device"] == r["device"] and x["size"] == r["size"])
        lines.append(f"| {r['device']} | {r['size']} | {r['variant']} | {r['images_per_s']:.2f} | "
                     f"{r['images_per_s'] / ref['images_per_s']:.2f}x |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

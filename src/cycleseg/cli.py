"""The `cycleseg` command line: parse, validate, delegate. Every user error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cycleseg import __version__
from cycleseg.errors import ConfigError, CycleSegError, Interrupted, RunError

EXAMPLES = """\
examples:
  cycleseg make-synthetic data/synthetic
  cycleseg train configs/cyclegan.yaml --data data/synthetic --out runs/quant2 noise.kind=quantize noise.bits=2
  cycleseg evaluate runs/quant2 --data data/synthetic
  cycleseg table runs/plain runs/nonoise runs/quant2
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that point at --help."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cycleseg.metrics import METRICS
    from cycleseg.noise import NOISE_KINDS

    parser = _Parser(
        prog="cycleseg",
        description="Cycle-consistent semantic segmentation with noise injection into the latent segmentation "
                    "space (Loehdefink & Fingscheidt). Train ERFNet CycleGANs and the plain ERFNet on "
                    "Cityscapes or a built-in synthetic city, and evaluate them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cycleseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-synthetic", help="generate the synthetic 'toy city' dataset in the Cityscapes layout",
                       description="Write procedural street scenes with real Cityscapes labelIds into OUT, in "
                                   "the Cityscapes folder layout (leftImg8bit/, gtFine/), train and val splits.")
    p.add_argument("out", type=Path, help="output folder (created)")
    p.add_argument("--train", type=int, default=240, help="number of training images (default 240)")
    p.add_argument("--val", type=int, default=60, help="number of validation images (default 60)")
    p.add_argument("--size", default="256x128", help="image size WIDTHxHEIGHT (default 256x128)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")

    p = sub.add_parser(
        "train", help="train a model from a YAML config",
        description="Train the cycle model of the paper (Table 1) or the plain ERFNet. Settings come from the "
                    "YAML CONFIG (see configs/), then from KEY=VALUE overrides such as noise.kind=quantize "
                    "noise.bits=2 optim.epochs=10. Writes config.yaml, log.jsonl, TensorBoard events, "
                    "last.pt (checkpoint), best.pt (best validation mIoU) and metrics.json (final validation) "
                    "into --out. Ctrl-C or SIGTERM saves a checkpoint; --resume continues exactly.",
        epilog=f"noise kinds: {', '.join(NOISE_KINDS)}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", help="YAML config file, e.g. configs/cyclegan.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. noise.bits=2")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last.pt, with its own config")
    p.add_argument("--data", type=Path, help="Cityscapes-layout data folder (overrides data.root)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser(
        "evaluate", help="evaluate a trained run on a split",
        description="Compute class IoU and mIoU and, for cycle models, the PSNR of the forward-cycle "
                    "reconstruction and the measured SNR of the noise injection. Prints a table and writes "
                    "RUN_DIR/eval_<split>.json.",
        epilog="metrics:\n" + "\n".join(f"  {k:<8} {v}" for k, v in METRICS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("--data", type=Path, required=True, help="Cityscapes-layout data folder")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split to evaluate (default val)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint file in RUN_DIR: last.pt (default) or best.pt")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")

    p = sub.add_parser("table", help="print runs side by side like the paper's Table 2",
                       description="Read RUN_DIR/eval_<split>.json (or metrics.json) of each run and print "
                                   "noise, SNR, mIoU and PSNR in one table.")
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories")
    p.add_argument("--split", default="val", help="which eval_<split>.json to read (default val)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args lets KEY=VALUE overrides of `train` come before or after its options.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"cycleseg {args.command}: {_one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except CycleSegError as e:
        print(f"cycleseg {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cycleseg {args.command}: interrupted", file=sys.stderr)
        return 130


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from cycleseg.synthetic import make_synthetic

    width, height = _parse_size(args.size)
    summary = make_synthetic(args.out, num_train=args.train, num_val=args.val, size=(height, width), seed=args.seed)
    print(f"wrote {summary.get('train', args.train)} train and {summary.get('val', args.val)} val images "
          f"of {width}x{height} to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from cycleseg.checkpoint import LAST
    from cycleseg.config import load_config

    if args.resume is not None:
        # A resumed run keeps its config; only settings that do not change the result may be overridden.
        overrides = ([str(args.config)] if args.config is not None else []) + list(args.overrides)
        fixed = [o for o in overrides if not o.startswith(RESUME_OVERRIDABLE)]
        if fixed or args.out is not None:
            raise ConfigError(f"--resume RUN_DIR takes the run's own config; only {', '.join(RESUME_OVERRIDABLE)}"
                              f"... may be overridden, not {' '.join(fixed) or '--out'}")
        if not (args.resume / LAST).is_file():
            raise RunError(f"{args.resume / LAST}: nothing to resume; train with --out {args.resume} first")
        config_path, out = args.resume / "config.yaml", args.resume
    else:
        if args.config is None or args.out is None:
            raise ConfigError("train needs CONFIG and --out RUN_DIR (or --resume RUN_DIR)")
        config_path, overrides, out = args.config, list(args.overrides), args.out
    if args.data:
        overrides.append(f"data.root={args.data}")
    cfg = load_config(config_path, overrides)
    if args.dry_run:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.resume is None and (out / LAST).exists() and not args.overwrite:
        raise RunError(f"{out} already holds a run; continue it with --resume {out}, choose another --out, or pass "
                       "--overwrite to replace it")
    from cycleseg.train import train

    metrics = train(cfg, out, resume=args.resume is not None)
    print(f"{cfg.name}: mIoU {_fmt(metrics.get('miou'), 1)} %, PSNR {_fmt(metrics.get('psnr_db'), 2)} dB, "
          f"SNR {_fmt(metrics.get('snr_db'), 2)} dB after {metrics['iterations']} iterations "
          f"({metrics['train_seconds']} s); run in {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cycleseg.evaluate import evaluate_run, format_results

    results = evaluate_run(args.run_dir, args.data, args.split, device=args.device, checkpoint=args.checkpoint)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    rows = []
    for run_dir in args.run_dirs:
        path = run_dir / f"eval_{args.split}.json"
        if not path.is_file():
            path = run_dir / "metrics.json"
        if not path.is_file():
            raise RunError(f"{run_dir}: no eval_{args.split}.json or metrics.json; run `cycleseg evaluate` first")
        results = json.loads(path.read_text())
        config = _read_yaml(run_dir / "config.yaml")
        rows.append((config.get("name", run_dir.name), _noise_label(config), results))
    print(f"{'run':<24} {'noise':<22} {'SNR dB':>7} {'mIoU %':>7} {'PSNR dB':>8}")
    for name, noise, r in rows:
        print(f"{name:<24} {noise:<22} {_fmt(r.get('snr_db'), 2):>7} {_fmt(r.get('miou'), 1):>7} "
              f"{_fmt(r.get('psnr_db'), 2):>8}")
    return 0


RESUME_OVERRIDABLE = ("train.", "data.root=", "data.num_workers=")

COMMANDS = {"make-synthetic": cmd_make_synthetic, "train": cmd_train, "evaluate": cmd_evaluate,
            "table": cmd_table}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RunError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 256x128") from None
    if width < 32 or height < 32 or width % 8 or height % 8:
        raise RunError(f"--size {text!r}: width and height must be multiples of 8, at least 32")
    return width, height


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _noise_label(config: dict) -> str:
    model, noise = config.get("model", {}), config.get("noise", {})
    if model.get("kind") == "plain":
        return "plain ERFNet"
    kind = noise.get("kind", "none")
    if kind == "quantize":
        return f"quantize {noise.get('bits')} bit"
    if kind == "gaussian":
        return f"gaussian {noise.get('snr_db')} dB"
    return kind


def _one_line(error: Exception) -> str:
    """Messages quote user input (file names, keys); never let it break the one-line rule."""
    return " ".join(str(error).splitlines())


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())

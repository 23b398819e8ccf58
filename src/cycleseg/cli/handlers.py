"""The handlers of the `cycleseg` subcommands that make data or work on one run: each takes the parsed
arguments, calls the command's function and prints its result; a user error is raised as a CycleSegError."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cycleseg.cli.common import one_line, parse_size, quiet_overrides, show_progress
from cycleseg.errors import ConfigError, RunError
from cycleseg.runs.formats import fmt

if TYPE_CHECKING:
    from cycleseg.config import Config

__all__ = ["cmd_calibrate", "cmd_check_data", "cmd_diagnose", "cmd_evaluate", "cmd_export", "cmd_make_synthetic",
           "cmd_predict", "cmd_prepare", "cmd_reward", "cmd_segment", "cmd_train", "cmd_upgrade", "print_result"]


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from cycleseg.data.synthetic import make_synthetic

    width, height = parse_size(args.size)
    if args.train < 1:
        raise ConfigError(f"--train {args.train}: must be at least 1 (the number of training images)")
    if args.val < 0:
        raise ConfigError(f"--val {args.val}: must be at least 0 (the number of validation images)")
    if not (math.isfinite(args.colour_spread) and args.colour_spread >= 0):
        raise ConfigError(f"--colour-spread {args.colour_spread}: must be a finite number >= 0 (1 = the default city)")
    summary = make_synthetic(args.out, num_train=args.train, num_val=args.val, size=(height, width), seed=args.seed,
                             progress=show_progress(args), fmt=args.format, colour_spread=args.colour_spread,
                             overwrite=args.overwrite, scene=args.scene, colour_mode=args.colour_mode)
    print(f"wrote {summary.get('train', args.train)} train and {summary.get('val', args.val)} val images "
          f"of {width}x{height} to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from cycleseg import runs
    from cycleseg.config import load_config

    run_config = None
    if args.resume is not None:
        # A resumed run keeps the config of its checkpoint; only config.RESUMABLE_KEYS may be overridden.
        if args.out is not None:
            raise ConfigError(f"--resume {args.resume} continues that run in its own folder; drop --out")
        if args.config is not None and "=" not in str(args.config):
            raise ConfigError(f"--resume {args.resume} takes the run's own config; drop {args.config}")
        if args.init_from is not None:
            raise ConfigError(f"--init-from {args.init_from} starts a new run; --resume {args.resume} continues "
                              f"one from its own {runs.LAST}: drop one of them")
        if args.name is not None:
            raise ConfigError(f"--name {args.name} names a new run; --resume {args.resume} keeps the run's name: "
                              "drop --name")
        overrides = (([str(args.config)] if args.config is not None else []) + list(args.overrides)
                     + quiet_overrides(args))
        if args.data:
            overrides.append(f"data.root={args.data}")
        out = args.resume
        cfg, run_config = runs.resume_config(args.resume, overrides)
        from cycleseg.commands.train import nothing_to_train

        why = nothing_to_train(out, cfg)
        if why is not None:  # nothing to train: touch nothing
            print(f"{out}: {why}")
            return print_result(cfg.name, runs.read_json(out / runs.METRICS), out)
    else:
        if args.config is None:
            raise ConfigError("train needs CONFIG and --out RUN_DIR (or --resume RUN_DIR)")
        overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else []) + quiet_overrides(args)
        cfg, out = _named(load_config(args.config, overrides), args), args.out
        if out is None and not args.dry_run:
            raise ConfigError("train needs --out RUN_DIR, the folder to create the run in")
        if out is not None:
            from cycleseg.commands.calibrate import resolve_snr_from

            cfg = resolve_snr_from(cfg, base_dir=out.parent)  # noise.snr_db: from RUN_DIR -> its measured SNR
    if args.dry_run:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from cycleseg.commands.train import train
    from cycleseg.core.distributed import is_main

    metrics = train(cfg, out, resume=args.resume is not None, overwrite=args.overwrite, run_config=run_config,
                    init_from=args.init_from)
    if not is_main():  # under torchrun, rank 0 speaks for all
        return 0
    return print_result(cfg.name, metrics, out)


# Overrides of these sections make another model than the config file's; they join its name (tables, log lines).
NAMING_SECTIONS = ("model", "noise", "loss")


def _named(cfg: Config, args: argparse.Namespace) -> Config:
    """`cfg` named by --name, or by a `name=` override, or else by its file's name followed by the overrides that
    make it another model ("cyclegan noise.kind=quantize noise.bits=2"), so that runs of one file tell apart."""
    import dataclasses

    if args.name is not None:
        return dataclasses.replace(cfg, name=args.name)
    words = [o.strip() for o in args.overrides]
    if any(w.partition("=")[0].strip() == "name" for w in words):
        return cfg
    own = [w for w in words if w.partition("=")[0].split(".")[0].strip() in NAMING_SECTIONS]
    return dataclasses.replace(cfg, name=" ".join([cfg.name, *own])) if own else cfg


def print_result(name: str, metrics: dict, out: Path) -> int:
    print(f"{name}: mIoU {fmt(metrics.get('miou'), 1)} %, PSNR {fmt(metrics.get('psnr_db'), 2)} dB, "
          f"SNR {fmt(metrics.get('snr_db'), 2)} dB after {metrics['iterations']} iterations "
          f"({metrics['train_seconds']} s of training); run in {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cycleseg.commands.evaluate import evaluate_run, format_results

    results = evaluate_run(args.run_dir, _data(args), args.split, device=args.device, checkpoint=args.checkpoint,
                           full_res=args.full_res, official=args.official, predictions=args.predictions,
                           precision=args.precision, progress=show_progress(args))
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def _data(args: argparse.Namespace) -> Path:
    """The data folder of a command on a run: --data when given, else the folder the run was trained on."""
    from cycleseg import runs

    return runs.run_data_root(args.run_dir, args.data)


def cmd_check_data(args: argparse.Namespace) -> int:
    from cycleseg.data.check import check_data, format_report

    expect = None
    if args.expect_size:
        try:
            expect = tuple(int(v) for v in args.expect_size.lower().split("x"))
        except ValueError:
            expect = ()
        if len(expect) != 2 or min(expect) < 1:
            raise RunError(f"--expect-size {args.expect_size!r}: expected WIDTHxHEIGHT, e.g. 2048x1024")
    splits = tuple(dict.fromkeys(args.split)) if args.split else ("train", "val", "test")
    report = check_data(args.data, splits, full=not args.fast, expect_size=expect, cache_dir=args.cache_dir,
                        progress=show_progress(args), fmt=args.format)
    print(format_report(report))
    for problem in report.problems:
        print(one_line(problem), file=sys.stderr)
    return 0 if report.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from cycleseg.data.cache import cache_folder, prepare

    width, height = parse_size(args.size)
    splits = tuple(dict.fromkeys(args.split)) if args.split else None
    done = prepare(args.data, (height, width), splits, args.cache_dir, force=args.force, progress=show_progress(args),
                   fmt=args.format)
    for split, status in done.items():
        print(f"{split}: {status}")
    print(f"cache: {cache_folder(args.data, (height, width), args.cache_dir)}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from cycleseg.commands.segment import load, segment_files

    segmenter = load(args.run_dir, args.checkpoint, args.device, args.precision)
    summary = segment_files(segmenter, args.images, args.out, progress=show_progress(args),
                            reconstruction=args.reconstruction)
    print(f"wrote {', '.join(summary['outputs'])} of {summary['num_images']} images to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cycleseg.commands.predict import predict_run

    summary = predict_run(args.run_dir, _data(args), args.split, args.out, checkpoint=args.checkpoint,
                          device=args.device, reconstruction=args.reconstruction, progress=show_progress(args),
                          precision=args.precision)
    print(f"wrote {', '.join(summary['outputs'])} of {summary['num_images']} {args.split} images to {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from cycleseg.commands.calibrate import calibrate_run, calibration_path

    if args.quantizers:
        return _calibrate_quantizers(args)
    r = calibrate_run(args.run_dir, _data(args), args.split, device=args.device, noise_overrides=args.noise,
                      progress=show_progress(args))
    noise = ", ".join(f"{k}={v}" for k, v in r["noise"].items() if v is not None)
    print(f"{r['run']}: {noise}: SNR {r['snr_db']:.2f} dB (mean of {r['num_images']} {args.split} images; "
          f"std {r['snr_db_std']:.2f}, range {r['snr_db_min']:.2f} .. {r['snr_db_max']:.2f})")
    if r["clip_share"] is not None:
        print(f"logit RMS {r['logit_rms']:.2f}; {100 * r['clip_share']:.1f} % of the quantizer's inputs beyond +-1")
    if not args.noise:
        print(f"written to {calibration_path(args.run_dir, args.split)}")
    return 0


def _calibrate_quantizers(args: argparse.Namespace) -> int:
    from cycleseg.commands.calibrate import calibrate_quantizers, quantizer_calibration_path

    if args.noise:
        raise ConfigError("--quantizers measures its own noises; drop the KEY=VALUE settings")
    r = calibrate_quantizers(args.run_dir, _data(args), args.split, device=args.device, scale_rms=args.scale_rms,
                             progress=show_progress(args))
    print(f"{r['run']}: SNR dB of n-bit quantization on its logits (logit RMS {r['logit_rms']:.2f}; mean of "
          f"{r['num_images']} {args.split} images; clipped: share of the quantizer's inputs beyond +-1)")
    print(f"{'quantizer':<10} {'paper':>7} {'eq. 9 as written':>17} {'clipped':>8} "
          f"{'scaled to RMS ' + format(r['scale_rms'], 'g'):>18} {'clipped':>8}")
    for q in r["quantizers"]:
        print(f"{str(q['bits']) + ' bit':<10} {fmt(q['paper_snr_db'], 2):>7} {fmt(q['snr_db_none'], 2):>17} "
              f"{fmt(100 * q['clip_share_none'], 1) + ' %':>8} {fmt(q['snr_db_rms'], 2):>18} "
              f"{fmt(100 * q['clip_share_rms'], 1) + ' %':>8}")
    m = r["max_only"]
    print(f"{'max-only':<10} {fmt(m['paper_snr_db'], 2):>7} {fmt(m['snr_db'], 2):>17} {'':>8} {'(scale-free)':>18}")
    print(f"written to {quantizer_calibration_path(args.run_dir, args.split)}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from cycleseg.commands.diagnose import diagnose_run, format_summary

    try:
        snrs = [float(v) for v in args.snrs.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--snrs {args.snrs!r}: expected comma-separated numbers in dB, e.g. 40,20,0,-10") from None
    if args.examples < 1:
        raise ConfigError(f"--examples {args.examples}: must be >= 1")
    if args.along_training:
        from cycleseg.commands.diagnose import TRAINING_SNRS, diagnose_training

        chosen = snrs if args.snrs != "40,30,20,10,5,0,-5,-10" else TRAINING_SNRS
        curve = diagnose_training(args.run_dir, _data(args), args.split, device=args.device, max_images=args.max_images,
                                  snrs=chosen, progress=show_progress(args))
        for point in curve["points"]:
            print(f"step {point['step']:>7}: watermark gap {fmt(point['watermark_gap_db'], 2)} dB, gap to class "
                  f"means {fmt(point['class_mean_gap_db'], 2)} dB (split's: {fmt(point.get('split_mean_gap_db'), 2)} "
                  f"dB), mIoU {fmt(point['miou'], 1)} %")
        print(f"wrote {args.run_dir / ('diagnose_' + args.split + '_training.json')} and the .png beside it")
        return 0
    results = diagnose_run(args.run_dir, _data(args), args.split, device=args.device, checkpoint=args.checkpoint,
                           max_images=args.max_images, snrs=snrs, scale_to=args.scale_to, num_examples=args.examples,
                           progress=show_progress(args))
    print(format_summary(results, args.run_dir))
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from cycleseg.commands.diagnose import data_reward

    width, height = parse_size(args.size)
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images {args.max_images}: must be at least 1")
    r = data_reward(args.data, args.split, (height, width), max_images=args.max_images)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['data']}, {r['split']} split, {r['num_images']} images at {r['size']}:")
    print(f"  PSNR of the labels-only oracle (class mean colours of the split): {fmt(r['labels_only_psnr_db'], 2)} dB")
    print(f"  PSNR of the labels + colours oracle (class mean colours per image): {fmt(r['image_colours_psnr_db'], 2)} dB")
    print(f"  reward for hiding: {fmt(r['reward_db'], 2)} dB")
    print(f"  references: constant grey {fmt(r['grey_psnr_db'], 2)} dB, the split's mean colour "
          f"{fmt(r['mean_colour_psnr_db'], 2)} dB")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cycleseg.commands.export import export_onnx

    r = export_onnx(args.run_dir, args.onnx, checkpoint=args.checkpoint, check=not args.no_check)
    print(f"wrote {r['onnx']} (opset {r['opset']}, trained at {r['size'][1]}x{r['size'][0]}, dynamic batch and size)")
    if "max_abs_diff" in r:
        print(f"ONNX Runtime vs PyTorch: max abs difference of the logits {r['max_abs_diff']:.2e}, "
              f"argmax agreement {100 * r['argmax_agreement']:.3f} %")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from cycleseg.runs import upgrade_checkpoint

    files: list[Path] = []
    for path in args.paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.pt") if p.is_file())
            if not found:
                raise RunError(f"{path}: no checkpoints (*.pt) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise RunError(f"{path}: no such checkpoint file or folder")
    failed = 0
    for path in files:
        try:
            rewritten = upgrade_checkpoint(path, trust=args.trust_checkpoint)
        except RunError as e:
            failed += 1
            print(f"cycleseg upgrade: {one_line(e)}", file=sys.stderr)
            continue
        print(f"{path}: {'rewritten in the safe format' if rewritten else 'already in the safe format'}")
    if failed:
        print(f"cycleseg upgrade: {failed} of {len(files)} checkpoints not rewritten (see above)", file=sys.stderr)
    return 1 if failed else 0

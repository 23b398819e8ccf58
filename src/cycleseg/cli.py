"""The `cycleseg` command line: parse, validate, delegate. Every user error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from cycleseg.errors import ConfigError, CycleSegError, DataError, Interrupted, RunError, user_message
from cycleseg.runs.formats import fmt
from cycleseg.version import __version__

EXAMPLES = """\
examples:
  cycleseg make-synthetic data/synthetic
  cycleseg train configs/cyclegan.yaml --data data/synthetic --out runs/quant2 noise.kind=quantize noise.bits=2
  cycleseg evaluate runs/quant2 --data data/synthetic
  cycleseg table runs/plain runs/nonoise runs/quant2
  cycleseg diagnose runs/nonoise --data data/synthetic
"""


# Each subcommand's --help ends with these (tests/test_docs.py checks that every subcommand has them and that they
# parse). Paths are those of the quick start (make demo) and docs/guide/.
SUBCOMMAND_EXAMPLES = {
    "make-synthetic": ["cycleseg make-synthetic data/synthetic",
                       "cycleseg make-synthetic data/camvid-like --format folder --train 40 --val 10",
                       ("cycleseg make-synthetic data/mechanism --scene shapes --colour-mode independent --size 32x32 "
                        "--train 1000 --val 200")],
    "train": ["cycleseg train configs/demo/quant2.yaml --data data/synthetic --out runs/q2",
              ("cycleseg train configs/cyclegan.yaml --data data/synthetic --out runs/g7 noise.kind=gaussian "
               "noise.snr_db=7.38"),
              "cycleseg train --resume runs/q2"],
    "evaluate": ["cycleseg evaluate runs/demo/quant2 --data data/synthetic",
                 "cycleseg evaluate runs/q2 --data /data/cityscapes --checkpoint best.pt --official --full-res"],
    "check-data": ["cycleseg check-data data/synthetic", "cycleseg check-data /data/cityscapes --fast"],
    "prepare": ["cycleseg prepare /data/cityscapes --size 512x256", "cycleseg prepare data/synthetic --size 64x32"],
    "segment": ["cycleseg segment runs/demo/quant2 photos/ --out segmented",
                "cycleseg segment runs/demo/quant2 street.jpg --out segmented --reconstruction"],
    "predict": ["cycleseg predict runs/q2 --data /data/cityscapes --split test --out preds/q2-test"],
    "table": ["cycleseg table runs/demo/erfnet runs/demo/cyclegan runs/demo/quant2", "cycleseg table runs/sweep"],
    "calibrate": ["cycleseg calibrate runs/demo/quant2 --data data/synthetic",
                  "cycleseg calibrate runs/demo/cyclegan --data data/synthetic kind=quantize bits=1"],
    "sweep": [("cycleseg sweep configs/paper --data data/synthetic --out runs/sweep --only plain,nonoise,quant2 \\\n"
               "      data.height=64 data.width=128 optim.epochs=4 optim.decay_start_epoch=2"),
              "cycleseg sweep configs/paper --data data/synthetic --out runs/sweep --seeds 3 --launcher local --jobs 2"],
    "sweep-status": ["cycleseg sweep status runs/sweep", "cycleseg sweep status runs/sweep --json"],
    "report": ["cycleseg report runs/sweep", "cycleseg report runs/sweep --runs plain,nonoise,quant2 --examples 5"],
    "diagnose": ["cycleseg diagnose runs/demo/cyclegan --data data/synthetic --max-images 60",
                 "cycleseg diagnose runs/study/nonoise/seed0 --data data/synthetic-detail --along-training"],
    "reward": ["cycleseg reward --data data/mechanism --size 32x32",
               "cycleseg reward --data data/synthetic-detail --size 64x32 --json"],
    "export": ["cycleseg export runs/demo/quant2 --onnx g.onnx"],
    "upgrade": ["cycleseg upgrade runs/q2", "cycleseg upgrade runs/ --trust-checkpoint"],
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps a one-paragraph description to the terminal; keeps text with its own line breaks (examples) as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _with_examples(parser: argparse.ArgumentParser, name: str) -> None:
    """Append the subcommand's examples to its --help, after what its epilog already says."""
    lines = "\n".join(f"  {e}" for e in SUBCOMMAND_EXAMPLES[name])
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + f"examples:\n{lines}"
    parser.formatter_class = _Formatter


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that point at --help."""

    def error(self, message: str) -> None:
        message = " ".join(message.splitlines())  # quoted arguments may hold line breaks (\n, \x1e, ...)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cycleseg.core.metrics import METRICS
    from cycleseg.core.noise import NOISE_KINDS

    parser = _Parser(
        prog="cycleseg",
        description="Cycle-consistent semantic segmentation with noise injection into the latent segmentation "
                    "space (Loehdefink & Fingscheidt). Train ERFNet CycleGANs and the plain ERFNet on "
                    "Cityscapes or a built-in synthetic city, and evaluate them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cycleseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every subcommand takes --quiet: no progress bars (they are shown only on a terminal anyway).
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars (shown only on a terminal anyway)")

    p = sub.add_parser("make-synthetic", parents=[quiet], help="generate the synthetic 'toy city' dataset in the Cityscapes layout",
                       description="Write procedural street scenes with real Cityscapes labelIds into OUT, in "
                                   "the Cityscapes folder layout (leftImg8bit/, gtFine/), train and val splits.")
    p.add_argument("out", type=Path, help="output folder (created; a folder holding other files is refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into OUT even when it holds files that make-synthetic did not write")
    p.add_argument("--train", type=int, default=240, help="number of training images (default 240)")
    p.add_argument("--val", type=int, default=60, help="number of validation images (default 60)")
    p.add_argument("--size", default="256x128", help="image size WIDTHxHEIGHT (default 256x128)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--format", default="cityscapes", choices=["cityscapes", "folder"],
                   help="cityscapes (default: leftImg8bit/, gtFine/) or folder (images/*.jpg, labels/*.png, "
                        "classes.yaml with 11 CamVid-like classes)")
    p.add_argument("--colour-spread", type=float, default=1.0, metavar="K",
                   help="scale each object's colour deviation from its class colour by K (default 1; the "
                        "watermark study uses 3: detail the label map cannot predict)")
    p.add_argument("--scene", default="city", choices=["city", "shapes"],
                   help="city (default: street scenes) or shapes (discs, squares, triangles and rings on a "
                        "background: the class is the shape; the laboratory of docs/mechanism.md)")
    p.add_argument("--colour-mode", default="class", choices=["class", "independent"],
                   help="class (default: each object's colour is its class colour plus a jitter) or independent "
                        "(each object's colour uniform whatever its class: the label map predicts none of it)")

    p = sub.add_parser(
        parents=[quiet], name="train", help="train a model from a YAML config",
        description="Train the cycle model of the paper (Table 1) or the plain ERFNet. Settings come from the "
                    "YAML CONFIG (see configs/), then from KEY=VALUE overrides such as noise.kind=quantize "
                    "noise.bits=2 optim.epochs=10. Writes config.yaml, log.jsonl, TensorBoard events, "
                    "last.pt (checkpoint), best.pt (weights at the best validation mIoU) and metrics.json (final "
                    "validation) into --out. Ctrl-C or SIGTERM saves a checkpoint; --resume continues exactly.",
        epilog=f"noise kinds: {', '.join(NOISE_KINDS)}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", help="YAML config file, e.g. configs/cyclegan.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. noise.bits=2")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last.pt, with its own config")
    p.add_argument("--init-from", type=Path, metavar="CKPT",
                   help="start the new run from the weights of another run (a checkpoint file, or a run folder: its "
                        "best.pt, else last.pt): G, F and D_X as both models have them; not its optimizer, "
                        "schedule or progress. A plain run's G can start a cycle model's G")
    p.add_argument("--data", type=Path, help="Cityscapes-layout data folder (overrides data.root)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser(
        parents=[quiet], name="evaluate", help="evaluate a trained run on a split",
        description="Compute class IoU and mIoU and, for cycle models, the PSNR of the forward-cycle "
                    "reconstruction and the measured SNR of the noise injection. Prints a table and writes "
                    "RUN_DIR/eval_<split>.json.",
        epilog="metrics:\n" + "\n".join(f"  {k:<8} {v}" for k, v in METRICS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("--data", type=Path, required=True, help="Cityscapes-layout data folder")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split to evaluate (default val)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 autocast where it is native (CPUs with AVX512-BF16 or AMX: about 2x "
                        "faster, PSNR within 0.1 dB; GPUs: bf16, or fp16 on older ones), else fp32; fp32: the "
                        "reference numbers")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint file in RUN_DIR: last.pt (default) or best.pt "
                                                           "(the weights at the best validation mIoU)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--full-res", action="store_true",
                   help="also evaluate at each image's own size (2048x1024 on Cityscapes): logits upsampled "
                        "bilinearly before the argmax, as the benchmark does")
    p.add_argument("--official", action="store_true",
                   help="also run cityscapesscripts' evalPixelLevelSemanticLabeling on labelId predictions "
                        "(written to RUN_DIR/predictions_<split>/ unless --predictions) and print its numbers "
                        "beside ours on the same files")
    p.add_argument("--predictions", type=Path, metavar="DIR",
                   help="with --official: a folder written by `cycleseg predict` (or any labelId PNGs named "
                        "<city>_<seq>_<frame>*.png) to evaluate instead")

    p = sub.add_parser(
        parents=[quiet], name="check-data", help="check a Cityscapes folder before a long run",
        description="Check the layout (splits, cities), that every image has its label and vice versa, that "
                    "every PNG is readable with the expected size and mode and (unless --fast) that every label "
                    "value is a Cityscapes labelId; and that caches written by `cycleseg prepare` are up to date. "
                    "Prints a summary (images per split, class pixel frequencies) and one line per problem on "
                    "stderr. Exit code 0: no problem; 1: problems found; 2: could not check.")
    p.add_argument("data", type=Path, help="Cityscapes-layout data folder (holding leftImg8bit/ and gtFine/)")
    p.add_argument("--fast", action="store_true",
                   help="names and PNG headers only (what `train` checks by default), no decoding")
    p.add_argument("--split", action="append", choices=["train", "val", "test"],
                   help="split to check; repeat for several (default: train, val and test when present)")
    p.add_argument("--expect-size", metavar="WxH", help="size every image must have, e.g. 2048x1024 (default: the "
                                                        "most common size)")
    p.add_argument("--cache-dir", type=Path, help="cache folder of `cycleseg prepare` (default DATA/cycleseg_cache)")
    p.add_argument("--format", default="auto", choices=["auto", "cityscapes", "folder"],
                   help="data layout (default auto: folder if DATA holds classes.yaml, else cityscapes)")

    p = sub.add_parser(
        parents=[quiet], name="prepare", help="decode and resize a Cityscapes folder once into a fast cache",
        description="Decode every image and label of the splits, resize them to --size (bilinear / nearest, as "
                    "training does) and store them as memory-mapped uint8 .npy arrays with a manifest of the "
                    "source files (sizes, hashes). Training and evaluation at that size then read the cache "
                    "instead of the PNGs (data.cache=auto), rebuild it when the data changed, or refuse "
                    "(data.cache=require). An up-to-date cache is left alone unless --force.")
    p.add_argument("data", type=Path, help="Cityscapes-layout data folder")
    p.add_argument("--size", required=True, metavar="WxH", help="training size WIDTHxHEIGHT, e.g. 512x256")
    p.add_argument("--split", action="append", choices=["train", "val", "test"],
                   help="split to prepare; repeat for several (default: every split present)")
    p.add_argument("--cache-dir", type=Path, help="where to write it (default DATA/cycleseg_cache; then set "
                                                  "data.cache_dir to the same folder)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--format", default="auto", choices=["auto", "cityscapes", "folder"],
                   help="data layout (default auto: folder if DATA holds classes.yaml, else cityscapes)")

    p = sub.add_parser(
        parents=[quiet], name="segment", help="segment your own photos (files or folders, any size) with a trained run",
        description="Segment every image given (files, or folders searched recursively) at its own size and write "
                    "OUT/labels/<name>.png (the dataset's label values), OUT/color/<name>.png (its class colours) and "
                    "OUT/overlay/<name>.jpg (the colours over the photo); a folder's images keep their paths. The "
                    "same from Python: cycleseg.load(RUN_DIR).segment(image).")
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--checkpoint", default="best", help="best (default: best.pt), last (last.pt) or a file in RUN_DIR")
    p.add_argument("--reconstruction", action="store_true", help="also write F's reconstruction x_rec (cycle models)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 where it is native, else fp32")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")

    p = sub.add_parser(
        parents=[quiet], name="predict", help="write a run's predictions at the original resolution (official format)",
        description="Segment every image of a split and write, per image, OUT/labelIds/<city>/<name>_labelIds.png "
                    "(labelIds at the image's own size: what the official evaluation and the benchmark server "
                    "take), OUT/color/<city>/<name>_color.png (official palette) and, with --reconstruction, "
                    "OUT/reconstruction/<city>/<name>_rec.png (x_rec at the training size).")
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("--data", type=Path, required=True, help="Cityscapes-layout data folder")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="split (default val)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--reconstruction", action="store_true", help="also write F's reconstruction x_rec (cycle models)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 where it is native (CPUs with AVX512-BF16 or AMX; GPUs: bf16, or fp16 "
                        "on older ones), else fp32")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint file in RUN_DIR: last.pt (default) or best.pt")

    p = sub.add_parser("table", parents=[quiet], help="print runs side by side like the paper's Table 2",
                       description="Read RUN_DIR/eval_<split>.json (or metrics.json) of each run and print "
                                   "noise, SNR, mIoU and PSNR in one table.")
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories")
    p.add_argument("--split", default="val", help="which eval_<split>.json to read (default val)")

    p = sub.add_parser(
        parents=[quiet], name="calibrate", help="measure the SNR that a run's noise produces on its logits",
        description="Run G of RUN_DIR over a split, apply the run's noise injection (or the one given with "
                    "KEY=VALUE, e.g. kind=quantize bits=1) and report the mean per-image SNR (eq. 11): the "
                    "paper's 'SNR of a quantizer'. With the run's own noise, writes RUN_DIR/calibrate_<split>.json, "
                    "which a Gaussian config reads through `noise.snr_db: from RUN_DIR`.")
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("noise", nargs="*", metavar="KEY=VALUE", help="another noise to measure, e.g. kind=quantize bits=1")
    p.add_argument("--data", type=Path, required=True, help="Cityscapes-layout data folder")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split to measure (default val)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")

    p = sub.add_parser(
        parents=[quiet], name="sweep", help="train and evaluate a folder of configs (the paper's Table 2) into one sweep folder",
        description="Train every config (e.g. configs/paper/, one YAML per row of Table 2) into SWEEP_DIR/NAME/ "
                    "(with --seeds N: into SWEEP_DIR/NAME/seed<k>/ with train.seed=k, k = 0..N-1) and evaluate it "
                    "on val. Started again, a sweep skips the finished runs, continues an interrupted one exactly "
                    "and starts the rest. KEY=VALUE overrides apply to every config. Runs go one after another in "
                    "this process, or with --launcher local --jobs N, N at once in subprocesses (console output "
                    "in SWEEP_DIR/logs/). `cycleseg sweep status SWEEP_DIR` (the same as `cycleseg sweep-status "
                    "SWEEP_DIR`) shows where every run stands; a config folder named status: write ./status.")
    p.add_argument("configs", type=Path, nargs="+", help="config folders or YAML files")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every config, e.g. optim.epochs=4")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (one run directory per config)")
    p.add_argument("--data", type=Path, help="Cityscapes-layout data folder (overrides data.root)")
    p.add_argument("--only", help="comma-separated config names to run, e.g. plain,nonoise,quant2")
    p.add_argument("--report", action="store_true", help="build the report when the sweep is done")
    p.add_argument("--retrain", action="store_true",
                   help="train anew the runs in SWEEP_DIR that were made with other settings (default: refuse)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train each config N times, train.seed=0..N-1, into SWEEP_DIR/NAME/seed<k>/ (a Gaussian "
                        "config's `snr_db: from NAME` then takes seed k's run of NAME); table and report give the "
                        "mean and 95%% interval over the seeds")
    p.add_argument("--launcher", choices=["inprocess", "local", "slurm"], default=None,
                   help="inprocess (default): one run after another in this process; local: each run in its own "
                        "subprocess, --jobs at once (implied by --jobs > 1 or --gpus); slurm: one Slurm job array "
                        "through submitit, one task per run, requeued on preemption (docs/guide/slurm-multi-gpu.md)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="with --launcher local: runs at once (default 1, or the number of --gpus), each with CPU "
                        "cores // N torch threads; the rest wait in the queue")
    p.add_argument("--gpus", metavar="0,1,...",
                   help="with --launcher local: GPU ids, each run gets one as CUDA_VISIBLE_DEVICES (round robin)")
    p.add_argument("--threads", type=int, metavar="T",
                   help="with --launcher local: torch threads per run (default: CPU cores // --jobs)")
    p.add_argument("--partition", help="with --launcher slurm: the Slurm partition (default: the cluster's)")
    p.add_argument("--gpus-per-run", type=int, default=0, metavar="N",
                   help="with --launcher slurm: GPUs per run (default 0; > 1: torchrun, one process per GPU)")
    p.add_argument("--cpus-per-run", type=int, default=1, metavar="N",
                   help="with --launcher slurm: CPUs per run, also its torch threads (default 1)")
    p.add_argument("--time", default="60", metavar="T",
                   help="with --launcher slurm: time limit per job, minutes or [D-]H:M:S (default 60); a run that "
                        "reaches it saves last.pt and is requeued")
    p.add_argument("--max-parallel", type=int, default=4, metavar="K",
                   help="with --launcher slurm: runs of the array at a time (default 4)")

    p = sub.add_parser(
        parents=[quiet], name="sweep-status", help="where each run of a sweep stands (also: cycleseg sweep status DIR)",
        description="One line per run of SWEEP_DIR (sweep.json's runs and the run folders on disk): pending, "
                    "running (last step and loss of log.jsonl, pid), interrupted (a rerun of the sweep continues "
                    "it), finished (mIoU) or failed (the error from run.json or the run's log, and the log's "
                    "path); and whether a sweep process is still running into the folder. Reads only.")
    p.add_argument("sweep_dir", type=Path, help="the --out folder of `cycleseg sweep`")
    p.add_argument("--json", action="store_true", help="print the states as JSON")

    p = sub.add_parser(
        parents=[quiet], name="report", help="write report.md and report.html for a sweep: Table 2, Figures 3 and 4, curves",
        description="Read every run of SWEEP_DIR and write SWEEP_DIR/report.md and a self-contained "
                    "SWEEP_DIR/report.html: Table 2 beside the paper's values, the class-wise IoU chart (Fig. 4), "
                    "validation examples (Fig. 3), training curves, diagnostics where present, and the config "
                    "and software versions of every run.")
    p.add_argument("sweep_dir", type=Path, help="the --out folder of `cycleseg sweep` (or any folder of runs)")
    p.add_argument("--data", type=Path, help="data folder for Figure 3 (default: the runs' data.root)")
    p.add_argument("--runs", help="comma-separated runs for Figures 3 and 4 (default: plain, no noise, 2-bit, "
                                  "best Gaussian)")
    p.add_argument("--examples", type=int, default=3, help="validation images in Figure 3 (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")

    p = sub.add_parser(
        parents=[quiet], name="diagnose", help="measure and show the watermarks a cycle model hides in its class scores",
        description="Steganography diagnostics of a cycle run on a split, seeded so that results repeat:\n"
                    "  1. watermark gap: PSNR of F(noise(G(x))) minus PSNR of F fed only the decision argmax G(x)\n"
                    "     (its one-hot, scaled to the per-pixel norm of F's usual input), beside F fed each\n"
                    "     pixel's class-mean vector and F fed the ground-truth one-hot;\n"
                    "  2. sensitivity: PSNR and mIoU as extra Gaussian noise at each SNR is added to G's logits;\n"
                    "  3. energy: share of the logits' energy outside the decision one-hot, per class, and its\n"
                    "     power spectrum beside the image's;\n"
                    "  4. pictures: the residuals amplified to full range, and F's outputs.\n"
                    "Writes RUN_DIR/diagnose_<split>.json, RUN_DIR/diagnose_<split>.md and figures in\n"
                    "RUN_DIR/diagnose_<split>/.")
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train` (a cycle model)")
    p.add_argument("--data", type=Path, required=True, help="Cityscapes-layout data folder")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split to diagnose (default val)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint file in RUN_DIR: last.pt (default) or best.pt")
    p.add_argument("--max-images", type=int, metavar="N", help="use only the first N images of the split")
    p.add_argument("--examples", type=int, default=4, metavar="K",
                   help="images shown in diagnose_<split>/examples.png (default 4)")
    p.add_argument("--snrs", default="40,30,20,10,5,0,-5,-10", metavar="DB,DB,...",
                   help="SNRs in dB of the extra Gaussian noise (default 40,30,20,10,5,0,-5,-10)")
    p.add_argument("--scale-to", default="f_input", choices=["f_input", "logits", "unit"],
                   help="per-pixel norm the one-hot inputs are scaled to: f_input = F's usual input noise(G(x)) "
                        "(default), logits = G's logits before the noise, unit = plain one-hots")
    p.add_argument("--along-training", action="store_true",
                   help="follow the watermark over the checkpoints the run kept (train.keep_checkpoints: "
                        "epoch_NNNN.pt, and last.pt): gaps, PSNR under extra noise at 30/20/10 dB (or --snrs) and "
                        "the unexplained share as curves, in RUN_DIR/diagnose_<split>_training.{json,png}")

    p = sub.add_parser(
        "reward", parents=[quiet], help="measure what hiding detail could win on a dataset (the oracles)",
        description="Before any training: the PSNR of each image painted from its label map with each class's mean "
                    "colour over the split (labels only) and with each class's mean colour in that image (labels and "
                    "colours). Their difference, the reward, is what a watermark could win at most against an F "
                    "that reads only the labels (docs/mechanism.md); under about 3 dB there is little worth hiding. "
                    "Also the PSNR of a constant grey image and of the split's mean colour, for reference.")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (Cityscapes layout or a folder dataset)")
    p.add_argument("--size", default="512x256", help="WIDTHxHEIGHT the images are resized to (default 512x256)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="split (default val)")
    p.add_argument("--max-images", type=int, metavar="N", help="use only the first N images of the split")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")

    p = sub.add_parser(
        parents=[quiet], name="export", help="export G of a run to ONNX, checked with ONNX Runtime",
        description="Write the segmentation network G of RUN_DIR as an ONNX file (image (B,3,H,W) in [-1,1] -> "
                    "logits (B,S,H,W); batch, height and width dynamic) and compare ONNX Runtime's logits with "
                    "PyTorch's on random images.")
    p.add_argument("run_dir", type=Path, help="the --out folder of `cycleseg train`")
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint file in RUN_DIR (default last.pt)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")

    p = sub.add_parser(
        parents=[quiet], name="upgrade", help="rewrite checkpoints of cycleseg 0.1.0 in the safe format",
        description="Checkpoints are read without unpickling anything but tensors and plain data, so a shared run "
                    "never runs code. A last.pt of cycleseg 0.1.0 keeps NumPy's RNG state as a pickled array, which "
                    "that safe load refuses: with --trust-checkpoint this command reads such files (NumPy's array "
                    "and nothing else beyond the safe set: a planted object is refused even then) and rewrites "
                    "them in the safe format, atomically, with the same contents (a resume stays bit-identical). "
                    "A folder: every *.pt below it. Exit code 0: every file is in the safe format; 1: some were "
                    "not rewritten (each named on stderr).")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH|RUN_DIR",
                   help="checkpoint files, run folders or sweep folders")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="read 0.1.0 checkpoints (pickled NumPy arrays): only for files from a source you trust")
    for name, subparser in sub.choices.items():
        _with_examples(subparser, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["sweep", "status"]:  # `cycleseg sweep status DIR` is `cycleseg sweep-status DIR`
        argv = ["sweep-status", *argv[2:]]
    # parse_known_args lets KEY=VALUE overrides of `train` come before or after its options.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("train", "sweep", "calibrate") and all("=" in e and not e.startswith("-")
                                                                        for e in extra):
        if args.command == "calibrate":  # `calibrate RUN --data D kind=quantize bits=1`: the noise after options
            args.noise += extra
        else:
            args.overrides += extra
    elif extra:  # point at the subcommand's own help, where its options are listed
        words = " ".join(" ".join(extra).splitlines())
        parser.exit(2, f"cycleseg {args.command}: error: unrecognized arguments: {words} "
                       f"(see cycleseg {args.command} --help)\n")
    try:
        if getattr(args, "device", None) is not None:  # an unknown --device fails before any run is read
            from cycleseg.core.models import resolve_device

            resolve_device(args.device)
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
    except BrokenPipeError:  # `cycleseg ... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from cycleseg.data.synthetic import make_synthetic

    width, height = _parse_size(args.size)
    if args.train < 1:
        raise ConfigError(f"--train {args.train}: must be at least 1 (the number of training images)")
    if args.val < 0:
        raise ConfigError(f"--val {args.val}: must be at least 0 (the number of validation images)")
    if not (math.isfinite(args.colour_spread) and args.colour_spread >= 0):
        raise ConfigError(f"--colour-spread {args.colour_spread}: must be a finite number >= 0 (1 = the default city)")
    summary = make_synthetic(args.out, num_train=args.train, num_val=args.val, size=(height, width), seed=args.seed,
                             progress=_progress(args), fmt=args.format, colour_spread=args.colour_spread,
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
                              "one from its own last.pt: drop one of them")
        overrides = ([str(args.config)] if args.config is not None else []) + list(args.overrides) + _quiet(args)
        if args.data:
            overrides.append(f"data.root={args.data}")
        out = args.resume
        cfg, run_config = runs.resume_config(args.resume, overrides)
        if runs.finished(out) and not any(o.startswith("train.max_iters=") for o in overrides):
            metrics = runs.read_json(out / runs.METRICS)  # nothing to train: touch nothing
            print(f"{out}: the run is already finished ({metrics['iterations']} iterations); nothing to do")
            return _print_result(cfg.name, metrics, out)
    else:
        if args.config is None:
            raise ConfigError("train needs CONFIG and --out RUN_DIR (or --resume RUN_DIR)")
        overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else []) + _quiet(args)
        cfg, out = load_config(args.config, overrides), args.out
        if out is None and not args.dry_run:
            raise ConfigError("train needs --out RUN_DIR, the folder to create the run in")
        if out is not None:
            from cycleseg.commands.calibrate import resolve_snr_from

            cfg = resolve_snr_from(cfg, base_dir=out.parent)  # noise.snr_db: from RUN_DIR -> its measured SNR
    if args.dry_run:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from cycleseg.core.distributed import is_main
    from cycleseg.commands.train import train

    metrics = train(cfg, out, resume=args.resume is not None, overwrite=args.overwrite, run_config=run_config,
                    init_from=args.init_from)
    if not is_main():  # under torchrun, rank 0 speaks for all
        return 0
    return _print_result(cfg.name, metrics, out)


def _print_result(name: str, metrics: dict, out: Path) -> int:
    print(f"{name}: mIoU {fmt(metrics.get('miou'), 1)} %, PSNR {fmt(metrics.get('psnr_db'), 2)} dB, "
          f"SNR {fmt(metrics.get('snr_db'), 2)} dB after {metrics['iterations']} iterations "
          f"({metrics['train_seconds']} s of training); run in {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cycleseg.commands.evaluate import evaluate_run, format_results

    results = evaluate_run(args.run_dir, args.data, args.split, device=args.device, checkpoint=args.checkpoint,
                           full_res=args.full_res, official=args.official, predictions=args.predictions,
                           precision=args.precision, progress=_progress(args))
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    print(_results_table(args.run_dirs, args.split))
    return 0


def _results_table(paths: list[Path], split: str) -> str:
    """The text of `cycleseg table` (report.tables.results_table: a row per run directory; with seeds, mean and
    95 % interval over them and paired differences to no noise)."""
    from cycleseg.report.tables import results_table

    return results_table(paths, split)


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
                        progress=_progress(args), fmt=args.format)
    print(format_report(report))
    for problem in report.problems:
        print(_one_line(problem), file=sys.stderr)
    return 0 if report.ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    from cycleseg.data.cache import cache_folder, prepare

    width, height = _parse_size(args.size)
    splits = tuple(dict.fromkeys(args.split)) if args.split else None
    done = prepare(args.data, (height, width), splits, args.cache_dir, force=args.force, progress=_progress(args),
                   fmt=args.format)
    for split, status in done.items():
        print(f"{split}: {status}")
    print(f"cache: {cache_folder(args.data, (height, width), args.cache_dir)}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from cycleseg.commands.segment import load, segment_files

    segmenter = load(args.run_dir, args.checkpoint, args.device, args.precision)
    summary = segment_files(segmenter, args.images, args.out, progress=_progress(args),
                            reconstruction=args.reconstruction)
    print(f"wrote {', '.join(summary['outputs'])} of {summary['num_images']} images to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cycleseg.commands.predict import predict_run

    summary = predict_run(args.run_dir, args.data, args.split, args.out, checkpoint=args.checkpoint,
                          device=args.device, reconstruction=args.reconstruction, progress=_progress(args),
                          precision=args.precision)
    print(f"wrote {', '.join(summary['outputs'])} of {summary['num_images']} {args.split} images to {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from cycleseg.commands.calibrate import calibrate_run, calibration_path

    r = calibrate_run(args.run_dir, args.data, args.split, device=args.device, noise_overrides=args.noise,
                      progress=_progress(args))
    noise = ", ".join(f"{k}={v}" for k, v in r["noise"].items() if v is not None)
    print(f"{r['run']}: {noise}: SNR {r['snr_db']:.2f} dB (mean of {r['num_images']} {args.split} images; "
          f"std {r['snr_db_std']:.2f}, range {r['snr_db_min']:.2f} .. {r['snr_db_max']:.2f})")
    if not args.noise:
        print(f"written to {calibration_path(args.run_dir, args.split)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cycleseg.experiments.sweep import run_sweep

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    # argparse hands KEY=VALUE words that come before the options to the CONFIGS list
    args.overrides = [str(c) for c in args.configs if "=" in str(c)] + list(args.overrides) + _quiet(args)
    args.configs = [c for c in args.configs if "=" not in str(c)]
    if not args.configs:
        raise ConfigError("sweep needs at least one config folder or YAML file, e.g. configs/paper")
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    jobs = args.jobs if args.jobs is not None else len(gpus) if gpus else 1
    launcher = args.launcher or ("local" if jobs > 1 or gpus or args.threads else "inprocess")
    if launcher == "slurm":
        return _submit_to_slurm(args, only)
    try:
        summary = run_sweep(args.configs, args.out, args.overrides, data_root=str(args.data) if args.data else None,
                            only=only, retrain=args.retrain, seeds=args.seeds, launcher=launcher, jobs=jobs,
                            gpus=gpus, threads=args.threads)
    except Interrupted as e:
        raise Interrupted(f"{str(e).split('; continue with')[0]}; continue the sweep with the same command",
                          e.signum) from None
    print(f"sweep done: {len(summary)} runs in {args.out}")
    print(_results_table([Path(s["run_dir"]) for s in summary], "val"))
    if args.report:
        return cmd_report(argparse.Namespace(sweep_dir=args.out, data=args.data, runs=None, examples=3, quiet=args.quiet,
                                             device="auto"))
    return 0


def _submit_to_slurm(args: argparse.Namespace, only: list[str] | None) -> int:
    """`sweep --launcher slurm`: one job array of the runs not finished nor queued yet; returns at once."""
    from cycleseg.experiments.slurm import submit_sweep, sweep_tasks
    from cycleseg.experiments.sweep import check_request, find_configs

    entries = find_configs(args.configs, only)
    check_request(entries, args.overrides + ([f"data.root={args.data.absolute()}"] if args.data else []), args.seeds)
    tasks = sweep_tasks(entries, args.out, args.overrides,
                        data_root=args.data, seeds=range(args.seeds) if args.seeds else None, retrain=args.retrain)
    done = submit_sweep(tasks, args.out, partition=args.partition, gpus_per_run=args.gpus_per_run,
                        cpus_per_run=args.cpus_per_run, time=args.time, max_parallel=args.max_parallel)
    submitted = sum(s.state == "submitted" for s in done)
    print(f"{submitted} of {len(tasks)} runs submitted to Slurm (the rest finished, already queued or in use "
          f"elsewhere); follow them with `cycleseg sweep status {args.out}`, logs in {args.out}/slurm/")
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from cycleseg.experiments.sweep import format_status, sweep_status

    states = sweep_status(args.sweep_dir)
    if (args.sweep_dir / "slurm" / "jobs.json").is_file():  # a sweep submitted with --launcher slurm
        from cycleseg.experiments.slurm import sweep_jobs

        jobs = {j["name"]: j for j in sweep_jobs(args.sweep_dir)}
        for state in states:
            if state.name in jobs:
                job = jobs[state.name]
                state.job = f"{job['job_id']} {job['slurm_state']}"
                if state.state == "pending" and job["slurm_state"] == "RUNNING":
                    state.state = "running"  # started, no checkpoint yet
    if args.json:
        print(json.dumps([{**{k: v for k, v in vars(s).items() if k != "run_dir"}, "run_dir": str(s.run_dir),
                           "detail": s.detail} for s in states], indent=2))
    else:
        print(format_status(args.sweep_dir, states))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cycleseg.report import build_report

    if args.examples < 1:
        raise ConfigError(f"--examples {args.examples}: must be >= 1")
    if args.data is not None and not _val_folder(args.data).is_dir():
        what = "folder not found" if not args.data.is_dir() else f"no validation images in {_val_folder(args.data)}"
        raise DataError(f"{args.data}: {what}; pass the data folder for Figure 3 with --data, "
                        "or leave --data out to use the runs' data.root")
    runs = [n.strip() for n in args.runs.split(",") if n.strip()] if args.runs else None
    md, page = build_report(args.sweep_dir, args.data, runs, args.examples, args.device, progress=_progress(args))
    print(f"report written: {md} and {page}")
    return 0


def _val_folder(root: Path) -> Path:
    """Where the validation images of the dataset at `root` are (Cityscapes or folder layout)."""
    from cycleseg.data.source import data_format

    return root / ("images" if data_format(root) == "folder" else "leftImg8bit") / "val"


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
        curve = diagnose_training(args.run_dir, args.data, args.split, device=args.device, max_images=args.max_images,
                                  snrs=chosen, progress=_progress(args))
        for point in curve["points"]:
            print(f"step {point['step']:>7}: watermark gap {fmt(point['watermark_gap_db'], 2)} dB, gap to class "
                  f"means {fmt(point['class_mean_gap_db'], 2)} dB (split's: {fmt(point.get('split_mean_gap_db'), 2)} "
                  f"dB), mIoU {fmt(point['miou'], 1)} %")
        print(f"wrote {args.run_dir / ('diagnose_' + args.split + '_training.json')} and the .png beside it")
        return 0
    results = diagnose_run(args.run_dir, args.data, args.split, device=args.device, checkpoint=args.checkpoint,
                           max_images=args.max_images, snrs=snrs, scale_to=args.scale_to, num_examples=args.examples,
                           progress=_progress(args))
    print(format_summary(results, args.run_dir))
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from cycleseg.commands.diagnose import data_reward

    width, height = _parse_size(args.size)
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
            print(f"cycleseg upgrade: {_one_line(e)}", file=sys.stderr)
            continue
        print(f"{path}: {'rewritten in the safe format' if rewritten else 'already in the safe format'}")
    if failed:
        print(f"cycleseg upgrade: {failed} of {len(files)} checkpoints not rewritten (see above)", file=sys.stderr)
    return 1 if failed else 0


COMMANDS = {"make-synthetic": cmd_make_synthetic, "train": cmd_train, "evaluate": cmd_evaluate,
            "table": cmd_table, "calibrate": cmd_calibrate, "sweep": cmd_sweep, "sweep-status": cmd_sweep_status,
            "report": cmd_report,
            "diagnose": cmd_diagnose, "check-data": cmd_check_data, "prepare": cmd_prepare, "predict": cmd_predict,
            "segment": cmd_segment, "reward": cmd_reward,
            "export": cmd_export, "upgrade": cmd_upgrade}


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RunError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 256x128") from None
    if width < 32 or height < 32 or width % 8 or height % 8:
        raise RunError(f"--size {text!r}: width and height must be multiples of 8, at least 32")
    return width, height


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal, unless --quiet."""
    return sys.stderr.isatty() and not getattr(args, "quiet", False)


def _quiet(args: argparse.Namespace) -> list[str]:
    """The override that turns the training progress bar off with --quiet or when stderr is not a terminal."""
    return [] if _progress(args) else ["train.progress=false"]


def _one_line(error: BaseException | str) -> str:
    """Messages quote user input (file names, keys); never let it break the one-line rule. An error re-raised
    from a DataLoader worker carries the worker's traceback: only its original message is kept."""
    return user_message(error) if isinstance(error, BaseException) else " ".join(str(error).splitlines())


if __name__ == "__main__":
    sys.exit(main())

"""The subcommands of `cycleseg`, one function each: its description and the options only it has. The options
several subcommands share come from `cli.options` (one definition each), listed as parents."""

from __future__ import annotations

import argparse
from pathlib import Path

from cycleseg.cli import options
from cycleseg.runs import BEST, LAST

__all__ = ["SUBCOMMANDS"]

Subparsers = argparse._SubParsersAction  # what add_subparsers returns; each function below adds one subcommand


def _add(sub: Subparsers, name: str, help: str, description: str, *parents: argparse.ArgumentParser,
         epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with --quiet and the shared options of `parents` (their options first in its --help)."""
    return sub.add_parser(name, parents=[options.quiet(), *parents], help=help, description=description,
                          epilog=epilog)


def make_synthetic(sub: Subparsers) -> None:
    p = _add(sub, "make-synthetic", "generate the synthetic 'toy city' dataset in the Cityscapes layout",
             "Write procedural street scenes with real Cityscapes labelIds into OUT, in the Cityscapes folder layout "
             "(leftImg8bit/, gtFine/), train and val splits.")
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


def train(sub: Subparsers) -> None:
    from cycleseg.core.noise import NOISE_KINDS

    p = _add(sub, "train", "train a model from a YAML config",
             "Train the cycle model of the paper (Table 1) or the plain ERFNet. Settings come from the YAML CONFIG "
             "(see configs/), then from KEY=VALUE overrides such as noise.kind=quantize noise.bits=2 "
             f"optim.epochs=10. Writes config.yaml, log.jsonl, TensorBoard events, {LAST} (checkpoint), {BEST} "
             "(weights at the best validation mIoU) and metrics.json (final validation) into --out. Ctrl-C or "
             "SIGTERM saves a checkpoint; --resume continues exactly.",
             options.data(required=False, role="overrides the config's data.root"),
             epilog=f"noise kinds: {', '.join(NOISE_KINDS)}")
    p.add_argument("config", type=Path, nargs="?", help="YAML config file, e.g. configs/cyclegan.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. noise.bits=2")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help=f"continue the interrupted run in RUN_DIR from its {LAST}, with its own config")
    p.add_argument("--init-from", type=Path, metavar="CKPT",
                   help="start the new run from the weights of another run (a checkpoint file, or a run folder: its "
                        f"{BEST}, else {LAST}): G, F and D_X as both models have them; not its optimizer, "
                        "schedule or progress. A plain run's G can start a cycle model's G")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--name", help="the run's name in tables, reports and log lines (default: the config's name, "
                                  "followed by the model.*, noise.* and loss.* overrides)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def evaluate(sub: Subparsers) -> None:
    from cycleseg.core.metrics import METRICS

    p = _add(sub, "evaluate", "evaluate a trained run on a split",
             "Compute class IoU and mIoU and, for cycle models, the PSNR of the forward-cycle reconstruction and the "
             "measured SNR of the noise injection. Prints a table and writes RUN_DIR/eval_<split>.json.",
             options.run_dir(), options.run_data(), options.split("split to evaluate"), options.device(),
             options.precision(), options.checkpoint(),
             epilog="metrics:\n" + "\n".join(f"  {k:<8} {v}" for k, v in METRICS.items()))
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


def check_data(sub: Subparsers) -> None:
    p = _add(sub, "check-data", "check a Cityscapes folder before a long run",
             "Check the layout (splits, cities), that every image has its label and vice versa, that every PNG is "
             "readable with the expected size and mode and (unless --fast) that every label value is a Cityscapes "
             "labelId; and that caches written by `cycleseg prepare` are up to date. Prints a summary (images per "
             "split, class pixel frequencies) and one line per problem on stderr. Exit code 0: no problem; "
             "1: problems found; 2: could not check.",
             options.split("split to check", options.SPLITS, repeat="train, val and test when present"),
             options.data_format())
    p.add_argument("data", type=Path, help="Cityscapes-layout data folder (holding leftImg8bit/ and gtFine/)")
    p.add_argument("--fast", action="store_true",
                   help="names and PNG headers only (what `train` checks by default), no decoding")
    p.add_argument("--expect-size", metavar="WxH", help="size every image must have, e.g. 2048x1024 (default: the "
                                                        "most common size)")
    p.add_argument("--cache-dir", type=Path, help="cache folder of `cycleseg prepare` (default DATA/cycleseg_cache)")


def prepare(sub: Subparsers) -> None:
    p = _add(sub, "prepare", "decode and resize a Cityscapes folder once into a fast cache",
             "Decode every image and label of the splits, resize them to --size (bilinear / nearest, as training "
             "does) and store them as memory-mapped uint8 .npy arrays with a manifest of the source files (sizes, "
             "hashes). Training and evaluation at that size then read the cache instead of the PNGs "
             "(data.cache=auto), rebuild it when the data changed, or refuse (data.cache=require). An up-to-date "
             "cache is left alone unless --force.",
             options.split("split to prepare", options.SPLITS, repeat="every split present"),
             options.data_format())
    p.add_argument("data", type=Path, help="Cityscapes-layout data folder")
    p.add_argument("--size", required=True, metavar="WxH", help="training size WIDTHxHEIGHT, e.g. 512x256")
    p.add_argument("--cache-dir", type=Path, help="where to write it (default DATA/cycleseg_cache; then set "
                                                  "data.cache_dir to the same folder)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")


def segment(sub: Subparsers) -> None:
    p = _add(sub, "segment", "segment your own photos (files or folders, any size) with a trained run",
             "Segment every image given (files, or folders searched recursively) at its own size and write "
             "OUT/labels/<name>.png (the dataset's label values), OUT/color/<name>.png (its class colours) and "
             "OUT/overlay/<name>.jpg (the colours over the photo); a folder's images keep their paths. The same "
             "from Python: cycleseg.load(RUN_DIR).segment(image).",
             options.run_dir(), options.device(), options.precision(), options.checkpoint())
    p.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--reconstruction", action="store_true", help="also write F's reconstruction x_rec (cycle models)")


def predict(sub: Subparsers) -> None:
    p = _add(sub, "predict", "write a run's predictions at the original resolution (official format)",
             "Segment every image of a split and write, per image, OUT/labelIds/<city>/<name>_labelIds.png "
             "(labelIds at the image's own size: what the official evaluation and the benchmark server take), "
             "OUT/color/<city>/<name>_color.png (official palette) and, with --reconstruction, "
             "OUT/reconstruction/<city>/<name>_rec.png (x_rec at the training size).",
             options.run_dir(), options.run_data(), options.split("split to predict", options.SPLITS), options.device(),
             options.precision(), options.checkpoint())
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--reconstruction", action="store_true", help="also write F's reconstruction x_rec (cycle models)")


def table(sub: Subparsers) -> None:
    p = _add(sub, "table", "print runs side by side like the paper's Table 2",
             "Read RUN_DIR/eval_<split>.json (or metrics.json) of each run and print noise, SNR, mIoU and PSNR in "
             "one table.", options.split("which eval_<split>.json to read", choices=None))
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories")


def calibrate(sub: Subparsers) -> None:
    p = _add(sub, "calibrate", "measure the SNR that a run's noise produces on its logits",
             "Run G of RUN_DIR over a split, apply the run's noise injection (or the one given with KEY=VALUE, e.g. "
             "kind=quantize bits=1) and report the mean per-image SNR (eq. 11): the paper's 'SNR of a quantizer'. "
             "With the run's own noise, writes RUN_DIR/calibrate_<split>.json, which a Gaussian config reads "
             "through `noise.snr_db: from RUN_DIR`.",
             options.run_dir(), options.run_data(), options.split("split to measure"), options.device())
    p.add_argument("noise", nargs="*", metavar="KEY=VALUE", help="another noise to measure, e.g. kind=quantize bits=1")
    p.add_argument("--quantizers", action="store_true",
                   help="instead: the SNR of 1 to 4-bit quantization on the run's logits as eq. 9 reads and with "
                        "each image scaled to RMS --scale-rms first (noise.scale rms), beside the paper's column; "
                        "writes RUN_DIR/calibrate_<split>_quantizers.json")
    p.add_argument("--scale-rms", type=float, default=None, metavar="R",
                   help="with --quantizers: the RMS of the scaled quantizer's input (default 0.44, noise.scale_rms)")


def diagnose(sub: Subparsers) -> None:
    p = _add(sub, "diagnose", "measure and show the watermarks a cycle model hides in its class scores",
             "Steganography diagnostics of a cycle run on a split, seeded so that results repeat:\n"
             "  1. watermark gap: PSNR of F(noise(G(x))) minus PSNR of F fed only the decision argmax G(x)\n"
             "     (its one-hot, scaled to the per-pixel norm of F's usual input), beside F fed each\n"
             "     pixel's class-mean vector and F fed the ground-truth one-hot;\n"
             "  2. sensitivity: PSNR and mIoU as extra Gaussian noise at each SNR is added to G's logits;\n"
             "  3. energy: share of the logits' energy outside the decision one-hot, per class, and its\n"
             "     power spectrum beside the image's;\n"
             "  4. pictures: the residuals amplified to full range, and F's outputs.\n"
             "Writes RUN_DIR/diagnose_<split>.json, RUN_DIR/diagnose_<split>.md and figures in\n"
             "RUN_DIR/diagnose_<split>/.",
             options.run_dir("(a cycle model)"), options.run_data(), options.split("split to diagnose"),
             options.device(), options.checkpoint(), options.max_images())
    p.add_argument("--examples", type=int, default=4, metavar="K",
                   help="images shown in diagnose_<split>/examples.png (default 4)")
    p.add_argument("--snrs", default="40,30,20,10,5,0,-5,-10", metavar="DB,DB,...",
                   help="SNRs in dB of the extra Gaussian noise (default 40,30,20,10,5,0,-5,-10)")
    p.add_argument("--scale-to", default="f_input", choices=["f_input", "logits", "unit"],
                   help="per-pixel norm the one-hot inputs are scaled to: f_input = F's usual input noise(G(x)) "
                        "(default), logits = G's logits before the noise, unit = plain one-hots")
    p.add_argument("--along-training", action="store_true",
                   help="follow the watermark over the checkpoints the run kept (train.keep_checkpoints: "
                        f"epoch_NNNN.pt, and {LAST}; --checkpoint is not used): gaps, PSNR under extra noise at "
                        "30/20/10 dB (or --snrs) and the unexplained share as curves, in "
                        "RUN_DIR/diagnose_<split>_training.{json,png}")


def reward(sub: Subparsers) -> None:
    p = _add(sub, "reward", "measure what hiding detail could win on a dataset (the oracles)",
             "Before any training: the PSNR of each image painted from its label map with each class's mean colour "
             "over the split (labels only) and with each class's mean colour in that image (labels and colours). "
             "Their difference, the reward, is what a watermark could win at most against an F that reads only the "
             "labels (docs/mechanism.md); under about 3 dB there is little worth hiding. Also the PSNR of a "
             "constant grey image and of the split's mean colour, for reference.",
             options.data(), options.split("split to measure"), options.max_images())
    p.add_argument("--size", default="512x256", help="WIDTHxHEIGHT the images are resized to (default 512x256)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def export(sub: Subparsers) -> None:
    p = _add(sub, "export", "export G of a run to ONNX, checked with ONNX Runtime",
             "Write the segmentation network G of RUN_DIR as an ONNX file (image (B,3,H,W) in [-1,1] -> logits "
             "(B,S,H,W); batch, height and width dynamic) and compare ONNX Runtime's logits with PyTorch's on "
             "random images.", options.run_dir(), options.checkpoint())
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")


def upgrade(sub: Subparsers) -> None:
    p = _add(sub, "upgrade", "rewrite checkpoints of cycleseg 0.1.0 in the safe format",
             "Checkpoints are read without unpickling anything but tensors and plain data, so a shared run never "
             f"runs code. A {LAST} of cycleseg 0.1.0 keeps NumPy's RNG state as a pickled array, which that safe "
             "load refuses: with --trust-checkpoint this command reads such files (NumPy's array and nothing else "
             "beyond the safe set: a planted object is refused even then) and rewrites them in the safe format, "
             "atomically, with the same contents (a resume stays bit-identical). A folder: every *.pt below it. "
             "Exit code 0: every file is in the safe format; 1: some were not rewritten (each named on stderr).")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH|RUN_DIR",
                   help="checkpoint files, run folders or sweep folders")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="read 0.1.0 checkpoints (pickled NumPy arrays): only for files from a source you trust")


def sweep(sub: Subparsers) -> None:
    p = _add(sub, "sweep", "train and evaluate a folder of configs (the paper's Table 2) into one sweep folder",
             "Train every config (e.g. configs/paper/, one YAML per row of Table 2) into SWEEP_DIR/NAME/ (with "
             "--seeds N: into SWEEP_DIR/NAME/seed<k>/ with train.seed=k, k = 0..N-1) and evaluate it on val. Started "
             "again, a sweep skips the finished runs, continues an interrupted one exactly and starts the rest. "
             "KEY=VALUE overrides apply to every config. Runs go one after another in this process, or with "
             "--launcher local --jobs N, N at once in subprocesses (console output in SWEEP_DIR/logs/). `cycleseg "
             "sweep status SWEEP_DIR` (the same as `cycleseg sweep-status SWEEP_DIR`) shows where every run "
             "stands; a config folder named status: write ./status.",
             options.data(required=False, role="overrides the configs' data.root"))
    p.add_argument("configs", type=Path, nargs="+", help="config folders or YAML files")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every config, e.g. optim.epochs=4")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (one run directory per config)")
    p.add_argument("--only", help="comma-separated config names to run, e.g. plain,nonoise,quant2")
    p.add_argument("--report", action="store_true", help="build the report when the sweep is done")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (every run, its folder and what it would do: train, continue, skip) after "
                        "the checks, and exit; nothing is written")
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
                        f"reaches it saves {LAST} and is requeued")
    p.add_argument("--max-parallel", type=int, default=4, metavar="K",
                   help="with --launcher slurm: runs of the array at a time (default 4)")


def sweep_status(sub: Subparsers) -> None:
    p = _add(sub, "sweep-status", "where each run of a sweep stands (also: cycleseg sweep status DIR)",
             "One line per run of SWEEP_DIR (sweep.json's runs and the run folders on disk): pending, running (last "
             "step and loss of log.jsonl, pid), interrupted (a rerun of the sweep continues it), finished (mIoU) or "
             "failed (the error from run.json or the run's log, and the log's path); and whether a sweep process is "
             "still running into the folder. Reads only.")
    p.add_argument("sweep_dir", type=Path, help="the --out folder of `cycleseg sweep`")
    p.add_argument("--json", action="store_true", help="print the states as JSON")


def report(sub: Subparsers) -> None:
    p = _add(sub, "report", "write report.md and report.html for a sweep: Table 2, Figures 3 and 4, curves",
             "Read every run of SWEEP_DIR and write SWEEP_DIR/report.md and a self-contained SWEEP_DIR/report.html: "
             "Table 2 beside the paper's values, the class-wise IoU chart (Fig. 4), validation examples (Fig. 3), "
             "training curves, diagnostics where present, and the config and software versions of every run.",
             options.data(required=False, role="for Figure 3 (default: the runs' data.root)"), options.device())
    p.add_argument("sweep_dir", type=Path, help="the --out folder of `cycleseg sweep` (or any folder of runs)")
    p.add_argument("--runs", help="comma-separated runs for Figures 3 and 4 (default: plain, no noise, 2-bit, "
                                  "best Gaussian)")
    p.add_argument("--examples", type=int, default=3, help="validation images in Figure 3 (default 3)")


# In the order of `cycleseg --help`.
SUBCOMMANDS = {"make-synthetic": make_synthetic, "train": train, "evaluate": evaluate, "check-data": check_data,
               "prepare": prepare, "segment": segment, "predict": predict, "table": table, "calibrate": calibrate,
               "sweep": sweep, "sweep-status": sweep_status, "report": report, "diagnose": diagnose,
               "reward": reward, "export": export, "upgrade": upgrade}

"""The examples every `--help` ends with: the top-level command's (EXAMPLES) and each subcommand's
(SUBCOMMAND_EXAMPLES; tests/test_docs.py checks that every subcommand has them and that they parse)."""

from __future__ import annotations

__all__ = ["EXAMPLES", "SUBCOMMAND_EXAMPLES"]

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


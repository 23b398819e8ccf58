"""The measured SNR of a noise injection (eq. 11), and Gaussian runs set from it.

The paper characterises a quantizer by "its SNR": the mean over the validation images of the per-image SNR
(eq. 11) between G's logits and the quantized logits. It then trains Gaussian runs at exactly those SNRs
(21.02, 14.50, 7.38 and -0.55 dB for 4, 3, 2 and 1 bit). `calibrate_run` measures that number for a trained
run (its own noise, or any other noise applied to its logits) and writes RUN_DIR/calibrate_<split>.json;
`resolve_snr_from` turns a config's `noise.snr_db: from RUN_DIR` into that measured value.

`calibrate_quantizers` sets the two readings of the quantizer side by side on one run's logits: the SNR of 1 to
4-bit quantization as eq. 9 reads (logits clipped to [-1, 1]) and with each image scaled to RMS r first
(noise.scale: rms), with the share of clipped values, beside the paper's column (RUN_DIR/calibrate_<split>_quantizers.json).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cycleseg.commands.session import open_session
from cycleseg.config import Config, NoiseConfig, apply_overrides, config_from_dict, snr_source
from cycleseg.core.metrics import snr_db
from cycleseg.core.models import noise_injection
from cycleseg.core.noise import DEFAULT_SCALE_RMS, PAPER_QUANTIZER_SNR_DB, NoiseInjection, clip_share
from cycleseg.errors import ConfigError, RunError
from cycleseg.runs import LAST, artifact, read_json, seeded_inference, write_json, writes_into_run

__all__ = ["calibrate_quantizers", "calibrate_run", "calibration_path", "measure_noise", "measure_snr",
           "quantizer_calibration_path", "resolve_snr_from"]

PAPER_MAX_ONLY_SNR_DB = 0.22  # Table 2's measured SNR of max-only


def quantizer_calibration_path(run_dir: str | Path, split: str = "val") -> Path:
    return artifact(run_dir, "calibrate_quantizers", split)


def calibration_path(run_dir: str | Path, split: str = "val") -> Path:
    return artifact(run_dir, "calibrate", split)


def measure_snr(G: torch.nn.Module, noise: NoiseInjection, batches: Iterable[tuple[Tensor, Tensor]],
                device: torch.device, seed: int = 0) -> Tensor:
    """Per-image SNR (eq. 11) of `noise` on G's logits over all `batches` of (image (B, 3, H, W), _).

    Returns a (N,) tensor in dB, one value per image; +inf for a noise that changes nothing.
    """
    return measure_noise(G, {"noise": noise}, batches, device, seed)["noise"]["snr_db"]


def measure_noise(G: torch.nn.Module, noises: dict[str, NoiseInjection], batches: Iterable[tuple[Tensor, Tensor]],
                  device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Per image, for each of `noises` on the same logits (G run once per batch): {"logit_rms": (N,), name:
    {"snr_db": (N,) dB, "clip_share": (N,) or None for a noise that is not a quantizer}}."""
    values: dict[str, dict[str, list[Tensor]]] = {name: {"snr_db": [], "clip_share": []} for name in noises}
    rms = []
    with seeded_inference(G, seed, device):  # Gaussian noise repeats, and the caller's RNG is left alone
        for image, _ in batches:
            logits = G(image.to(device))
            rms.append(logits.double().pow(2).flatten(1).mean(dim=1).sqrt().cpu())
            for name, noise in noises.items():
                values[name]["snr_db"].append(snr_db(logits, noise(logits)).cpu())
                clipped = clip_share(logits, noise)
                if clipped is not None:
                    values[name]["clip_share"].append(clipped.cpu())
    joined = {name: {k: torch.cat(v) if v else (torch.empty(0) if k == "snr_db" else None) for k, v in d.items()}
              for name, d in values.items()}
    return {"logit_rms": torch.cat(rms) if rms else torch.empty(0), **joined}


@writes_into_run(lambda a: not a["noise_overrides"])  # another noise is measured, not written
def calibrate_run(run_dir: str | Path, data_root: str | Path, split: str = "val", device: str = "auto",
                  noise_overrides: list[str] = (), checkpoint: str = LAST, progress: bool = False) -> dict[str, Any]:
    """Measure the mean per-image SNR of a run's noise (or of `noise_overrides`) on `split`, opened as every
    command opens it (`session.open_session`: the data's classes checked against the run's; the run's cache
    settings and data.max_*_images).

    Args:
        noise_overrides: `key=value` settings of the noise section (e.g. ["kind=quantize", "bits=1"]) to
            measure another noise on this run's logits; empty: the run's own noise.
    Writes RUN_DIR/calibrate_<split>.json when the run's own noise is measured; returns
    {"snr_db": mean dB, "snr_db_std", "snr_db_min", "snr_db_max", "num_images", "noise": {...}, "run", "split"}.
    """
    session = open_session(run_dir, data_root, split, device, checkpoint)
    models, cfg = session.models, session.config
    noise_cfg = _noise_config(cfg.noise, noise_overrides)
    noise = models.noise if not noise_overrides else noise_injection(noise_cfg)
    measured = measure_noise(models.G, {"noise": noise}, session.batches("calibrate", progress), session.device,
                             seed=cfg.train.seed)
    snrs, clipped = measured["noise"]["snr_db"], measured["noise"]["clip_share"]
    finite = snrs[torch.isfinite(snrs)]
    if len(finite) < len(snrs):
        raise RunError(f"{run_dir}: noise {noise_cfg.kind} leaves the logits of {len(snrs) - len(finite)} images "
                       "unchanged (infinite SNR); calibrate a run with noise, or pass noise.kind=...")
    result = {
        "run": cfg.name, "split": split, "noise": dataclasses.asdict(noise_cfg), "num_images": len(snrs),
        "snr_db": finite.mean().item(), "snr_db_std": finite.std().item() if len(finite) > 1 else 0.0,
        "snr_db_min": finite.min().item(), "snr_db_max": finite.max().item(),
        # the RMS of G's logits (mean over the images) and, for a quantizer, the share of its inputs beyond +-1
        "logit_rms": measured["logit_rms"].mean().item(),
        "clip_share": None if clipped is None else clipped.mean().item(),
    }
    if not noise_overrides:
        write_json(calibration_path(run_dir, split), result)
    return result


@writes_into_run()
def calibrate_quantizers(run_dir: str | Path, data_root: str | Path, split: str = "val", device: str = "auto",
                         checkpoint: str = LAST, bits: Iterable[int] = (1, 2, 3, 4),
                         scale_rms: float | None = None, progress: bool = False) -> dict[str, Any]:
    """The SNR of n-bit quantization on a run's logits in both readings, and of max-only, beside the paper's.

    For each n of `bits`: the mean per-image SNR (eq. 11) and the share of clipped values of eq. 9 as written
    (scale "none") and with each image's logits scaled to RMS `scale_rms` first (scale "rms"), with the paper's
    measured SNR; max-only, which no scale changes, last. `scale_rms` None: noise.scale_rms's default.
    Writes RUN_DIR/calibrate_<split>_quantizers.json."""
    scale_rms = DEFAULT_SCALE_RMS if scale_rms is None else scale_rms
    if not (math.isfinite(scale_rms) and scale_rms > 0):
        raise ConfigError(f"--scale-rms {scale_rms}: must be a finite number > 0 (the paper's SNRs: {DEFAULT_SCALE_RMS})")
    session = open_session(run_dir, data_root, split, device, checkpoint)
    noises = {f"{n}:{scale}": NoiseInjection("quantize", bits=n, scale=scale, scale_rms=scale_rms)
              for n in bits for scale in ("none", "rms")} | {"max_only": NoiseInjection("max_only")}
    measured = measure_noise(session.models.G, noises, session.batches("calibrate", progress), session.device,
                             seed=session.config.train.seed)

    def mean(values: Tensor | None) -> float | None:
        return None if values is None or len(values) == 0 else values[torch.isfinite(values)].mean().item()

    rows = [{"bits": n, "paper_snr_db": PAPER_QUANTIZER_SNR_DB.get(n),
             **{f"{key}_{scale}": mean(measured[f"{n}:{scale}"][key]) for scale in ("none", "rms")
                for key in ("snr_db", "clip_share")}} for n in bits]
    result = {"run": session.config.name, "split": split, "num_images": len(measured["logit_rms"]),
              "logit_rms": mean(measured["logit_rms"]), "scale_rms": scale_rms, "quantizers": rows,
              "max_only": {"snr_db": mean(measured["max_only"]["snr_db"]), "paper_snr_db": PAPER_MAX_ONLY_SNR_DB}}
    write_json(quantizer_calibration_path(run_dir, split), result)
    return result


def resolve_snr_from(cfg: Config, base_dir: str | Path = ".", device: str = "auto") -> Config:
    """Replace `noise.snr_db: from RUN_DIR` by the SNR measured for RUN_DIR (calibrating it if needed).

    RUN_DIR is taken as given, else relative to `base_dir` (a sweep's folder, where sibling runs live).
    Returns `cfg` unchanged when snr_db is a number.
    """
    source = cfg.noise.snr_db
    if not isinstance(source, str):
        return cfg
    name = snr_source(source) or source
    candidates = [Path(name), Path(base_dir) / name]
    run_dir = next((p for p in candidates if (p / LAST).is_file()), None)
    if run_dir is None:
        raise ConfigError(f"noise.snr_db {source!r}: no trained run at {' or '.join(map(str, candidates))}; "
                          "train that run first (a sweep trains it before this one)")
    path = calibration_path(run_dir)
    if path.is_file():
        measured = read_json(path)["snr_db"]
    else:
        measured = calibrate_run(run_dir, cfg.data.root, device=device)["snr_db"]
    return dataclasses.replace(cfg, noise=dataclasses.replace(cfg.noise, snr_db=round(measured, 4)))


def _noise_config(noise: NoiseConfig, overrides: list[str]) -> NoiseConfig:
    """The run's noise section with `key=value` overrides applied and validated."""
    if not overrides:
        return noise
    raw = {"noise": dataclasses.asdict(noise)}
    if any(o.removeprefix("noise.").split("=")[0].strip() == "kind" for o in overrides):
        raw["noise"] = {}  # another kind: start from that kind's defaults, not this run's bits or snr_db
    apply_overrides(raw, [f"noise.{o.removeprefix('noise.')}" for o in overrides])
    return config_from_dict(raw, source="calibrate").noise

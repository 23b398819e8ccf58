"""The text of `cycleseg diagnose`: the Markdown summary RUN_DIR/diagnose_<split>.md and the lines it prints.

Both read the results document that `diagnose.diagnose_run` writes as diagnose_<split>.json (its keys are
described there); the Markdown links the figures of `diagnose_figures` relative to the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cycleseg.core.diagnostics import INPUTS
from cycleseg.runs.formats import fmt

__all__ = ["format_markdown", "format_summary", "percent"]

# How the one-hot inputs were scaled (--scale-to), in words for section 1.
SCALES = {"f_input": "the per-pixel L2 norm of F's usual input noise(G(x))",
          "logits": "the per-pixel L2 norm of G's logits (before the noise injection)",
          "unit": "1 (plain one-hots, as in the backward cycle)"}
# F's inputs of the watermark gap (diagnostics.INPUTS), in words for section 1's table.
DESCRIPTIONS = {"noisy": "noise(G(x)), the training path",
                "decision": "one-hot of the decision argmax G(x), scaled",
                "class_mean": "each pixel's class-mean vector of noise(G(x)) (per image)",
                "split_class_mean": "each pixel's class-mean vector of noise(G(x)) over the whole split",
                "split_class_mean_own_noise": "each pixel's class-mean logit vector over the whole split, through the "
                                              "run's own noise",
                "ground_truth": "one-hot of the ground truth, scaled"}


def format_markdown(r: dict[str, Any]) -> str:
    """The self-contained Markdown summary diagnose_<split>.md (image links relative to the run directory)."""
    lines = (_header_and_gap(r) + _reward(r) + _sensitivity(r) + _energy(r) + _pictures(r))
    return "\n".join(lines)


def _header_and_gap(r: dict[str, Any]) -> list[str]:
    """The title line and section 1: the watermark gap, one row per input of F."""
    gap = r["watermark_gap"]
    psnr = gap["psnr_db"]
    lines = [
        f"# Steganography diagnostics: {r['run']} ({r['noise_label']}), {r['split']} split",
        "",
        (f"{r['num_images']} images, checkpoint `{r['checkpoint']}`, seed {r['seed']}; mIoU {fmt(r['miou'], 1)} %, "
         f"SNR of the run's own noise injection {fmt(r['snr_db'], 2)} dB."),
        "",
        "## 1. Watermark gap",
        "",
        ("PSNR of F's reconstruction of the image from five inputs. Only the first is what training sees; the "
         "others carry the segmentation decision (or the ground truth) and nothing else. One-hots are scaled to "
         f"{SCALES[r['scale_to']]}; none of the last four goes through the noise injection."),
        "",
        "| F's input | PSNR dB | gap dB |",
        "|---|---|---|",
    ]
    for name in INPUTS:
        if name in psnr:
            lines.append(f"| {DESCRIPTIONS[name]} | {fmt(psnr[name], 2)} | "
                         f"{fmt(gap['gap_db'].get(name), 2) if name != 'noisy' else '-'} |")
    return lines + [
        "",
        ("gap = PSNR(noisy) - PSNR(that input): how much better F rebuilds the image from G's full class scores "
         "than from the decision alone. A large gap means F reads information that is not in the segmentation "
         "decision (watermarks, or honest confidence information); a gap near 0 means it does not. The class "
         "means per image still carry per-image detail (the colour of this image's sky, one object); the split's "
         "class means carry none, so a gap to them above the gap to per-image class means is detail of that kind."),
        "",
    ]


def _reward(r: dict[str, Any]) -> list[str]:
    """The reward for hiding: the two colour oracles and their difference."""
    return [
        "## The reward for hiding",
        "",
        ("PSNR of the image painted from its ground-truth label map: every pixel with its class's mean colour over "
         "the split (labels only), or with its class's mean colour in this image (labels and the regions' colours). "
         "The difference is what hiding detail in the class scores can win at most against an F that reads only "
         "the labels; under about 3 dB there is little worth hiding."),
        "",
        "| oracle | PSNR dB |",
        "|---|---|",
        f"| labels only | {fmt(r['oracle']['labels_only_psnr_db'], 2)} |",
        f"| labels and each image's class colours | {fmt(r['oracle']['image_colours_psnr_db'], 2)} |",
        f"| reward (difference) | {fmt(r['oracle']['reward_db'], 2)} |",
        "",
    ]


def _sensitivity(r: dict[str, Any]) -> list[str]:
    """Section 2: PSNR and mIoU at each SNR of extra Gaussian noise on G's logits, and its figure."""
    lines = [
        "## 2. Sensitivity to extra Gaussian noise",
        "",
        ("Extra Gaussian noise at each target SNR is added to G's logits (sigma per image by the equal-SNR rule, so "
         "the measured SNR of eq. 11 equals the target); the run's own noise injection then runs as in training. "
         "A hidden low-amplitude channel dies at high SNR, long before the decision (mIoU) suffers."),
        "",
        "| target SNR dB | measured SNR dB | PSNR dB | mIoU % |",
        "|---|---|---|---|",
    ]
    for p in r["sensitivity"]["points"]:
        lines.append(f"| {p['snr_target_db']:g} | {fmt(p['snr_db'], 2)} | {fmt(p['psnr_db'], 2)} | {fmt(p['miou'], 1)} |")
    return lines + [
        f"| no extra noise | - | {fmt(r['watermark_gap']['psnr_db'].get('noisy'), 2)} | {fmt(r['miou'], 1)} |",
        "",
        f"![sensitivity]({r['figures']['sensitivity']})",
        "",
    ]


def _energy(r: dict[str, Any]) -> list[str]:
    """Section 3: the residual and unexplained energy shares, the spectra's high-frequency shares, two figures."""
    energy, spectrum = r["energy"], r["spectrum"]
    return [
        "## 3. Hidden-signal energy",
        "",
        ("Residual share: the share of the energy sum ||v||^2 outside the projection of each pixel's vector v on "
         "the one-hot of its decided class, i.e. the energy of all other class scores. Unexplained share: the "
         "share outside each image's class means (what the decision map cannot predict at all)."),
        "",
        "| vectors | residual share | unexplained share |",
        "|---|---|---|",
        (f"| G's logits | {percent(energy['logits']['residual_share'])} | "
         f"{percent(energy['logits']['unexplained_share'])} |"),
        (f"| F's input noise(G(x)) | {percent(energy['f_input']['residual_share'])} | "
         f"{percent(energy['f_input']['unexplained_share'])} |"),
        "",
        f"![energy per class]({r['figures']['energy']})",
        "",
        (f"Spectra: share of the power above {spectrum['high_frequency_cutoff']} cycles/pixel (finer than 4 pixels "
         f"per period): image {percent(spectrum['high_frequency_share']['image'])}, residual of G's logits "
         f"{percent(spectrum['high_frequency_share']['logits_residual'])}, residual of F's input "
         f"{percent(spectrum['high_frequency_share']['f_input_residual'])}."),
        "",
        f"![spectra]({r['figures']['spectrum']})",
        "",
    ]


def _pictures(r: dict[str, Any]) -> list[str]:
    """Section 4: what each column of examples.png shows, and the figure."""
    return [
        "## 4. Pictures",
        "",
        ("Per row: the image, ground truth, decision, the residual of G's logits (its 3 principal components as "
         "RGB, each stretched so that its 1st-99th percentiles fill the range), G's logits minus their class "
         "means (likewise), then F's reconstructions from the four inputs above with their PSNR. Image edges and "
         "textures visible inside the regions of one decided class in the residual are detail hidden in the "
         "segmentation."),
        "",
        f"![examples]({r['figures']['examples']})",
        "",
    ]


def format_summary(r: dict[str, Any], run_dir: Path) -> str:
    """The few lines `cycleseg diagnose` prints."""
    psnr = r["watermark_gap"]["psnr_db"]
    gap = r["watermark_gap"]["gap_db"]
    return "\n".join([
        f"{r['run']} ({r['noise_label']}), {r['num_images']} {r['split']} images",
        (f"PSNR dB: noisy {fmt(psnr.get('noisy'), 2)}, decision {fmt(psnr.get('decision'), 2)}, class means "
         f"{fmt(psnr.get('class_mean'), 2)}, split class means {fmt(psnr.get('split_class_mean'), 2)}, ground truth "
         f"{fmt(psnr.get('ground_truth'), 2)}"),
        f"watermark gap {fmt(gap.get('decision'), 2)} dB (noisy - decision)",
        (f"reward for hiding {fmt(r['oracle']['reward_db'], 2)} dB (oracles: labels only "
         f"{fmt(r['oracle']['labels_only_psnr_db'], 2)}, with each image's class colours "
         f"{fmt(r['oracle']['image_colours_psnr_db'], 2)})"),
        (f"residual energy share: G's logits {percent(r['energy']['logits']['residual_share'])}, F's input "
         f"{percent(r['energy']['f_input']['residual_share'])}"),
        "sensitivity PSNR dB: " + ", ".join(f"{p['snr_target_db']:g} dB -> {fmt(p['psnr_db'], 2)}"
                                            for p in r["sensitivity"]["points"]),
        (f"wrote {run_dir / ('diagnose_' + r['split'] + '.json')}, {run_dir / r['summary']} and "
         f"{run_dir / ('diagnose_' + r['split'])}/*.png"),
    ])



def percent(value: float | None) -> str:
    """A share in [0, 1] as "12.3 %"; "-" for None (nothing to share, e.g. no energy)."""
    return "-" if value is None else f"{100 * value:.1f} %"

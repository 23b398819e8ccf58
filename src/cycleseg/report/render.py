"""The report's text: its sections (Table 2, the paired contrasts, the figures' captions, the diagnostics, the
configs) and their two renderings, Markdown (figures linked) and one self-contained HTML page (embedded)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cycleseg.core.stats import Interval, format_interval
from cycleseg.experiments.sweep import seed_dir
from cycleseg.fileio import read_bytes, read_text, require_file
from cycleseg.report.records import RunRecord, group_runs, labelled_fraction
from cycleseg.report.semi import semi_contrasts
from cycleseg.report.tables import WATERMARK_METRICS, _fmt, _name_references, paired_rows, quantizer_rows
from cycleseg.runs import artifact


@dataclass
class _Section:
    title: str
    text: str = ""  # a paragraph (plain text)
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows
    figures: list[Path] = field(default_factory=list)
    code: list[tuple[str, str]] = field(default_factory=list)  # (summary, preformatted text), collapsed in HTML


def _sections(records: list[RunRecord], rows: list[dict[str, Any]], chosen: list[RunRecord],
              figures: dict[str, Path], examples_note: str, sweep_dir: Path, missing: list[str] = (),
              watermark: list[dict[str, Any]] = (), rewards: list[dict[str, Any]] = (),
              contrasts: list[dict[str, Any]] = ()) -> list[_Section]:
    """The report's sections, in order: Table 2, the noise rows paired by seed (with seeds), the missing runs,
    Figures 4 and 3, the training curves, then what the runs have (labelled fractions, the watermark along
    training, the reward for hiding, the paired contrasts, diagnostics) and every run's config."""
    seeded = any(r["seeds"] > 1 for r in rows)
    sections = [_table2_section(records, rows, sweep_dir, seeded)]
    paired = paired_rows(records) if seeded else []
    if paired:
        sections.append(_paired_section(paired))
    if missing:
        sections.append(_Section("Missing runs", "Not finished (yet), so left out of every number and figure: "
                                 + "; ".join(missing) + "."))
    sections += _figure_sections(chosen, figures, examples_note, seeded)
    if "labelled_fraction" in figures:
        sections.append(_Section("Semi-supervised: mIoU against the labelled fraction",
                                 "Each point a config's validation mIoU (with seeds: the mean and its 95 % interval), "
                                 "the fraction its data.labelled; 1 = every training image labelled.",
                                 figures=[figures["labelled_fraction"]]))
    semi = semi_contrasts(group_runs(records), labelled_fraction)
    if semi:
        sections.append(_semi_section(semi))
    if watermark:
        sections.append(_watermark_section(watermark, figures))
    if rewards:
        sections.append(_reward_section(rewards))
    if contrasts:
        sections.append(_contrast_section(contrasts))
    quantizers = quantizer_rows(group_runs(records))
    if quantizers:
        sections.append(_quantizer_section(quantizers))
    sections += _diagnostics_sections(records)
    sections.append(_configs_section(records))
    return sections


def _table2_section(records: list[RunRecord], rows: list[dict[str, Any]], sweep_dir: Path, seeded: bool
                    ) -> _Section:
    """Table 2 beside the paper: ours (with seeds: mean ± interval and each seed) and the paper's values."""
    sizes = sorted({f"{r.config['data']['width']}x{r.config['data']['height']}, {r.config['optim']['epochs']} epochs"
                    for r in records})
    about = ("the paper: Cityscapes val at 512x256, 200 epochs. SNR is the measured mean per-image SNR of the noise "
             "(eq. 11); PSNR that of the forward-cycle reconstruction (eq. 14).")
    if not seeded:
        header = ["run", "row of Table 2", "SNR dB", "paper", "mIoU %", "paper", "Δ", "PSNR dB", "paper", "Δ"]
        body = [[r["run"], r["label"] + ("" if r["evaluated"] else " (not evaluated)"),
                 _fmt(r["snr_db"], 2), _fmt(r["paper_snr_db"], 2),
                 _fmt(r["miou"], 1), _fmt(r["paper_miou"], 1), _fmt(r["diff_miou"], 1, sign=True),
                 _fmt(r["psnr_db"], 2), _fmt(r["paper_psnr_db"], 2), _fmt(r["diff_psnr_db"], 2, sign=True)]
                for r in rows]
        count = sum(r.results is not None for r in records)  # `missing` also names runs not on disk yet
        text = f"{count} runs in {sweep_dir} ({'; '.join(sizes)}); {about} Δ = ours − paper."
    else:
        header = ["run", "row of Table 2", "seeds", "SNR dB", "paper", "mIoU %", "paper", "Δ", "PSNR dB", "paper",
                  "Δ"]
        body = [[r["run"], r["label"], str(r["seeds"]),
                 _with_seeds(r, "snr_db", 2), _fmt(r["paper_snr_db"], 2),
                 _with_seeds(r, "miou", 1), _fmt(r["paper_miou"], 1), _fmt(r["diff_miou"], 1, sign=True),
                 _with_seeds(r, "psnr_db", 2), _fmt(r["paper_psnr_db"], 2), _fmt(r["diff_psnr_db"], 2, sign=True)]
                for r in rows]
        count = sum(r["seeds"] for r in rows)
        text = (f"{count} finished runs of {len(rows)} configs in {sweep_dir} ({'; '.join(sizes)}), one per seed; "
                f"{about} Ours: mean ± half-width of the 95 % confidence interval over the seeds (Student t, n − 1 "
                "degrees of freedom), the value of each seed in brackets (seed 0 first); Δ = our mean − paper.")
    return _Section("Table 2: SNR, mIoU and PSNR beside the paper", text, table=(header, body))


def _paired_section(paired: list[dict[str, Any]]) -> _Section:
    """Each noise row minus the no-noise row, paired by seed (paired_rows)."""
    paired, reference = _name_references(paired)
    against = f"the row {reference} (no noise)" if reference else "the no-noise row of the same labelled fraction"
    return _Section(
        f"Noise rows against {reference or 'the no-noise row of the same labelled fraction'}, paired by seed",
        f"Each noise row minus {against}, seed by seed (the same seed gives both the same "
        "initial weights and data order), over the seeds both have: mean difference and its 95 % confidence "
        "interval (Student t). * marks an interval that excludes 0: a difference unlikely (at 5 %) to be the "
        "seeds' spread alone. One common seed gives the difference without an interval.",
        table=(["run", "row of Table 2", "seeds", "Δ mIoU %", "95 % interval", "Δ PSNR dB", "95 % interval"],
               [[p["run"], p["label"], str(len(p["miou"].seeds)),
                 format_interval(p["miou"].interval, 1, sign=True, missing="–"), _bounds(p["miou"], 1),
                 format_interval(p["psnr_db"].interval, 2, sign=True, missing="–"), _bounds(p["psnr_db"], 2)]
                for p in paired]))


def _figure_sections(chosen: list[RunRecord], figures: dict[str, Path], examples_note: str, seeded: bool
                     ) -> list[_Section]:
    """Figure 4 (class-wise IoU), Figure 3 (validation examples) and the training curves."""
    names = ", ".join(f"{r.name} ({r.seeds} seeds)" if r.seeds > 1 else r.name for r in chosen)
    return [
        _Section("Figure 4: class-wise IoU", ("Runs: " + names + "." if not seeded else "Configs: " + names
                                              + "; bars: mean over the seeds, error bars: its 95 % interval (drawn within 0-100 %)."),
                 figures=[figures["class_iou"]] if "class_iou" in figures else []),
        _Section("Figure 3: validation examples",
                 examples_note or "Each row one validation image; columns: the image, the ground truth, then each "
                 "chosen run's prediction and, for cycle models, its reconstruction F(noise(G(x)))."
                 + (" With seeds: each config's first finished seed (" + ", ".join(
                     f"{r.name}: {seed_dir(r.members[0].seed)}" for r in chosen if r.members and r.members[0].seed
                     is not None) + ")." if seeded else ""),
                 figures=[figures["examples"]] if "examples" in figures else []),
        _Section("Training curves", "Losses per iteration (log.jsonl) and validation mIoU per epoch of every run."
                 + (" A config with several seeds: the mean over the seeds, the band from the smallest to the "
                    "largest seed's value." if seeded else ""),
                 figures=[figures[k] for k in figures if k.startswith("curves_")]),
    ]


def _semi_section(semi: list[dict[str, Any]]) -> _Section:
    """The semi-supervised contrasts (report/semi.py): configs of one fraction that differ in one thing."""
    return _Section(
        "Semi-supervised: paired contrasts",
        "Configs of one labelled fraction that differ in one thing, validation mIoU paired by seed (the same seed "
        "chooses the same labelled images, initial weights and data order): semi − labelled-only (a cycle model "
        "minus the plain ERFNet on the same labels; at fraction 1, or without unlabelled images, cycle − plain), the "
        "unlabelled images (a semi-supervised cycle model minus the same model on its labelled images alone, "
        "optim.unlabelled_batch_size 0), no D_Y (a semi-supervised cycle model with loss.adv_y 0 minus the same model "
        "with D_Y), the anchor's choices (minus the "
        "paper's cycle with the same noise), the noise (minus the same model without) and all labels (the plain "
        "ERFNet on every label minus the plain ERFNet of the fraction: the room there is to win back). Mean ± 95 % "
        "interval (Student t), each seed's difference, the paired t test's p and Holm's adjusted p over every row "
        "of this table (* : adjusted p < 0.05), and the smallest true difference the seeds detect with 80 % power, "
        "two-sided at 5 % and at 5 % / rows (the strictest level a Holm step asks for).",
        table=(["labelled", "contrast", "run", "minus", "seeds", "Δ mIoU %", "95 % interval", "per seed", "p",
                "Holm p", "detectable ±", "at 5 %/rows"],
               [[f"{r['fraction']:g}" if r["fraction"] is not None else "file", r["kind"], r["run"], r["reference"],
                 *_contrast_cells(r, 1), _fmt(r["detectable_strict"], 1)] for r in semi]))


def _contrast_cells(row: dict[str, Any], digits: int) -> list[str]:
    """The cells every paired-contrast table shows: seeds, Δ ± half-width, interval, each seed's difference, p,
    Holm's p (* below 0.05) and the detectable effect."""
    diff = row["difference"]
    return [str(len(diff.seeds)), format_interval(diff.interval, digits, sign=True, missing="–"),
            _bounds(diff, digits), ", ".join(f"{v:+.{digits}f}" for v in row["per_seed"].values()),
            _fmt(row["p"], 4),
            _fmt(row["p_holm"], 4) + (" *" if row["p_holm"] is not None and row["p_holm"] < 0.05 else ""),
            _fmt(row["detectable"], digits)]


def _watermark_section(watermark: list[dict[str, Any]], figures: dict[str, Path]) -> _Section:
    """The watermark along training (watermark_rows): the last checkpoint's values, the paired gap to nonoise."""
    header = ["run", "seeds", "iteration"] + [f"{title} {unit}" for _, title, unit, _ in WATERMARK_METRICS] + [
        "Δ gap to class means dB", "95 % interval"]
    body = []
    for w in watermark:
        cells = [w["run"], str(w["seeds"]), str(w["step"])]
        for key, _, _, digits in WATERMARK_METRICS:
            cells.append(_with_seeds({f"{key}_ci": w[key], f"{key}_seeds": w[f"{key}_seeds"]}, key, digits))
        diff = w["class_mean_gap_vs_reference"]
        cells += ["–", "–"] if diff is None else [format_interval(diff.interval, 2, sign=True, missing="–"),
                                                  _bounds(diff, 2)]
        body.append(cells)
    return _Section(
        "The watermark along training",
        "From `cycleseg diagnose RUN --along-training` (RUN/diagnose_val_training.json) of every run that has it. "
        "Gap to class means: PSNR of F(noise(G(x))) minus that of F fed each pixel's class-mean logits, the "
        "detail F reads from G's scores beyond the decided classes; gap to split class means: the same with "
        "the class means over the whole split, so per-image detail (the colour of this image's sky) counts too; "
        "gap to decision: minus F fed the decision "
        "one-hot; unexplained share: the logits' energy the class means do not explain. The table: the last "
        "checkpoint, mean ± half-width of the 95 % interval over the seeds (each seed in brackets), and the "
        "gap to class means minus that of nonoise, paired by seed (* : the interval excludes 0). The figure: "
        "mean over the seeds per checkpoint, the band its 95 % interval.",
        table=(header, body),
        figures=[figures["watermark_training"]] if "watermark_training" in figures else [])


def _reward_section(rewards: list[dict[str, Any]]) -> _Section:
    """The reward for hiding (reward_rows): the data's oracles and F's PSNR from class means and ground truth."""
    return _Section(
        "The reward for hiding",
        "From the oracles of `cycleseg diagnose` (val): PSNR of the image painted from its ground-truth label map "
        "with each class's mean colour over the split (labels only), and with each class's mean colour in this "
        "image (labels and colours); the reward is their difference, what hiding can win at most. Beside them, "
        "F's PSNR at the last checkpoint fed each pixel's split class-mean scores and fed the ground-truth one-hot "
        "(how close F gets to the labels-only oracle). Mean ± 95 % interval over the seeds.",
        table=(["run", "labels-only oracle dB", "labels + colours oracle dB", "reward dB",
                "F(split class means) dB", "F(ground truth) dB"],
               [[r["run"]] + [format_interval(r[k], 2, missing="–") for k in
                              ("labels_only_psnr_db", "image_colours_psnr_db", "reward_db",
                               "f_split_means_psnr_db", "f_ground_truth_psnr_db")] for r in rewards]))


def _contrast_section(contrasts: list[dict[str, Any]]) -> _Section:
    """The laboratory's paired contrasts (mechanism_contrasts): differences, p, Holm's p, detectable effect."""
    return _Section(
        "Paired contrasts",
        "Each config minus its reference, seed by seed: a noise arm against the same config without noise (else "
        "against nonoise), and a quantizer against the Gaussian config trained at its measured SNR. The gaps to "
        "the split's class means (the reference fed to F as it is, and through the arm's own noise) and F's PSNR "
        "at the last diagnosed checkpoint, the final mIoU (evaluate). Mean ± 95 % interval (Student t), each "
        "seed's difference, the paired t test's p and Holm's adjusted p over every row of this table (* : "
        "adjusted p < 0.05), and the smallest true difference these seeds detect with 80 % power at 5 % "
        "(two-sided), from the differences' SD: a null is informative only about effects above it.",
        table=(["run", "reference", "metric", "seeds", "Δ", "95 % interval", "per seed", "p", "Holm p",
                "detectable ±"],
               [[c["run"], c["reference"], f"{c['title']} {c['unit']}", *_contrast_cells(c, c["digits"])]
                for c in contrasts]))


def _quantizer_section(rows: list[dict[str, Any]]) -> _Section:
    """The quantizer's two readings on the runs' logits (quantizer_rows, from calibrate --quantizers)."""
    return _Section(
        "The quantizer's two readings",
        "From `cycleseg calibrate RUN --quantizers` (RUN/calibrate_val_quantizers.json): the mean per-image SNR "
        f"(eq. 11) of n-bit quantization on the run's own logits, as eq. 9 reads (values clipped to ±1) and with "
        f"each image's logits scaled to RMS {rows[0]['scale_rms']:g} first (noise.scale rms), with the share of "
        "the quantizer's inputs beyond ±1; the paper's measured SNR beside them. Max-only is scale-free. Mean ± "
        "95 % interval over the seeds.",
        table=(["run", "quantizer", "seeds", "logit RMS", "paper SNR dB", "eq. 9 as written dB", "clipped %",
                "scaled dB", "clipped %"],
               [[r["run"], r["quantizer"], str(r["seeds"]), format_interval(r["logit_rms"], 2),
                 _fmt(r["paper_snr_db"], 2), _interval(r["snr_db_none"], 2),
                 _interval(r.get("clip_share_none_pct"), 1), _interval(r.get("snr_db_rms"), 2, "(scale-free)"),
                 _interval(r.get("clip_share_rms_pct"), 1)] for r in rows]))


def _interval(interval: Interval | None, digits: int, missing: str = "–") -> str:
    return missing if interval is None else format_interval(interval, digits, missing=missing)


def _diagnostics_sections(records: list[RunRecord]) -> list[_Section]:
    """The diagnose_val.md and figures of every run that has them (none: no section)."""
    diagnosed = [r for r in records if artifact(r.run_dir, "diagnose_md", "val").is_file()]
    if not diagnosed:
        return []
    section = _Section("Diagnostics: the watermarks",
                       "From `cycleseg diagnose` (RUN_DIR/diagnose_val.md and .json of each run).")
    for r in diagnosed:
        markdown = artifact(r.run_dir, "diagnose_md", "val")
        section.code.append((f"{r.name}: {markdown.name}", read_text(markdown)))
        folder = artifact(r.run_dir, "diagnose_figures", "val")  # a link to a folder elsewhere is not embedded
        section.figures += [] if folder.is_symlink() else sorted(p for p in folder.glob("*.png") if require_file(p))
    return [section]


def _configs_section(records: list[RunRecord]) -> _Section:
    """The resolved config.yaml and versions.json of every run."""
    configs = _Section("Configurations and software", "The resolved config.yaml and versions.json of every run.")
    for r in records:
        configs.code.append((f"{r.name}: config", yaml.safe_dump(r.config, sort_keys=False)))
        versions = ", ".join(f"{k} {v}" for k, v in r.versions.items()) or "not recorded"
        configs.code.append((f"{r.name}: software", versions))
    return configs


def _markdown(sections: list[_Section], base: Path) -> str:
    out = ["# cycleseg report", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.table:
            header, body = s.table
            out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in body]
            out.append("")
        for fig in s.figures:
            out += [f"![{fig.stem}]({fig.relative_to(base).as_posix()})", ""]
        for summary, text in s.code:
            out += [f"**{summary}**", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


def _html(sections: list[_Section], base: Path) -> str:
    body = []
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            header, rows = s.table
            body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                        + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</tbody></table>")
        for fig in s.figures:
            data = base64.b64encode(read_bytes(fig)).decode()  # never a FIFO: it would block
            body.append(f'<figure><img alt="{html.escape(fig.stem)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(fig.relative_to(base).as_posix())}</figcaption></figure>")
        for summary, text in s.code:
            body.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")
    return _HTML_PAGE.format(body="\n".join(body))


# A check a browser runs: every embedded figure decoded (the browser test reads data-images).
_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cycleseg report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} figcaption {{ color: #777; font-size: 0.8em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; }}
</style></head>
<body>
<h1>cycleseg report</h1>
{body}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const ok = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + "/" + images.length;
}});
</script>
</body></html>
"""


def _with_seeds(row: dict[str, Any], metric: str, digits: int) -> str:
    """"20.1 ± 2.3 (19.0, 21.2)": the mean, the interval's half-width and each seed's value."""
    interval: Interval = row[f"{metric}_ci"]
    if interval.mean is None:
        return "–"
    text = format_interval(interval, digits, missing="–")
    values = [v for _, v in sorted(row[f"{metric}_seeds"].items(), key=lambda kv: kv[0] or 0)]
    return text + " (" + ", ".join(_fmt(v, digits) for v in values) + ")" if len(values) > 1 else text


def _bounds(diff: Any, digits: int) -> str:
    """"[-4.2, -1.8] *" (the interval of a paired difference, * when it excludes 0)."""
    iv = diff.interval
    if iv.half_width is None:
        return "–"
    return f"[{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]" + (" *" if diff.excludes_zero else "")

"""The numbers of a report and of `cycleseg table`: Table 2's rows, the paired contrasts (seed by seed, with
Holm's adjustment and the detectable effect), the semi-supervised and watermark rows, and the text tables."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cycleseg import runs
from cycleseg.core.stats import (
    detectable_effect,
    format_interval,
    holm,
    mean_interval,
    paired_difference,
    t_p_value,
)
from cycleseg.errors import RunError, user_message
from cycleseg.experiments.sweep import expand_runs, seed_dir
from cycleseg.report.records import RunRecord, group_runs, labelled_fraction, read_run
from cycleseg.report.semi import same_but
from cycleseg.runs import CONFIG, artifact, read_json
from cycleseg.runs.formats import fmt, noise_label, quantizer_reading

__all__ = [
    "CONTRAST_METRICS",
    "WATERMARK_METRICS",
    "choose_runs",
    "contrast_pairs",
    "format_table",
    "matched_gaussian",
    "mechanism_contrasts",
    "paired_rows",
    "quantizer_rows",
    "results_table",
    "reward_rows",
    "runs_table",
    "seed_spread",
    "table2_rows",
    "watermark_rows",
    "watermark_training",
]

_fmt = functools.partial(fmt, missing="–")  # the report's tables write a missing number as a dash

# What `diagnose --along-training` follows (RUN/diagnose_val_training.json), as the report shows it.
WATERMARK_METRICS = (("class_mean_gap_db", "gap to class means", "dB", 2),
                     ("split_mean_gap_db", "gap to split class means", "dB", 2),
                     ("split_mean_own_gap_db", "gap to split class means, own noise", "dB", 2),
                     ("watermark_gap_db", "gap to decision", "dB", 2),
                     ("psnr_db", "F's PSNR", "dB", 2),
                     ("sensitivity_drop_db", "PSNR lost to extra 20 dB noise", "dB", 2),
                     ("unexplained_share", "unexplained share", "%", 1),
                     ("miou", "mIoU", "%", 1),
                     ("snr_db", "SNR of the run's noise", "dB", 2),
                     ("logit_rms", "logit RMS", "", 2),
                     ("clip_share", "quantizer inputs clipped", "%", 2))


# The paired contrasts of the mechanism study (mechanism_contrasts): (key, title, unit, digits, where from)
CONTRAST_METRICS = (("split_mean_gap_db", "gap to split class means", "dB", 2, "diagnose"),
                    ("split_mean_own_gap_db", "gap to split class means, own noise", "dB", 2, "diagnose"),
                    ("psnr_db", "F's PSNR", "dB", 2, "diagnose"),
                    ("miou", "mIoU", "%", 1, "evaluate"))


def table2_rows(runs: list[RunRecord], paper: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per config with a finished run, in the paper's order: ours (the mean over seeds) and the paper's
    SNR, mIoU, PSNR, and the differences; `<metric>_ci` the interval over seeds (stats.Interval) and
    `<metric>_seeds` the per-seed values."""
    by_key = {p["key"]: (i, p) for i, p in enumerate(paper)}
    rows = []
    for run in group_runs(runs):
        index, ref = by_key.get(run.key, (len(paper), None))
        label = ref["label"] + quantizer_reading(run.config) if ref else noise_label(run.config)
        row = {"run": run.name, "label": label, "order": index,
               "evaluated": run.results is not None, "seeds": run.seeds}
        for metric in ("snr_db", "miou", "psnr_db"):
            interval = run.interval(metric)
            ours, theirs = interval.mean, ref[metric] if ref else None
            row[metric] = ours
            row[f"{metric}_ci"] = interval
            row[f"{metric}_seeds"] = run.per_seed(metric)
            row[f"paper_{metric}"] = theirs
            row[f"diff_{metric}"] = None if ours is None or theirs is None else ours - theirs
        rows.append(row)
    return sorted(rows, key=lambda r: r["order"])


def paired_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """For each noise row (a cycle model with noise), its difference to the no-noise row of the same labelled
    fraction: the config equal to it but for the noise (report.semi), else `nonoise`, else the first cycle model
    without noise (every run of the paper's sweep has fraction 1), paired by seed: {"run", "label", "reference", "miou", "psnr_db"} with stats.PairedDifference values."""
    groups = group_runs(runs)
    rows = []
    for g in groups:
        if not g.is_cycle or g.key in ("none", "plain"):
            continue
        reference = (same_but(groups, g, (("noise", None),), lambda c: (c.get("noise") or {}).get("kind") == "none")
                     or _same_fraction(groups, g, lambda r: r.is_cycle and r.key == "none", "nonoise"))
        if reference is not None:
            rows.append({"run": g.name, "label": noise_label(g.config), "reference": reference.name,
                         **{m: paired_difference(g.per_seed(m), reference.per_seed(m)) for m in ("miou", "psnr_db")}})
    return rows


def _same_fraction(groups: list[RunRecord], g: RunRecord, wanted: Callable[[RunRecord], bool],
                   prefer: str | None = None) -> RunRecord | None:
    """The group named `prefer`, else the first, among the `wanted` groups (not g) of g's labelled fraction."""
    fraction = labelled_fraction(g.config)
    candidates = [r for r in groups if r is not g and wanted(r) and labelled_fraction(r.config) == fraction]
    return next((r for r in candidates if r.name == prefer), candidates[0] if candidates else None)


def _name_references(paired: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """paired_rows for display: (rows, the one reference's name), or, when the rows have several references
    (several labelled fractions), (rows whose "run" reads "quant2 − nonoise", None)."""
    references = {p["reference"] for p in paired}
    if len(references) == 1:
        return paired, references.pop()
    return [{**p, "run": f"{p['run']} − {p['reference']}"} for p in paired], None


def choose_runs(runs: list[RunRecord], names: list[str] | None = None) -> list[RunRecord]:
    """The rows of Figures 3 and 4 (group_runs: one per config, seeds pooled): `names`, or plain, no noise,
    2-bit quantization and the best Gaussian."""
    evaluated = group_runs(runs)
    if names:
        by_name = {r.name: r for r in evaluated}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RunError(f"--runs {','.join(missing)}: no evaluated run of that name; have "
                           f"{', '.join(by_name) or 'none'}")
        return [by_name[n] for n in names]
    chosen = [next((r for r in evaluated if r.key == key), None) for key in ("plain", "none", "quantize:2")]
    gaussians = [r for r in evaluated if r.key.startswith("gaussian") and r.value("miou") is not None]
    chosen.append(max(gaussians, key=lambda r: r.value("miou")) if gaussians else None)
    chosen = [r for r in chosen if r is not None]
    return chosen or evaluated[:4]


def results_table(paths: list[Path], split: str = "val") -> str:
    """The text of `cycleseg table PATH...`: run directories give `runs_table` (one row per run; a run without
    results is an error naming what to run); seeds, a config's folder of seeds or a sweep folder give
    `format_table` (mean and 95 % interval over seeds, paired differences to no noise; unfinished runs listed)."""
    found = expand_runs(paths)
    if [d for _, _, d in found] == list(paths) and all(seed is None for _, seed, _ in found):
        return runs_table(paths, split)
    return format_table(paths, split)


def runs_table(run_dirs: list[Path], split: str = "val") -> str:
    """Runs side by side like the paper's Table 2: noise, measured SNR, mIoU, PSNR, one row per run directory
    (its results as runs.summary counts them), then a line per config given at several seeds. RunError naming
    the run and what to run when one has no results on `split` (unfinished, stale or never evaluated)."""
    rows: list[tuple[dict, dict]] = []
    for run_dir in run_dirs:
        summary = runs.summary(run_dir, split)
        results = summary.require_results()
        rows.append((summary.config, results))
    names = [c.get("name", d.name) for (c, _), d in zip(rows, run_dirs)]
    lines = [_PLAIN_HEADER]
    for name, (config, results) in zip(names, rows):
        seed = (config.get("train") or {}).get("seed", 0)
        lines.append(_plain_row(f"{name} seed {seed}" if names.count(name) > 1 else name, config, results))
    return "\n".join(lines + seed_spread(rows))


def seed_spread(rows: list[tuple[dict, dict]]) -> list[str]:
    """A line per config given at several seeds (configs equal but for train.seed): how far its seeds land apart,
    the yardstick for reading a difference between rows. `rows`: (config, results) per run."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for config, r in rows:
        if config:
            rest = {**config, "train": {k: v for k, v in (config.get("train") or {}).items() if k != "seed"}}
            groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(
                ((config.get("train") or {}).get("seed", 0), r))
    lines = []
    for key, members in groups.items():
        mious = [r.get("miou") for _, r in members if r.get("miou") is not None]
        if len(members) < 2 or len(mious) < 2:
            continue
        seeds = ", ".join(str(seed) for seed, _ in members)
        name = json.loads(key).get("name", "?")
        lines.append(f"seed spread: {name} at seeds {seeds} lands {min(mious):.1f} to {max(mious):.1f} mIoU "
                     f"({max(mious) - min(mious):.1f} points apart); read no effect into differences of that size")
    return [""] + lines if lines else []


# The table without seeds (one run per row), shared by runs_table and format_table.
_PLAIN_HEADER = f"{'run':<24} {'noise':<22} {'SNR dB':>7} {'mIoU %':>7} {'PSNR dB':>8}"


def _plain_row(label: str, config: dict[str, Any], results: dict[str, Any]) -> str:
    return (f"{label:<24} {noise_label(config):<22} {fmt(results.get('snr_db'), 2):>7} "
            f"{fmt(results.get('miou'), 1):>7} {fmt(results.get('psnr_db'), 2):>8}")


def format_table(paths: list[Path], split: str = "val") -> str:
    """`cycleseg table` over runs with seeds: each path a run directory, a config's folder of seed<k>/ runs, or a
    sweep folder. One row per config with the mean ± 95 % interval over its finished seeds and each seed's
    value, then each noise row's difference to the no-noise row paired by seed; runs without results (as
    runs.summary counts them) are named as missing. With one run per config: the columns of the table without
    seeds. A run that cannot be read (a corrupt run.json, a FIFO where a file should be) is named as missing too,
    with its error: the other rows still count."""
    records, missing = [], []
    for group, seed, run_dir in expand_runs(paths):
        name = group if seed is None else f"{group}/{seed_dir(seed)}"
        if not (run_dir / CONFIG).exists():
            missing.append(f"{name} (not started: no {CONFIG})" if run_dir.is_dir() else f"{run_dir} (no run)")
            continue
        try:
            summary = runs.summary(run_dir, split)
            record = read_run(summary, group, seed)
            if record.results is None:
                missing.append(f"{record.name} ({_why_missing(summary)})")
        except RunError as e:
            missing.append(f"{name} (unreadable: {user_message(e)})")
            continue
        records.append(record)
    groups = group_runs(records)
    if not any(g.seeds > 1 for g in groups):
        lines = [_PLAIN_HEADER] + [_plain_row(g.config.get("name", g.name), g.config, g.results) for g in groups]
    else:
        lines = _seeded_lines(groups, records)
    if missing:
        lines += ["", "missing (not finished, left out): " + ", ".join(missing)]
    return "\n".join(lines)


def _why_missing(summary: runs.RunSummary) -> str:
    """"running" (run.json's state), "not evaluated on train", or "eval_train.json stale" for a finished run."""
    state = summary.record.get("state") or "not started"  # run.json: running, failed, interrupted
    if state != "finished":
        return state
    if summary.stale is not None:
        return f"{summary.stale.name} stale"
    return f"not evaluated on {summary.split}"


def _seeded_lines(groups: list[RunRecord], records: list[RunRecord]) -> list[str]:
    """format_table's lines with seeds: a row per config (mean ± interval, each seed's value), then the paired
    differences of each noise row to the no-noise row."""
    width = max([24] + [len(g.name) for g in groups])
    lines = [(f"{'run':<{width}} {'noise':<22} {'seeds':>5} {'SNR dB':>14} {'mIoU %':>12} {'PSNR dB':>14}  "
             "mIoU per seed / PSNR per seed")]
    for g in groups:
        per_seed = " ".join(fmt(m.value("miou"), 1) for m in g.members)
        if g.is_cycle:
            per_seed += " / " + " ".join(fmt(m.value("psnr_db"), 2) for m in g.members)
        lines.append(f"{g.name:<{width}} {noise_label(g.config):<22} {g.seeds:>5} "
                     f"{format_interval(g.interval('snr_db'), 2):>14} {format_interval(g.interval('miou'), 1):>12} "
                     f"{format_interval(g.interval('psnr_db'), 2):>14}  {per_seed}")
    paired = paired_rows(records)
    if paired:
        paired, reference = _name_references(paired)
        width = max([width] + [len(p["run"]) for p in paired])
        lines += ["", (f"minus {reference or 'the no-noise row'}, paired by seed (mean ± "
                       "95 % interval; * the interval excludes 0):"),
                  f"{'run':<{width}} {'noise':<22} {'seeds':>5} {'Δ mIoU %':>14} {'Δ PSNR dB':>16}"]
        for p in paired:
            cells = [format_interval(p[m].interval, d, sign=True) + (" *" if p[m].excludes_zero else "  ")
                     for m, d in (("miou", 1), ("psnr_db", 2))]
            lines.append(f"{p['run']:<{width}} {p['label']:<22} {len(p['miou'].seeds):>5} {cells[0]:>14} "
                         f"{cells[1]:>16}")
    return lines


def watermark_training(groups: list[RunRecord], split: str = "val") -> dict[str, dict[int | None, list[dict]]]:
    """{config: {seed: points}} of every finished run with a diagnose_<split>_training.json (the watermark along
    training); each point {"step", "class_mean_gap_db", ...} as diagnose_training wrote it."""
    out: dict[str, dict[int | None, list[dict]]] = {}
    for g in groups:
        for m in g.members or [g]:
            path = artifact(m.run_dir, "diagnose_training", split)
            if path.is_file():
                points = read_json(path).get("points") or []
                if points:
                    out.setdefault(g.name, {})[m.seed] = points
    return out


def _watermark_value(point: dict[str, Any], key: str) -> float | None:
    if key == "sensitivity_drop_db":  # how much of F's PSNR a little extra noise (20 dB) takes away
        extra = (point.get("sensitivity_psnr_db") or {}).get("20")
        return None if extra is None or point.get("psnr_db") is None else point["psnr_db"] - extra
    value = point.get(key)
    return None if value is None else 100.0 * value if key in ("unexplained_share", "clip_share") else value


def watermark_rows(curves: dict[str, dict[int | None, list[dict]]], reference: str = "nonoise"
                   ) -> list[dict[str, Any]]:
    """One row per config: each WATERMARK_METRICS value at the run's last checkpoint, as an Interval over the
    seeds (with the per-seed values), and for the other configs the class-mean gap minus `reference`'s, paired
    by seed (stats.PairedDifference; None without a `reference` config)."""
    last = {name: {seed: points[-1] for seed, points in by_seed.items()} for name, by_seed in curves.items()}
    rows = []
    for name, by_seed in last.items():
        row: dict[str, Any] = {"run": name, "seeds": len(by_seed),
                               "step": max(p["step"] for p in by_seed.values())}
        for key, *_ in WATERMARK_METRICS:
            values = {seed: _watermark_value(p, key) for seed, p in by_seed.items()}
            row[key] = mean_interval(values.values())
            row[f"{key}_seeds"] = values
        row["class_mean_gap_vs_reference"] = None if name == reference or reference not in last else (
            paired_difference({s: p.get("class_mean_gap_db") for s, p in by_seed.items()},
                              {s: p.get("class_mean_gap_db") for s, p in last[reference].items()}))
        rows.append(row)
    return rows


def mechanism_contrasts(groups: list[RunRecord], curves: dict[str, dict[int | None, list[dict]]],
                        reference: str = "nonoise") -> list[dict[str, Any]]:
    """The laboratory's paired contrasts (`contrast_pairs`), by seed, on CONTRAST_METRICS: the gaps to the split's
    class means and F's PSNR at the last diagnosed checkpoint (diagnose --along-training), the final mIoU
    (evaluate). Per contrast: the PairedDifference, the paired t test's p, Holm's adjusted p over all contrasts
    of the table, and the smallest difference the seeds could have detected (80 % power at 5 %, from the
    differences' SD). Empty without a `reference` config."""
    by_name = {g.name: g for g in groups}
    if reference not in by_name:
        return []

    def per_seed(name: str, key: str, source: str) -> dict[int | None, float | None]:
        if source == "evaluate":
            return by_name[name].per_seed(key)
        return {seed: _watermark_value(points[-1], key) for seed, points in curves.get(name, {}).items()}

    rows = []
    for run, ref in contrast_pairs(groups, reference):
        for key, title, unit, digits, source in CONTRAST_METRICS:
            diff = paired_difference(per_seed(run.name, key, source), per_seed(ref.name, key, source))
            if diff.interval.mean is None:
                continue
            rows.append({"run": run.name, "reference": ref.name, "metric": key, "title": title, "unit": unit,
                         "digits": digits, "difference": diff, "p": t_p_value(diff.interval),
                         "detectable": detectable_effect(diff.interval),
                         "per_seed": dict(zip(diff.seeds, diff.interval.values, strict=True))})
    adjusted = holm({f"{r['run']}:{r['reference']}:{r['metric']}": r["p"] for r in rows})
    for r in rows:
        r["p_holm"] = adjusted[f"{r['run']}:{r['reference']}:{r['metric']}"]
    return rows


def contrast_pairs(groups: list[RunRecord], reference: str = "nonoise") -> list[tuple[RunRecord, RunRecord]]:
    """(run, reference) pairs: every config against the same config without noise (report.semi.same_but: a noise
    arm of the objective ablation against that ablation's no-noise arm), else against `reference`; and each
    quantizer against the Gaussian config trained at its measured SNR (`matched_gaussian`)."""
    by_name = {g.name: g for g in groups}
    no_noise = lambda c: (c.get("noise") or {}).get("kind", "none") == "none"
    pairs = []
    for g in groups:
        if g.name == reference:
            continue
        partner = same_but(groups, g, (("noise", None),), no_noise) if not no_noise(g.config) else None
        pairs.append((g, partner or by_name[reference]))
    for g in groups:
        quantizer = matched_gaussian(groups, g)
        if quantizer is not None:
            pairs.append((quantizer, g))
    return pairs


def matched_gaussian(groups: list[RunRecord], gaussian: RunRecord) -> RunRecord | None:
    """The quantizer config whose runs' measured SNRs (RUN/calibrate_val.json) are, seed by seed, the SNRs this
    Gaussian config trained at (`noise.snr_db: from RUN`, rounded as calibrate.resolve_snr_from rounds them)."""
    if (gaussian.config.get("noise") or {}).get("kind") != "gaussian":
        return None
    wanted = {m.seed: (m.config.get("noise") or {}).get("snr_db") for m in gaussian.members or [gaussian]}
    for q in groups:
        if (q.config.get("noise") or {}).get("kind") != "quantize":
            continue
        measured = {}
        for m in q.members or [q]:
            path = artifact(m.run_dir, "calibrate", "val")
            measured[m.seed] = round(read_json(path)["snr_db"], 4) if path.is_file() else None
        if all(seed in measured and measured[seed] == snr for seed, snr in wanted.items()):
            return q
    return None


def quantizer_rows(groups: list[RunRecord], split: str = "val") -> list[dict[str, Any]]:
    """Per config with `calibrate --quantizers` (RUN/calibrate_<split>_quantizers.json), the two readings of the
    quantizer on its runs' logits: per bit depth the paper's SNR and, as Intervals over the seeds, the SNR and the
    clipped share (in %) of eq. 9 as written and of the scaled quantizer; a last row for max-only."""
    rows = []
    for g in groups:
        tables = [read_json(p) for m in g.members or [g]
                  if (p := artifact(m.run_dir, "calibrate_quantizers", split)).is_file()]
        if not tables:
            continue
        for i, first in enumerate(tables[0]["quantizers"]):
            rows.append({"run": g.name, "quantizer": f"{first['bits']} bit", "paper_snr_db": first["paper_snr_db"],
                         "seeds": len(tables), "scale_rms": tables[0]["scale_rms"],
                         "logit_rms": mean_interval(t["logit_rms"] for t in tables),
                         **{key: mean_interval(t["quantizers"][i][key] for t in tables)
                            for key in ("snr_db_none", "snr_db_rms")},
                         **{f"{key}_pct": mean_interval(100 * t["quantizers"][i][key] for t in tables)
                            for key in ("clip_share_none", "clip_share_rms")}})
        rows.append({"run": g.name, "quantizer": "max-only", "paper_snr_db": tables[0]["max_only"]["paper_snr_db"],
                     "seeds": len(tables), "scale_rms": tables[0]["scale_rms"],
                     "logit_rms": mean_interval(t["logit_rms"] for t in tables),
                     "snr_db_none": mean_interval(t["max_only"]["snr_db"] for t in tables)})
    return rows


def reward_rows(groups: list[RunRecord], curves: dict[str, dict[int | None, list[dict]]], split: str = "val"
                ) -> list[dict[str, Any]]:
    """Per cycle config with diagnose --along-training: the oracles of the data (labels only; labels and each
    image's class colours; the reward, their difference) and, at the last checkpoint, F's PSNR from the split's
    class-mean scores and from the ground-truth one-hot, each an Interval over the seeds."""
    rows = []
    for g in groups:
        if g.name not in curves:
            continue
        oracles = [read_json(artifact(m.run_dir, "diagnose_training", split)).get("oracle") or {}
                   for m in g.members or [g] if artifact(m.run_dir, "diagnose_training", split).is_file()]
        last = [points[-1] for points in curves[g.name].values()]
        rows.append({"run": g.name, **{key: mean_interval(o.get(key) for o in oracles) for key in
                                       ("labels_only_psnr_db", "image_colours_psnr_db", "reward_db")},
                     "f_split_means_psnr_db": mean_interval(p.get("split_mean_psnr_db") for p in last),
                     "f_ground_truth_psnr_db": mean_interval(p.get("ground_truth_psnr_db") for p in last)})
    return rows

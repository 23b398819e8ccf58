"""The regime study's report: which arm each contrast weighs against which (report.tables.contrast_pairs), the
quantizer-Gaussian pairing by measured SNR, the Holm adjustment over the pairs, and the quantizer's readings in
labels; on made-up run folders with hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cycleseg.report.records import RunRecord
from cycleseg.report.tables import contrast_pairs, matched_gaussian, mechanism_contrasts, quantizer_rows, table2_rows
from cycleseg.runs.formats import noise_label


def _config(name, noise=None, gamma=None, kind="cyclegan"):
    config = {"name": name, "model": {"kind": kind}, "noise": noise or {"kind": "none"}, "train": {"seed": 0}}
    if gamma is not None:
        config["loss"] = {"gamma": gamma}
    return config


def _group(tmp: Path, name: str, config: dict, miou: dict[int, float], snr: dict[int, float] | None = None,
           config_snr: dict[int, float] | None = None) -> RunRecord:
    members = []
    for seed, value in miou.items():
        run_dir = tmp / name / f"seed{seed}"
        run_dir.mkdir(parents=True)
        seeded = json.loads(json.dumps(config))
        if config_snr is not None:
            seeded["noise"]["snr_db"] = config_snr[seed]
        if snr is not None:
            (run_dir / "calibrate_val.json").write_text(json.dumps({"snr_db": snr[seed]}))
        members.append(RunRecord(name, run_dir, seeded, {"miou": value}, group=name, seed=seed))
    return RunRecord(name, tmp / name, members[0].config, members[0].results, group=name, members=members)


QUANT = {"kind": "quantize", "bits": 2, "scale": "rms", "scale_rms": 0.44, "ste": "identity"}


@pytest.fixture
def study(tmp_path):
    seeds = (0, 1, 2)
    return [
        _group(tmp_path, "nonoise", _config("nonoise"), {0: 40.0, 1: 42.0, 2: 41.0}),
        _group(tmp_path, "plain", _config("plain", kind="plain"), {0: 75.0, 1: 74.0, 2: 76.0}),
        _group(tmp_path, "quant2_scaled", _config("quant2_scaled", QUANT), {0: 30.0, 1: 33.0, 2: 31.0},
               snr={0: 7.318814, 1: 7.40004, 2: 7.2}),
        _group(tmp_path, "gauss_quant2_scaled", _config("gauss_quant2_scaled", {"kind": "gaussian"}),
               {0: 35.0, 1: 36.0, 2: 37.0}, config_snr={0: 7.3188, 1: 7.4, 2: 7.2}),
        _group(tmp_path, "gauss_other", _config("gauss_other", {"kind": "gaussian"}),
               {0: 35.0, 1: 36.0, 2: 37.0}, config_snr={s: 7.38 for s in seeds}),
        _group(tmp_path, "nonoise_g1", _config("nonoise_g1", gamma=1.0), {0: 70.0, 1: 71.0, 2: 72.0}),
        _group(tmp_path, "quant2_scaled_g1", _config("quant2_scaled_g1", QUANT, gamma=1.0),
               {0: 65.0, 1: 66.0, 2: 70.0}),
    ]


def test_each_arm_against_the_same_config_without_noise(study):
    pairs = {(run.name, ref.name) for run, ref in contrast_pairs(study)}
    assert ("quant2_scaled_g1", "nonoise_g1") in pairs  # the ablation's noise arm against the ablation's no noise
    assert ("nonoise_g1", "nonoise") in pairs  # the objective itself, against the paper's
    assert ("quant2_scaled", "nonoise") in pairs and ("plain", "nonoise") in pairs
    assert ("quant2_scaled", "gauss_quant2_scaled") in pairs  # the quantizer against its SNR-matched Gaussian
    assert ("quant2_scaled", "gauss_other") not in pairs  # 7.38 is not what quant2_scaled measured
    assert not any(run == "nonoise" for run, _ in pairs)


def test_gaussian_pairs_with_the_quantizer_by_measured_snr_seed_by_seed(study):
    by_name = {g.name: g for g in study}
    assert matched_gaussian(study, by_name["gauss_quant2_scaled"]).name == "quant2_scaled"
    assert matched_gaussian(study, by_name["gauss_other"]) is None
    assert matched_gaussian(study, by_name["quant2_scaled"]) is None  # not a Gaussian config


def test_contrasts_hand_computed(study):
    rows = [r for r in mechanism_contrasts(study, {}) if r["metric"] == "miou"]
    by_pair = {(r["run"], r["reference"]): r for r in rows}
    diff = by_pair["quant2_scaled", "gauss_quant2_scaled"]["difference"]
    assert diff.interval.mean == pytest.approx(((30 - 35) + (33 - 36) + (31 - 37)) / 3)
    g1 = by_pair["quant2_scaled_g1", "nonoise_g1"]
    assert g1["per_seed"] == {0: -5.0, 1: -5.0, 2: -2.0}
    # Holm over every row: the smallest p is multiplied by the number of rows (or capped at 1)
    smallest = min(rows, key=lambda r: r["p"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, smallest["p"] * len(rows)))


def test_labels_name_the_quantizers_reading(study):
    assert noise_label({"model": {"kind": "cyclegan"}, "noise": QUANT}) == "quantize 2 bit, scaled"
    clipped = {**QUANT, "scale": "none", "ste": "clipped"}
    assert noise_label({"model": {"kind": "cyclegan"}, "noise": clipped}) == "quantize 2 bit, clipped STE"
    assert noise_label({"model": {"kind": "cyclegan"}, "noise": {"kind": "quantize", "bits": 2}}) == "quantize 2 bit"
    paper = [{"key": "quantize:2", "label": "quantize 2 bit", "snr_db": 7.38, "miou": 45.1, "psnr_db": 25.3}]
    rows = table2_rows(next(g for g in study if g.name == "quant2_scaled").members, paper)
    assert rows[0]["label"] == "quantize 2 bit, scaled" and rows[0]["paper_snr_db"] == 7.38


def test_quantizer_rows_average_the_calibrations_over_seeds(study):
    nonoise = next(g for g in study if g.name == "nonoise")
    for seed, (none, scaled) in enumerate([(1.4, 8.0), (1.6, 8.4), (1.5, 8.2)]):
        table = {"scale_rms": 0.44, "logit_rms": 6.0 + seed,
                 "quantizers": [{"bits": 2, "paper_snr_db": 7.38, "snr_db_none": none, "clip_share_none": 0.95,
                                 "snr_db_rms": scaled, "clip_share_rms": 0.001 * seed}],
                 "max_only": {"snr_db": 0.2, "paper_snr_db": 0.22}}
        (nonoise.members[seed].run_dir / "calibrate_val_quantizers.json").write_text(json.dumps(table))
    rows = quantizer_rows(study)
    assert [r["quantizer"] for r in rows] == ["2 bit", "max-only"] and rows[0]["seeds"] == 3
    assert rows[0]["snr_db_none"].mean == pytest.approx(1.5) and rows[0]["snr_db_rms"].mean == pytest.approx(8.2)
    assert rows[0]["clip_share_rms_pct"].mean == pytest.approx(0.1) and rows[0]["logit_rms"].mean == pytest.approx(7.0)
    assert rows[1]["snr_db_none"].mean == pytest.approx(0.2) and "snr_db_rms" not in rows[1]

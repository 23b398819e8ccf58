"""The semi-supervised study's contrasts (report/semi.py) on made-up configs with hand-computed values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from cycleseg.report.semi import design_label, model_label, semi_contrasts


def _fraction(config: dict[str, Any]) -> float:
    value = (config.get("data") or {}).get("labelled")
    return 1.0 if value is None else float(value)


@dataclass
class Group:
    name: str
    config: dict[str, Any]
    values: dict[int, float] = field(default_factory=dict)

    def per_seed(self, name: str) -> dict[int | None, float | None]:
        assert name == "miou"
        return dict(self.values)


def _config(fraction: float, kind: str = "cyclegan", anchor: bool = False, bits: int | None = None) -> dict:
    config = {"name": "x", "data": {"labelled": fraction, "height": 32},
              "model": {"kind": kind, "f_input": "softmax" if anchor else "scores"},
              "noise": {"kind": "quantize", "bits": bits} if bits else {"kind": "none"},
              "loss": {"paired_f": 0.3226} if anchor else {},
              "train": {"seed": 3}}
    if kind == "cyclegan":
        config["optim"] = {"unlabelled_batch_size": 4}
    return config


def _study() -> list[Group]:
    return [
        Group("1-8_plain", _config(0.125, "plain"), {0: 28.0, 1: 29.0, 2: 30.0}),
        Group("1-8_paper", _config(0.125), {0: 24.0, 1: 26.0, 2: 25.0}),
        Group("1-8_anchor", _config(0.125, anchor=True), {0: 30.0, 1: 32.0, 2: 31.0}),
        Group("1-8_anchor_quant2", _config(0.125, anchor=True, bits=2), {0: 29.0, 1: 30.0, 2: 34.0}),
        Group("1-4_plain", _config(0.25, "plain"), {0: 31.0, 1: 31.0}),
        Group("1-4_paper", _config(0.25), {0: 27.0, 1: 29.0}),
    ]


def test_labels_name_the_design_and_the_noise():
    assert design_label(_config(0.125, "plain")) == "plain ERFNet"
    assert design_label(_config(0.125)) == "cycle, paper"
    assert design_label({"model": {"kind": "cyclegan"}}) == "cycle, paper"  # the defaults are the paper's
    assert design_label(_config(0.125, anchor=True)) == "cycle, anchor (F reads softmax, paired F 0.3226)"
    assert model_label(_config(0.125, anchor=True, bits=2)).endswith(", quantize 2 bit")
    assert model_label(_config(0.125, "plain")) == "plain ERFNet"


def test_each_contrast_finds_the_config_that_differs_in_one_thing():
    rows = semi_contrasts(_study(), _fraction)
    found = [(r["fraction"], r["kind"], r["run"], r["reference"]) for r in rows]
    assert found == [
        (0.125, "semi − labelled-only", "1-8_anchor", "1-8_plain"),
        (0.125, "semi − labelled-only", "1-8_anchor_quant2", "1-8_plain"),
        (0.125, "semi − labelled-only", "1-8_paper", "1-8_plain"),
        (0.125, "anchor's choices", "1-8_anchor", "1-8_paper"),
        # 1-8_anchor_quant2 has no paper-design 2-bit partner here: no anchor's-choices row for it
        (0.125, "2-bit noise", "1-8_anchor_quant2", "1-8_anchor"),
        (0.25, "semi − labelled-only", "1-4_paper", "1-4_plain"),
    ]


def test_values_p_and_holm_by_hand():
    rows = {(r["kind"], r["run"]): r for r in semi_contrasts(_study(), _fraction)}
    anchor = rows[("semi − labelled-only", "1-8_anchor")]
    # differences 2, 3, 1: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.464 on 2 df -> two-sided p = 0.0742
    assert anchor["per_seed"] == {0: 2.0, 1: 3.0, 2: 1.0}
    assert anchor["difference"].interval.mean == pytest.approx(2.0)
    assert anchor["difference"].interval.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert anchor["p"] == pytest.approx(0.07418, abs=2e-4)
    # anchor - paper: 6, 6, 6: no spread, p = 0 (every seed the same non-zero difference)
    assert rows[("anchor's choices", "1-8_anchor")]["p"] == 0.0
    # Holm over the 6 rows: the smallest p times 6, then the next times 5, ..., never decreasing, at most 1
    ps = sorted((r["p"], r["p_holm"]) for r in rows.values())
    expected, running = [], 0.0
    for i, (p, _) in enumerate(ps):
        running = max(running, min(1.0, (len(ps) - i) * p))
        expected.append(running)
    assert [h for _, h in ps] == pytest.approx(expected)
    # the detectable effect at 5 % / 6 is larger than at 5 %
    assert anchor["detectable_strict"] > anchor["detectable"] > 0


def test_the_ceiling_is_the_plain_model_on_every_label():
    """With a plain ERFNet at fraction 1, each smaller fraction's plain model gets an "all labels" row: the
    ceiling minus it, at the smaller fraction (8 - 5, 9 - 6: +3, +3)."""
    groups = _study() + [Group("1_plain", _config(1.0, "plain"), {0: 31.0, 1: 32.0, 2: 33.0})]
    rows = [r for r in semi_contrasts(groups, _fraction) if r["kind"] == "all labels"]
    assert [(r["fraction"], r["run"], r["reference"]) for r in rows] == [(0.125, "1_plain", "1-8_plain"),
                                                                        (0.25, "1_plain", "1-4_plain")]
    assert rows[0]["per_seed"] == {0: 3.0, 1: 3.0, 2: 3.0}
    assert rows[1]["per_seed"] == {0: 0.0, 1: 1.0}  # 31 - 31, 32 - 31: only the seeds both have


def test_no_rows_without_a_fraction_below_one():
    groups = [Group("plain", _config(1.0, "plain"), {0: 1.0}), Group("paper", _config(1.0), {0: 2.0})]
    assert semi_contrasts(groups, _fraction) == []


def test_unlabelled_images_are_weighed_against_the_same_cycle_on_its_labels_alone():
    """optim.unlabelled_batch_size 0 is the cycle model without unlabelled images: it is a "cycle − plain" row
    (not a semi-supervised one), and the semi-supervised model of the same design and noise is weighed against it
    ("unlabelled images": 30 - 27, 32 - 31, 31 - 29 = +3, +1, +2)."""
    alone = _config(0.125, anchor=True)
    alone["optim"]["unlabelled_batch_size"] = 0
    groups = _study() + [Group("1-8_anchor_labelled", alone, {0: 27.0, 1: 31.0, 2: 29.0})]
    assert design_label(alone) == "cycle, anchor (F reads softmax, paired F 0.3226), labelled only"
    rows = {(r["kind"], r["run"]): r for r in semi_contrasts(groups, _fraction)}
    assert rows[("unlabelled images", "1-8_anchor")]["reference"] == "1-8_anchor_labelled"
    assert rows[("unlabelled images", "1-8_anchor")]["per_seed"] == {0: 3.0, 1: 1.0, 2: 2.0}
    assert rows[("cycle − plain", "1-8_anchor_labelled")]["reference"] == "1-8_plain"
    assert ("semi − labelled-only", "1-8_anchor_labelled") not in rows
    # no labelled-only partner of the 2-bit anchor or the paper's cycle: no row for them
    assert ("unlabelled images", "1-8_anchor_quant2") not in rows and ("unlabelled images", "1-8_paper") not in rows
    # the labelled-only anchor has no labelled-only paper cycle: no anchor's-choices row; the semi anchor keeps its own
    assert ("anchor's choices", "1-8_anchor_labelled") not in rows
    assert rows[("anchor's choices", "1-8_anchor")]["reference"] == "1-8_paper"


def test_a_model_without_d_y_is_weighed_against_the_same_model_with_it():
    """loss.adv_y 0 turns D_Y off in a semi-supervised cycle model: a "no D_Y" row against the same model with D_Y
    (29 - 30, 33 - 32, 31 - 31 = -1, +1, 0); its "unlabelled images" row finds the model on its labels alone, whose
    loss.adv_y does not matter (it has no D_Y)."""
    no_d_y = _config(0.125, anchor=True)
    no_d_y["loss"]["adv_y"] = 0.0
    alone = _config(0.125, anchor=True)
    alone["optim"]["unlabelled_batch_size"] = 0
    alone["loss"]["adv_y"] = 1 / 31  # as a saved config spells out the default
    groups = _study() + [Group("1-8_anchor_no-dy", no_d_y, {0: 29.0, 1: 33.0, 2: 31.0}),
                         Group("1-8_anchor_labelled", alone, {0: 27.0, 1: 31.0, 2: 29.0})]
    assert design_label(no_d_y) == "cycle, anchor (F reads softmax, paired F 0.3226), no D_Y"
    assert design_label(alone).endswith("labelled only")  # no D_Y to speak of: not named
    rows = {(r["kind"], r["run"]): r for r in semi_contrasts(groups, _fraction)}
    assert rows[("no D_Y", "1-8_anchor_no-dy")]["reference"] == "1-8_anchor"
    assert rows[("no D_Y", "1-8_anchor_no-dy")]["per_seed"] == {0: -1.0, 1: 1.0, 2: 0.0}
    assert rows[("unlabelled images", "1-8_anchor_no-dy")]["reference"] == "1-8_anchor_labelled"
    assert rows[("unlabelled images", "1-8_anchor")]["reference"] == "1-8_anchor_labelled"
    assert rows[("semi − labelled-only", "1-8_anchor_no-dy")]["reference"] == "1-8_plain"
    assert ("no D_Y", "1-8_anchor") not in rows

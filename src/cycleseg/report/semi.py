"""The semi-supervised study's numbers (configs/semi-study/, docs/semi-supervised.md): which model is which, and
the paired contrasts between configs of one labelled fraction that differ in one thing.

A config of the study is a labelled fraction (data.labelled), a model (the plain ERFNet on the labels; the cycle
as the paper defines it; the cycle with the anchor's choices of Mondal et al. 2019: F reads softmax(G(x)) and
learns a paired loss |F(onehot(y)) - x|) and a noise. The contrasts, each paired by seed (the same seed chooses
the same labelled images, initial weights and data order):

- "semi − labelled-only": every cycle model minus the plain ERFNet of its fraction (at fraction 1, or for a cycle
  model without unlabelled images, optim.unlabelled_batch_size 0, "cycle − plain");
- "unlabelled images": a semi-supervised cycle model minus the same model trained on its labelled images alone
  (optim.unlabelled_batch_size 0): what the unlabelled images add with the objective held fixed;
- "no D_Y": a semi-supervised cycle model without the discriminator on segmentations (loss.adv_y 0) minus the same
  model with it: which of the unlabelled images' two terms (J_rec_X, J_adv_Y) does what;
- "anchor's choices": a cycle model with them minus the paper's cycle with the same noise;
- "2-bit noise": a cycle model with noise minus the same model without;
- "all labels": the plain ERFNet on every label (fraction 1) minus the plain ERFNet of a smaller fraction: what
  the setting pays for the missing labels, the room the unlabelled images could win back (the ceiling).

Every contrast is starred only after Holm's correction over the whole table, and each says the smallest
difference its seeds could have detected (80 % power), at 5 % and at the Bonferroni level 5 % / m, the strictest
level a Holm step can ask for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cycleseg.core.stats import CONFIDENCE, detectable_effect, holm, paired_difference, t_p_value
from cycleseg.runs.formats import noise_label

__all__ = ["DESIGN_KEYS", "design_label", "model_label", "same_but", "semi_contrasts"]

# What the anchor changes, as (section, key): F's input, the paired loss of F, F's warm-up.
DESIGN_KEYS = (("model", "f_input"), ("loss", "paired_f"), ("optim", "f_warmup_iters"))
_PAPER_DESIGN = {("model", "f_input"): "scores", ("loss", "paired_f"): 0.0, ("optim", "f_warmup_iters"): 0}
# The unlabelled images per iteration: 0 is the cycle model on its labelled images alone.
_UNLABELLED = ("optim", "unlabelled_batch_size")
# The weight of J_adv_Y, D_Y judging the unlabelled images' segmentations: 0 is a semi-supervised run without D_Y.
_ADV_Y = ("loss", "adv_y")
# Keys that differ between the runs of one config, or that name it: never part of a comparison.
_IGNORED = (("name", None), ("train", "seed"))


class Group(Protocol):
    """A config's row of the report (report.RunRecord after group_runs): its name, config and per-seed values."""

    name: str
    config: dict[str, Any]

    def per_seed(self, name: str) -> dict[int | None, float | None]: ...


def _get(config: Mapping[str, Any], key: tuple[str, str | None]) -> Any:
    section, name = key
    if name is None:
        return config.get(section)
    return (config.get(section) or {}).get(name, _PAPER_DESIGN.get(key))


def _labelled_only(config: Mapping[str, Any]) -> bool:
    """A cycle model trained on its labelled images alone (optim.unlabelled_batch_size 0)."""
    return (config.get("model") or {}).get("kind") != "plain" and _get(config, _UNLABELLED) == 0


def _without_d_y(config: Mapping[str, Any]) -> bool:
    """A semi-supervised cycle model (labelled fraction below 1, unlabelled images) whose D_Y is off (loss.adv_y 0)."""
    labelled = (config.get("data") or {}).get("labelled")
    return ((config.get("model") or {}).get("kind") != "plain" and labelled not in (None, 1, 1.0)
            and not _labelled_only(config) and _get(config, _ADV_Y) == 0)


def _is_paper(config: Mapping[str, Any]) -> bool:
    """A cycle model with the paper's design (whatever its noise and unlabelled images)."""
    return (config.get("model") or {}).get("kind") != "plain" and all(
        _get(config, k) == _PAPER_DESIGN[k] for k in DESIGN_KEYS)


def design_label(config: Mapping[str, Any]) -> str:
    """"plain ERFNet", "cycle, paper" or "cycle, anchor (F reads softmax, paired F 0.3226)", with ", labelled
    only" for a cycle model without unlabelled images and ", no D_Y" for a semi-supervised one without D_Y."""
    if (config.get("model") or {}).get("kind") == "plain":
        return "plain ERFNet"
    changed = [(k, _get(config, k)) for k in DESIGN_KEYS if _get(config, k) != _PAPER_DESIGN[k]]
    words = {"f_input": lambda v: f"F reads {v}", "paired_f": lambda v: f"paired F {v:g}",
             "f_warmup_iters": lambda v: f"F warm-up {v}"}
    label = "cycle, anchor (" + ", ".join(words[k[1]](v) for k, v in changed) + ")" if changed else "cycle, paper"
    return label + (", labelled only" if _labelled_only(config) else "") + (", no D_Y" if _without_d_y(config) else "")


def model_label(config: Mapping[str, Any]) -> str:
    """design_label with the noise: "cycle, paper, quantize 2 bit"; the plain ERFNet has no noise to name."""
    design = design_label(config)
    return design if design == "plain ERFNet" else f"{design}, {noise_label(config)}"


def _without(config: Mapping[str, Any], keys: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    """The config as nested plain data without `keys` (and without the keys that differ between seeds)."""
    stripped = {section: (dict(value) if isinstance(value, Mapping) else value) for section, value in config.items()}
    for section, name in (*keys, *_IGNORED):
        if name is None:
            stripped.pop(section, None)
        elif isinstance(stripped.get(section), dict):
            stripped[section].pop(name, None)
    for section, name in DESIGN_KEYS:  # a default spelled out or left out is the same design
        if (section, name) not in keys and isinstance(stripped.get(section), dict):
            stripped[section][name] = _get(config, (section, name))
    return stripped


def same_but(groups: Sequence[Group], g: Group, keys: Sequence[tuple[str, str | None]], wanted) -> Group | None:
    """The one other group equal to g but for `keys`, and `wanted` of it (e.g. "has no noise")."""
    target = _without(g.config, keys)
    return next((r for r in groups if r is not g and wanted(r.config) and _without(r.config, keys) == target), None)


def semi_contrasts(groups: Sequence[Group], fraction_of, metric: str = "miou") -> list[dict[str, Any]]:
    """The study's contrasts on `metric` (see the module docstring), in order of fraction, then kind, then name:
    {"fraction", "kind", "run", "reference", "difference" (stats.PairedDifference), "per_seed", "p", "p_holm",
    "detectable", "detectable_strict"}. `fraction_of(config)` is the labelled share (report's
    labelled_fraction). Empty unless some config has a labelled fraction below 1."""
    if not any((fraction_of(g.config) or 1.0) < 1.0 for g in groups):
        return []
    is_plain = lambda c: (c.get("model") or {}).get("kind") == "plain"
    no_noise = lambda c: (c.get("noise") or {}).get("kind", "none") == "none"
    pairs = []
    ceiling = next((r for r in groups if is_plain(r.config) and (fraction_of(r.config) or 0.0) == 1.0), None)
    for g in groups:
        if is_plain(g.config):
            if ceiling is not None and g is not ceiling and (fraction_of(g.config) or 1.0) < 1.0:
                pairs.append(("all labels", ceiling, g))
            continue
        fraction = fraction_of(g.config)
        plain = next((r for r in groups if is_plain(r.config) and fraction_of(r.config) == fraction), None)
        semi = (fraction or 1.0) < 1.0 and not _labelled_only(g.config)
        pairs.append(("semi − labelled-only" if semi else "cycle − plain", g, plain))
        if semi:
            # a run without unlabelled images has no D_Y whatever its loss.adv_y says
            pairs.append(("unlabelled images", g, same_but(groups, g, (_UNLABELLED, _ADV_Y), _labelled_only)))
        if _without_d_y(g.config):
            pairs.append(("no D_Y", g, same_but(groups, g, (_ADV_Y,), lambda c: not _without_d_y(c))))
        if not _is_paper(g.config):
            pairs.append(("anchor's choices", g, same_but(groups, g, DESIGN_KEYS, _is_paper)))
        if not no_noise(g.config):
            pairs.append(("2-bit noise" if (g.config.get("noise") or {}).get("bits") == 2 else "noise", g,
                          same_but(groups, g, (("noise", None),), no_noise)))
    rows = []
    for kind, g, ref in pairs:
        if ref is None:
            continue
        diff = paired_difference(g.per_seed(metric), ref.per_seed(metric))
        if diff.interval.mean is None:
            continue
        fraction = fraction_of(ref.config if kind == "all labels" else g.config)
        rows.append({"fraction": fraction, "kind": kind, "run": g.name, "reference": ref.name,
                     "difference": diff, "per_seed": dict(zip(diff.seeds, diff.interval.values, strict=True)),
                     "p": t_p_value(diff.interval), "detectable": detectable_effect(diff.interval)})
    strict = (1 - CONFIDENCE) / max(len(rows), 1)
    adjusted = holm({str(i): r["p"] for i, r in enumerate(rows)})
    kinds = ("all labels", "semi − labelled-only", "unlabelled images", "no D_Y", "cycle − plain", "anchor's choices",
             "2-bit noise", "noise")
    for i, r in enumerate(rows):
        r["p_holm"] = adjusted[str(i)]
        r["detectable_strict"] = detectable_effect(r["difference"].interval, alpha=strict)
    return sorted(rows, key=lambda r: (r["fraction"] or 1.0, kinds.index(r["kind"]), r["run"]))

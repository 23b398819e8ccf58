"""The options several subcommands share (cycleseg/cli/options.py): each defined once, so that changing the one
definition changes every subcommand that takes the option; --precision offers core.precision.PRECISIONS."""

import argparse
from pathlib import Path

import pytest

from cycleseg.cli import build_parser, options
from cycleseg.core import precision
from cycleseg.runs import BEST, LAST

CLI = Path(__file__).resolve().parents[1] / "src" / "cycleseg" / "cli"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if a.dest == "command").choices


def _having(option: str, parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.Action]:
    """Subcommand name -> its action for `option` (a flag like --data, or a positional's dest), where it has one."""
    found = {}
    for name, sub in _subcommands(parser or build_parser()).items():
        for action in sub._actions:
            if option in action.option_strings or (not action.option_strings and action.dest == option):
                found[name] = action
    return found


# The shared definition -> the option it defines, and the subcommands that take it today.
SHARED = {
    "data": ("--data", {"train", "evaluate", "predict", "calibrate", "sweep", "report", "diagnose", "reward"}),
    "split": ("--split", {"evaluate", "check-data", "prepare", "predict", "table", "calibrate", "diagnose",
                          "reward"}),
    "device": ("--device", {"evaluate", "segment", "predict", "calibrate", "report", "diagnose"}),
    "precision": ("--precision", {"evaluate", "segment", "predict"}),
    "checkpoint": ("--checkpoint", {"evaluate", "segment", "predict", "diagnose", "export"}),
    "run_dir": ("run_dir", {"evaluate", "segment", "predict", "calibrate", "diagnose", "export"}),
    "max_images": ("--max-images", {"diagnose", "reward"}),
    "data_format": ("--format", {"check-data", "prepare"}),
}


@pytest.mark.parametrize("definition", sorted(SHARED))
def test_every_subcommand_takes_the_option_from_its_one_definition(monkeypatch, definition):
    """Mark the help of what the one definition makes: every subcommand with the option shows the mark, so none
    defines the option on its own."""
    option, expected = SHARED[definition]
    original = getattr(options, definition)

    def marked(*args, **kwargs):
        parent = original(*args, **kwargs)
        for action in parent._actions:
            action.help = f"MARKED {action.help}"
        return parent

    monkeypatch.setattr(options, definition, marked)
    having = _having(option)
    if option == "--format":
        del having["make-synthetic"]  # its --format is the layout to write, another option of the same name
    assert set(having) == expected
    assert all(action.help.startswith("MARKED ") for action in having.values()), {
        name: action.help for name, action in having.items()}


def test_precision_offers_exactly_the_precisions_of_the_core(monkeypatch):
    having = _having("--precision")
    assert having and all(action.choices == list(precision.PRECISIONS) for action in having.values())
    assert all(action.default == "auto" for action in having.values())
    monkeypatch.setattr(precision, "PRECISIONS", precision.PRECISIONS + ("fp8",))  # read from there, not copied
    assert all(action.choices[-1] == "fp8" for action in _having("--precision").values())


def test_one_checkpoint_default_changes_every_subcommand(monkeypatch):
    defaults = {name: action.default for name, action in _having("--checkpoint").items()}
    assert defaults == {"evaluate": LAST, "predict": LAST, "diagnose": LAST, "export": LAST, "segment": LAST}
    monkeypatch.setattr(options, "CHECKPOINT_DEFAULT", "epoch_0007.pt")
    defaults = {name: action.default for name, action in _having("--checkpoint").items()}
    assert set(defaults.values()) == {"epoch_0007.pt"}  # one default for every reader, segment included
    assert all("default epoch_0007.pt" in a.help for a in _having("--checkpoint").values())


@pytest.mark.parametrize("value,expected", [("last", LAST), ("best", BEST), (LAST, LAST), ("epoch_0004.pt",
                                                                                             "epoch_0004.pt")])
def test_checkpoint_names_and_aliases(value, expected):
    parser = build_parser()
    for argv in (["evaluate", "runs/q2", "--data", "d"], ["segment", "runs/q2", "x.jpg", "--out", "o"],
                 ["predict", "runs/q2", "--data", "d", "--out", "o"], ["diagnose", "runs/q2", "--data", "d"],
                 ["export", "runs/q2", "--onnx", "g.onnx"]):
        assert parser.parse_args(argv + ["--checkpoint", value]).checkpoint == expected, argv
    assert parser.parse_args(["segment", "runs/q2", "x.jpg", "--out", "o"]).checkpoint == LAST
    assert parser.parse_args(["evaluate", "runs/q2", "--data", "d"]).checkpoint == LAST


def test_the_cli_names_checkpoint_files_through_runs():
    """last.pt is spelled in one place, runs.LAST; the CLI's help texts and messages use it."""
    spelled = [f"{path.name}:{i}" for path in sorted(CLI.glob("*.py"))
               for i, line in enumerate(path.read_text().splitlines(), 1) if LAST in line]
    assert spelled == []


def test_labelled_splits_only_where_labels_are_scored():
    choices = {name: action.choices for name, action in _having("--split").items()}
    assert choices["evaluate"] == choices["calibrate"] == choices["diagnose"] == ["train", "val"]
    assert choices["predict"] == choices["check-data"] == ["train", "val", "test"]
    assert choices["table"] is None  # any eval_<split>.json

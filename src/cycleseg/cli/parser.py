"""The argument parser of `cycleseg`: the top-level command, its subcommands (`cli.subcommands`, whose shared
options come from `cli.options`) and the examples each --help ends with (`cli.examples`)."""

from __future__ import annotations

import argparse

from cycleseg.cli.examples import EXAMPLES, SUBCOMMAND_EXAMPLES
from cycleseg.cli.subcommands import SUBCOMMANDS
from cycleseg.version import __version__

__all__ = ["build_parser"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps a one-paragraph description to the terminal; keeps text with its own line breaks (examples) as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _with_examples(parser: argparse.ArgumentParser, name: str) -> None:
    """Append the subcommand's examples to its --help, after what its epilog already says."""
    lines = "\n".join(f"  {e}" for e in SUBCOMMAND_EXAMPLES[name])
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + f"examples:\n{lines}"
    parser.formatter_class = _Formatter


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that point at --help."""

    def error(self, message: str) -> None:
        message = " ".join(message.splitlines())  # quoted arguments may hold line breaks (\n, \x1e, ...)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """`cycleseg [--version] COMMAND ...`: every subcommand of `subcommands.SUBCOMMANDS`, with its examples."""
    parser = _Parser(
        prog="cycleseg",
        description="Cycle-consistent semantic segmentation with noise injection into the latent segmentation "
                    "space (Loehdefink & Fingscheidt). Train ERFNet CycleGANs and the plain ERFNet on "
                    "Cityscapes or a built-in synthetic city, and evaluate them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cycleseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_subcommand in SUBCOMMANDS.values():
        add_subcommand(sub)
    for name, subparser in sub.choices.items():
        _with_examples(subparser, name)
    return parser

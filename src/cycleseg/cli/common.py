"""Small helpers every handler of the `cycleseg` command shares: progress bars, sizes, one-line messages."""

from __future__ import annotations

import argparse
import itertools
import re
import sys

from cycleseg.errors import RunError, user_message

__all__ = ["missing_equals", "one_line", "parse_size", "quiet_overrides", "show_progress"]


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RunError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 256x128") from None
    if width < 32 or height < 32 or width % 8 or height % 8:
        raise RunError(f"--size {text!r}: width and height must be multiples of 8, at least 32")
    return width, height


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal, unless --quiet."""
    return sys.stderr.isatty() and not getattr(args, "quiet", False)


def quiet_overrides(args: argparse.Namespace) -> list[str]:
    """The override that turns the training progress bar off with --quiet or when stderr is not a terminal."""
    return [] if show_progress(args) else ["train.progress=false"]


def missing_equals(words: list[str]) -> str:
    """The hint for `KEY VALUE` written without its `=` (`noise.bits 2`): "; did you mean noise.bits=2? (overrides
    are KEY=VALUE)", or "" when no word looks like a config key followed by a value."""
    for key, value in itertools.pairwise(words):
        if re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", key) and "=" not in value and not value.startswith("--"):
            return f"; did you mean {key}={value}? (overrides are KEY=VALUE)"
    return ""


def one_line(error: BaseException | str) -> str:
    """Messages quote user input (file names, keys); never let it break the one-line rule. An error re-raised
    from a DataLoader worker carries the worker's traceback: only its original message is kept."""
    return user_message(error) if isinstance(error, BaseException) else " ".join(str(error).splitlines())


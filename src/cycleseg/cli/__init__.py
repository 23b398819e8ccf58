"""The `cycleseg` command line: parse, validate, delegate. Every user error is one line and a non-zero exit.

    entry.py        main(): parsing, the one-line errors, COMMANDS (subcommand -> handler)
    parser.py       build_parser(): the top-level parser and the examples of every --help
    subcommands.py  one function per subcommand: its description and its own options
    options.py      the options several subcommands share, each defined once (argparse parent parsers)
    examples.py     EXAMPLES and SUBCOMMAND_EXAMPLES
    handlers.py     the handlers of the data and single-run subcommands
    sweeps.py       the handlers of table, sweep, sweep-status and report
    common.py       helpers of the handlers (progress bars, sizes, one-line messages)
"""

from __future__ import annotations

from cycleseg.cli.entry import COMMANDS, main
from cycleseg.cli.examples import EXAMPLES, SUBCOMMAND_EXAMPLES
from cycleseg.cli.parser import build_parser

__all__ = ["COMMANDS", "EXAMPLES", "SUBCOMMAND_EXAMPLES", "build_parser", "main"]

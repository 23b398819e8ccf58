"""`cycleseg ARGS`: parse, validate, delegate to the subcommand's handler; every user error is one line on stderr
and a non-zero exit (2; 128 + the signal for an interrupted command)."""

from __future__ import annotations

import os
import sys

from cycleseg.cli import handlers, sweeps
from cycleseg.cli.common import missing_equals, one_line
from cycleseg.cli.parser import build_parser
from cycleseg.errors import CycleSegError, Interrupted

__all__ = ["COMMANDS", "main"]

# The subcommand -> its handler (tests replace entries to check the error handling of `main`).
COMMANDS = {"make-synthetic": handlers.cmd_make_synthetic, "train": handlers.cmd_train,
            "evaluate": handlers.cmd_evaluate, "table": sweeps.cmd_table, "calibrate": handlers.cmd_calibrate,
            "sweep": sweeps.cmd_sweep, "sweep-status": sweeps.cmd_sweep_status, "report": sweeps.cmd_report,
            "diagnose": handlers.cmd_diagnose, "check-data": handlers.cmd_check_data, "prepare": handlers.cmd_prepare,
            "predict": handlers.cmd_predict, "segment": handlers.cmd_segment, "reward": handlers.cmd_reward,
            "export": handlers.cmd_export, "upgrade": handlers.cmd_upgrade}


def main(argv: list[str] | None = None) -> int:
    """Run `cycleseg` with `argv` (default sys.argv[1:]); returns the exit code (0: done)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["sweep", "status"]:  # `cycleseg sweep status DIR` is `cycleseg sweep-status DIR`
        argv = ["sweep-status", *argv[2:]]
    # parse_known_args lets KEY=VALUE overrides of `train` come before or after its options.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("train", "sweep", "calibrate") and all("=" in e and not e.startswith("-")
                                                                        for e in extra):
        if args.command == "calibrate":  # `calibrate RUN --data D kind=quantize bits=1`: the noise after options
            args.noise += extra
        else:
            args.overrides += extra
    elif extra:  # point at the subcommand's own help, where its options are listed
        words = " ".join(" ".join(extra).splitlines())
        parser.exit(2, f"cycleseg {args.command}: error: unrecognized arguments: {words}{missing_equals(extra)} "
                       f"(see cycleseg {args.command} --help)\n")
    try:
        if getattr(args, "device", None) is not None:  # an unknown --device fails before any run is read
            from cycleseg.core.models import resolve_device

            resolve_device(args.device)
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"cycleseg {args.command}: {one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except CycleSegError as e:
        print(f"cycleseg {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cycleseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cycleseg ... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

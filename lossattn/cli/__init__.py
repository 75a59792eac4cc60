"""The ``lossattn`` command: demo, train, cv, evaluate, predict, explain, reproduce, compare, check-assumptions, data,
models, presets.

One module per command (each adds its parser and runs it); every command is a thin layer over the library.
User mistakes (unknown names, missing data, bad overrides, a checkpoint that does not fit the data) end with
one ``error:`` line and a ``hint:`` line on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from lossattn.cli import assumptions as assumptions_command
from lossattn.cli import compare, demo, evaluate, explain, predict, registries, reproduce, train
from lossattn.cli import data as data_command
from lossattn.cli.common import CLIError, Formatter, add_common, error_lines, format_table

__all__ = ["CLIError", "build_parser", "format_table", "main"]

PROG = "lossattn"

EPILOG_MAIN = """\
examples:
  lossattn demo                                   # 1-2 minutes on 2 CPU cores, no download
  lossattn data list                              # datasets and where their files are looked for
  lossattn train --dataset musk1 --model loss_attention --lam 0.1
  lossattn cv --preset classic_mil --dataset fox --jobs 2
  lossattn predict lossattn-demo/runs/loss_attention/r0 digits-bags-multi --out preds/
  lossattn explain lossattn-demo/runs/loss_attention/r0 digits-bags-multi --out pictures/ --bags 4
  lossattn reproduce figure3 --quick
  lossattn check-assumptions --quick              # MIL-assumption unit tests of every bag model
  lossattn <command> --help                       # options of one command

User errors exit with code 2 and one 'error:' line plus a 'hint:' line; add --debug for a traceback.
"""

# in the order of `lossattn --help`
COMMANDS = (demo, train, evaluate, predict, explain, reproduce, compare, assumptions_command, data_command, registries)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossattn`` command."""
    import lossattn

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Loss-based attention for deep multiple instance learning (Shi et al., AAAI 2020): "
        "train, evaluate, explain and reproduce.",
        epilog=EPILOG_MAIN,
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {lossattn.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, help_: str, epilog: str, func: Callable, description: str | None = None):
        p = sub.add_parser(name, help=help_, description=description or help_, epilog=epilog, formatter_class=Formatter)
        p.set_defaults(func=func)
        add_common(p)
        return p

    for command in COMMANDS:
        command.add_parser(sub, add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lossattn`` command; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from lossattn.datasets import DownloadError

    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, ImportError, FloatingPointError, DownloadError) as exc:
        if debug:
            raise
        message, hint = error_lines(exc)
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
        return 2

"""``dagstudy`` command line. Each subcommand validates its input fully before any work starts;
bad input exits with status 2 and one line naming the option and the allowed values."""

from __future__ import annotations

import argparse
import sys

from dagstudy import __version__
from dagstudy.cli import confirm, study, train
from dagstudy.cli.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagstudy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dagstudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parser(sub)
    confirm.add_parsers(sub)
    study.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"dagstudy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling: no traceback
        print(f"\ndagstudy {args.command}: interrupted", file=sys.stderr)
        return 130

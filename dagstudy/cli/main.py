"""``dagstudy`` command line. Each subcommand validates its input fully before any work starts;
bad input exits with status 2 and one line naming the option and the allowed values."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dagstudy import __version__
from dagstudy.cli import browse, confirm, proxy, study, train
from dagstudy.cli.errors import UsageError

RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Ray's logger that warns on every local start whether token authentication is on or off."""


def quiet_third_party() -> None:
    """Keep our stderr ours: no MLflow progress bars (artifact downloads in ``report``) and no
    Ray token-authentication notice on every start (a local Ray binds to this machine only;
    a cluster's security is set where it is started). Variables the user set are kept."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagstudy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dagstudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parser(sub)
    confirm.add_parsers(sub)
    study.add_parsers(sub)
    browse.add_parsers(sub)
    proxy.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party()
    try:
        return args.run(args)
    except UsageError as e:
        print(f"dagstudy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling: no traceback
        print(f"\ndagstudy {args.command}: interrupted", file=sys.stderr)
        return 130

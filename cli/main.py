"""`bevstream` console command: one subcommand per module in cli/.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Modules import their heavy dependencies (torch, ray, the devkit) inside `run`, so `--help`
stays fast.
"""
from __future__ import annotations

import argparse
import sys

from cli import average, calibrate, demo, evaluate, profile, replay, sim, stream, train, viz

# Subcommand name -> its module. Order is the order `--help` lists them.
COMMANDS = {
    "demo": demo,
    "replay": replay,
    "stream": stream,
    "profile": profile,
    "train": train,
    "eval": evaluate,
    "calibrate": calibrate,
    "average": average,
    "sim": sim,
    "viz": viz,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bevstream",
        description="Streaming multi-camera bird's-eye-view perception runtime.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

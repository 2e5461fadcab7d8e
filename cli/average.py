"""`bevstream average`: the parameter-wise mean of weights files of one architecture (a model soup).

Two fine-tunes of the same weights (e.g. two training stages from one start) lie in one basin of the loss,
and the mean of their parameters often scores above either. Calibrate the result before use: its attribute
thresholds, NMS radii and still speeds are the first file's until `bevstream calibrate --write` fits its own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Average the parameters of weights files of one architecture (a model soup); calibrate the result afterwards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, nargs="+", required=True, help="two or more weights files or checkpoints")
    parser.add_argument("--out", type=Path, required=True, help="the averaged weights file to write")


def run(args: argparse.Namespace) -> int:
    from perception.checkpoint import average_weights

    try:
        out = average_weights(args.weights, args.out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bevstream average: {exc}", file=sys.stderr)
        return 2
    print(f"bevstream average: the mean of {len(args.weights)} weights files -> {out}; "
          f"fit its post-processing with `bevstream calibrate --weights {out} ... --write`")
    return 0

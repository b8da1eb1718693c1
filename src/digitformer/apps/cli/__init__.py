"""The digitformer command line: one small module per command, each with its parser beside its
handler; this module only registers them and keeps the one guard at the boundary.

digitformer data fetch
digitformer train encoder-only --config default
digitformer eval .data/models/encoder-only-default --split test

`allow_abbrev=False` everywhere, so no flag is a prefix another launcher could mistake for its
own.
"""

from __future__ import annotations

import argparse
import os
import sys

from digitformer import __version__
from digitformer.apps.cli import (
    data,
    evaluate,
    export,
    models,
    predict,
    serve,
    sweep,
    train,
    viz,
)
from digitformer.apps.cli.common import shared_flags
from digitformer.utils.errors import DigitformerError, redact

COMMANDS = (data, train, evaluate, predict, models, export, viz, sweep, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitformer",
        allow_abbrev=False,
        description="Vision Transformers that read handwritten digits: one digit (a ViT), the "
        "four digits of a 2x2 grid, or a whole number of any length (encoder-decoders).",
    )
    parser.add_argument("--version", action="version", version=f"digitformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = shared_flags()
    for command in COMMANDS:
        command.register(sub, shared)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """allow_abbrev=False on every subparser too: `--run` must never match a longer flag."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def main(argv: list[str] | None = None) -> int:
    """The one guard at the boundary: what user input or the machine can cause (a bad file,
    a full disk, a missing folder) is one line and exit status 1; anything else is a bug and
    keeps its traceback. DIGITFORMER_DEBUG=1 shows the traceback of every error."""
    # Must precede torch's first import: OpenMP spin-waiting halves small-batch CPU speed.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (DigitformerError, OSError) as exc:
        if os.environ.get("DIGITFORMER_DEBUG"):
            raise
        print(f"digitformer: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitformer: interrupted", file=sys.stderr)
        return 130


MAX_ERROR = 300  # characters of an error line; the rest is cut (a list of 400 state-dict keys)


def _one_line(exc: Exception) -> str:
    """An error as one line: on one line, no password of a storage URL, at most MAX_ERROR
    characters."""
    if isinstance(exc, OSError) and not isinstance(exc, DigitformerError):
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror or exc}{where}"  # e.g. "No space left on device: run/last..."
    else:
        text = str(exc)
    text = redact(" ".join(text.split()))
    if len(text) > MAX_ERROR:
        text = f"{text[: MAX_ERROR - 40]}... ({len(text) - MAX_ERROR + 40:,} more characters)"
    return text

"""The ``storyboard`` command line.

Sub-commands live in :mod:`pipeline.commands` (one module per group); each parser sets ``func``,
which receives the parsed arguments and returns the process exit code. Expected errors (bad input,
bad configuration) print one clear message and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.commands import config, evaluate, local, prepare, registry, sagemaker
from pipeline.config import ConfigError
from steps.errors import InputError

COMMAND_MODULES = (prepare, evaluate, sagemaker, local, registry, config)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="storyboard",
        description="From an animated film to an approved, fine-tuned image model (a LoRA on Stable Diffusion XL, "
                    "or a Bedrock image model).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (0 success, 1 failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (InputError, ConfigError) as err:
        print(f"storyboard {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

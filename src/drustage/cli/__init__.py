"""The ``drustage`` command: thin subcommands over the library, one module per group of commands
(``data``, ``training``, ``reading``, ``services``; what they share in ``common``).

Heavy modules (numpy, torch, pandas) are imported inside the handlers so ``drustage --help``
starts instantly.
"""

from __future__ import annotations

import argparse
import sys

from drustage.cli import data, reading, services, training
from drustage.cli.common import EXIT_ERROR, CommandError
from drustage.io_utils import printable

__all__ = ["CommandError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drustage",
        description="Skeletal maturity from hand radiographs: Luk DRU stages of the distal radius and ulna.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (data, training, reading, services):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    # drustage's own progress lines at INFO, skipped items as warnings (--quiet: warnings only);
    # other libraries' warnings only
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("drustage").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    try:
        return args.handler(args)
    except (CommandError, ValueError, OSError, RuntimeError) as error:
        # Library errors carry the file and the problem in one line.
        print(f"drustage: error: {printable(' '.join(str(error).split()))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line, never a traceback at the user
        print(f"drustage: error: internal error ({type(error).__name__}: {printable(error)}); please report it",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("drustage: interrupted", file=sys.stderr)
        return 130


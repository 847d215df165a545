"""The CLIs' error contract: a user mistake is one line on stderr and exit 2, Ctrl-C exit 130."""

from __future__ import annotations

import argparse
import sys


def run_command(args: argparse.Namespace, errors: tuple[type[BaseException], ...]) -> int:
    """Run `args.func(args)`, turning `errors` into one line and exit status 2."""
    try:
        return args.func(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

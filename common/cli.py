"""The CLIs' contract: a user mistake is one line on stderr and exit 2, a check that ran and failed
one line and exit 1, Ctrl-C exit 130, a warning one line."""

from __future__ import annotations

import argparse
import sys
import warnings

from common.errors import UserError


def one_line_warnings() -> None:
    """Print each warning as `warning: MESSAGE` (the data loader's name the file), without brevitas' noise."""
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"
    warnings.filterwarnings("ignore", category=UserWarning, module="brevitas")
    warnings.filterwarnings("ignore", message=".*Named tensors.*")


def run_command(args: argparse.Namespace, errors: tuple[type[BaseException], ...],
                failures: tuple[type[BaseException], ...] = ()) -> int:
    """Run `args.func(args)`: `errors`, UserErrors and OSErrors become one line and exit status 2,
    `failures` (a check that ran and failed) one line and exit status 1, Ctrl-C exit status 130."""
    one_line_warnings()
    try:
        return args.func(args)
    except (*errors, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable --out, a full disk: name the file
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e} (check the path, its permissions and the free disk space)", file=sys.stderr)
        return 2
    except failures as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["one_line_warnings", "run_command"]

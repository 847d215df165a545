"""Moved to common.cli; kept so that code written against this path still imports."""

from common.cli import *  # noqa: F401,F403

"""Moved to common.atomic; kept so that code written against this path still imports."""

from common.atomic import *  # noqa: F401,F403

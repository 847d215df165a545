"""The one base class of boards/ errors: the CLI prints their message as one line, exit status 2."""

from common.errors import UserError


class BoardError(UserError):
    """A problem the user can act on: an unknown board, a design that does not fit, a failing tool."""


__all__ = ["BoardError"]

"""The one base class of errors a user can act on: every CLI prints their message as one line, exit status 2."""


class UserError(Exception):
    """A problem the user can act on: an unknown board, a design that does not fit, a missing or failing tool."""


__all__ = ["UserError"]

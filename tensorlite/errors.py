"""Errors shared across layers. This module imports nothing of tensorlite's, so any module
may raise these without pulling in (or cycling back through) the one that catches them."""


class UsageError(ValueError):
    """Bad input from the user: the command prints it on one line and exits with code 2."""

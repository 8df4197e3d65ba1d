"""User-facing errors.

A `UserError` is a mistake in what the user asked for (a bad path, key, column or value). The
CLI prints its message as one line, without a traceback, and exits with status 2. Raise it
before any expensive work starts; the message says what was wrong and how to fix it.
"""


class UserError(Exception):
    """A mistake in the user's input, reported as one line by the CLI."""

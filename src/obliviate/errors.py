"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class ObliviateError(Exception):
    """A problem with the user's input or files, explained in one line."""

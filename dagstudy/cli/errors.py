"""``UsageError``: bad user input, printed as one line naming the option, exit status 2."""


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""

"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class DigitformerError(Exception):
    """A user-facing error: bad input, missing data, a corrupt file. Never a bug."""

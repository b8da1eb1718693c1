"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

import re


class DigitformerError(Exception):
    """A user-facing error: bad input, missing data, a corrupt file. Never a bug."""


SECRET = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")  # the password in scheme://user:password@


def redact(text: str) -> str:
    """`text` with the password of any URL in it (a storage's) replaced by ***."""
    return SECRET.sub(r"\1***@", text)

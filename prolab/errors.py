"""The one exception type for mistakes a user can fix (bad files, bad arguments, bad input).

The CLI prints these as one line and exits non-zero; the app shows them as a message. Anything
else escaping the library is a bug and keeps its traceback.
"""


class ProLabError(Exception):
    """A user-facing error with a message that says what to change."""

"""Error types the CLI turns into one line: :class:`InputError` (bad input: exit 2) and
:class:`QHybridError` (a runtime failure: exit 1). Kept free of heavy imports."""


class QHybridError(Exception):
    """A failure while running; the message names the problem and the fix."""

    exit_code = 1


class InputError(QHybridError, ValueError):
    """Bad input from the user (path, file, value); the message names it and the fix."""

    exit_code = 2

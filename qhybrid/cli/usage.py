"""Bad command-line input: a flag's value, a missing or conflicting flag. One line, exit 2."""

from qhybrid.errors import InputError


class UsageError(InputError):
    """A usage error of the ``qhybrid`` command; unlike library errors, its message names flags."""

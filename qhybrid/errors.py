"""Errors the CLI turns into one line, and the one place that shortens and scrubs error text.

* :class:`QHybridError` (a runtime failure: exit 1) and :class:`InputError` (bad input: exit 2).
  Their messages speak of the library's *parameters*, never of command-line flags: a placeholder
  made with :func:`param` (``f"continue it with {param('resume', True)}"``) reads ``resume=True`` to
  a Python caller, and the CLI renders the same error with its flag (``--resume``) through
  :meth:`QHybridError.render`.
* :func:`one_line` shortens any exception to a line; :func:`redact` blanks secrets (the IBM
  Quantum token of the environment and any value passed in) out of text that is shown or saved.

Kept free of heavy imports: the CLI imports this module before anything else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

#: A parameter placeholder made by :func:`param`: ``name`` or ``name=value`` between two private-use
#: characters, so that braces in a path or a value quoted in the message are never taken for one.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PARAM = re.compile(_OPEN + r"([a-z][a-z0-9_]*)(?:=([^" + _OPEN + _CLOSE + r"]*))?" + _CLOSE)
#: Secrets shorter than this are not blanked out of text (too likely to match ordinary words).
MIN_SECRET = 8


def param(name: str, value=None) -> str:
    """A placeholder for parameter ``name`` (with the ``value`` that fixes the problem, if any)."""
    return _OPEN + name + ("" if value is None else f"={value}") + _CLOSE


class QHybridError(Exception):
    """A failure while running; the message names the problem and the fix."""

    exit_code = 1

    def __init__(self, message: str = "", *args):
        super().__init__(message, *args)
        self.template = str(message)

    def render(self, flag: Callable[[str], str] | None = None) -> str:
        """The message with each parameter placeholder spelt for the reader: ``name=value`` for a
        Python caller, or, with ``flag`` (parameter name -> command-line flag), ``--flag`` /
        ``--flag value`` for a command-line user."""

        def spell(match: re.Match) -> str:
            name, value = match.group(1), match.group(2)
            if flag is None:
                return name if value is None else f"{name}={value}"
            text = flag(name)
            return text if value in (None, "True") else f"{text} {value}"

        return _PARAM.sub(spell, self.template)

    def __str__(self) -> str:
        return self.render()


class InputError(QHybridError, ValueError):
    """Bad input from the user (path, file, value); the message names it and the fix."""

    exit_code = 2


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret blanked out: the given ones and the ``QISKIT_IBM_TOKEN`` of the
    environment (if set). Secrets shorter than :data:`MIN_SECRET` characters are left alone."""
    candidates = set(secrets)
    token = os.environ.get("QISKIT_IBM_TOKEN")
    if token:
        candidates.add(token)
    for secret in sorted(candidates, key=len, reverse=True):
        if secret and len(secret) >= MIN_SECRET:
            text = text.replace(secret, "***")
    return text


def one_line(exc: BaseException | str, *, with_type: bool = False, limit: int | None = None,
             secrets: Iterable[str] = ()) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), redacted; ``exc``
    may also be a message already rendered.

    ``with_type`` puts the type in front (``ValueError: ...``), for errors of other libraries
    whose message alone does not say what failed; ``limit`` cuts the line to that many characters.
    """
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    if with_type and lines and not isinstance(exc, str):
        text = f"{type(exc).__name__}: {text}"
    text = redact(text, secrets)
    return text[:limit] if limit else text

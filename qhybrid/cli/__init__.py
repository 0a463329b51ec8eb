"""The ``qhybrid`` command: :mod:`~qhybrid.cli.parser` (flags), :mod:`~qhybrid.cli.commands` (what each
subcommand does) and :func:`main`, the one place that turns failures into a line.

Conventions: usage errors exit 2 and runtime failures exit 1, each with one line on stderr naming
the problem and the fix; ``--debug`` (before the subcommand) shows the traceback instead. Library
errors speak of parameters (``resume=True``); :func:`flag_for` renders them as the flags a
command-line user types (``--resume``).
"""

from __future__ import annotations

import sys
import traceback

from qhybrid.cli.parser import build_parser
from qhybrid.cli.usage import UsageError
from qhybrid.errors import QHybridError, one_line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            raise UsageError("no command given (see 'qhybrid --help')")
        return int(args.func(args) or 0)
    except UsageError as exc:
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {exc}", file=sys.stderr)
        return 2
    except QHybridError as exc:  # the message already names the problem and the fix
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {one_line(exc.render(flag_for))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _close_progress_bars()
        print("qhybrid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into a line
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _close_progress_bars() -> None:
    """Close the progress bars a failure left open, so the error line starts a line of its own
    (an open bar would end up in front of it, and be redrawn after it at exit)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


#: Library parameters whose command-line flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"real_n": "--n-real", "n_boot": "--bootstrap", "optimization_level": "--opt-level",
              "validator_dir": "--validator", "encoder_dir": "--encoder",
              "resilience_levels": "--resilience-level", "seeds": "--seed", "vae_path": "--vae",
              "out_dir": "--out"}


def flag_for(name: str) -> str:
    """The command-line flag of a library parameter named in an error (see qhybrid.errors.param)."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _one_line(exc: BaseException) -> str:
    message = one_line(exc)
    if isinstance(exc, (OSError,)) and getattr(exc, "filename", None):
        message = f"{exc.strerror or message}: {exc.filename}"
    return message + " (run with --debug for the traceback)"


__all__ = ["build_parser", "flag_for", "main"]

"""The ``qhybrid`` command.

Conventions: usage errors exit 2 and runtime failures exit 1, each with one line on stderr naming
the problem and the fix; ``--debug`` (before the subcommand) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from . import __version__


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- subcommands -------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .smoke import SmokeConfig, run_smoke

    config = SmokeConfig(seed=args.seed)
    if args.quick:
        config.steps, config.num_qubits, config.reps = 40, 3, 1
    if args.steps is not None:
        config.steps = args.steps
    out = Path(args.out)
    summary = run_smoke(out, config)
    print(
        f"trained {summary['trainable_weights']['quantum']} circuit weights in "
        f"{summary['train_seconds']:.1f} s ({summary['ms_per_step']:.1f} ms/step); "
        f"test MSE {summary['test_mse']:.4f} (predict-the-mean baseline "
        f"{summary['baseline_test_mse']:.4f}); max |qhybrid - StatevectorEstimator| = "
        f"{summary['max_abs_diff_vs_StatevectorEstimator']:.1e}"
    )
    print(f"results: {out}/ (summary.json, loss.png, circuit.png, circuit.txt)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qhybrid", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"qhybrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="the main job (for now: a smoke run of the quantum block on the ideal target)",
        description="Train a tiny hybrid regressor through the quantum block and check it "
        "against Qiskit's StatevectorEstimator.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    demo.add_argument("--steps", type=_positive_int, default=None, help="training steps")
    demo.set_defaults(func=cmd_demo)
    return parser


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
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qhybrid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into a line
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, (OSError,)) and getattr(exc, "filename", None):
        message = f"{exc.strerror or message}: {exc.filename}"
    return message + " (run with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

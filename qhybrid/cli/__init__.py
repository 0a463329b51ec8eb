"""The ``qhybrid`` command line: the parser and the commands, nothing else."""

from qhybrid.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

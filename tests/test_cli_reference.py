"""docs/cli.md is generated from the argparse parser; it must match the parser of this checkout."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import cli_reference  # noqa: E402


def test_docs_cli_md_is_current():
    expected = cli_reference.render()
    current = cli_reference.DOCS.read_text() if cli_reference.DOCS.exists() else ""
    assert current == expected, (
        "docs/cli.md is stale (the CLI changed); regenerate it with "
        "'.venv/bin/python benchmarks/cli_reference.py' and commit it")


def test_the_reference_lists_every_subcommand_and_option():
    from qhybrid.cli import build_parser

    text = cli_reference.render()
    parser = build_parser()
    sub = cli_reference._subparsers(parser)
    for name, child in sub.choices.items():
        assert f"## qhybrid {name}\n" in text
        for action in child._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, (name, flag)
    assert "| `--lr LR` | " in text and "## qhybrid jobs resume\n" in text

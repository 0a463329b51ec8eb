"""Write ``docs/cli.md``, the command-line reference, from the argparse parser itself.

    .venv/bin/python benchmarks/cli_reference.py           # regenerate docs/cli.md
    .venv/bin/python benchmarks/cli_reference.py --check   # exit 1 if docs/cli.md is stale

Every subcommand of ``qhybrid.cli.build_parser()`` gets its usage line, its help text and a table
of its arguments (help, default). ``tests/test_cli_reference.py`` fails when the file is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "cli.md"
COMMAND = "python benchmarks/cli_reference.py"
WIDTH = 100  # usage lines are wrapped at this width, whatever the terminal


def _subparsers(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if action.required or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return ""
    value = action.default
    if value is None or value is argparse.SUPPRESS:
        return ""
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if isinstance(value, (list, tuple)):
        return "`" + ",".join(map(str, value)) + "`" if value else "none"
    return f"`{value}`"


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" (one or more)" if action.nargs == "+" else "")
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{flags}`"
    metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                 else action.dest.upper())
    return f"`{flags} {metavar}`"


def _section(parser: argparse.ArgumentParser, help_text: str | None) -> list[str]:
    lines = [f"## {parser.prog}", ""]
    for text in dict.fromkeys(t for t in (help_text, parser.description) if t):
        lines += [_cell(text), ""]
    lines += ["```text", _usage(parser), "```", ""]
    sub = _subparsers(parser)
    if sub is not None:
        lines += ["| subcommand | what it does |", "|---|---|"]
        lines += [f"| `{parser.prog} {c.dest}` | {_cell(c.help or '')} |" for c in sub._choices_actions]
        lines.append("")
    rows = [a for a in parser._actions if a is not sub and not isinstance(a, argparse._HelpAction)]
    if rows:
        lines += ["| argument | help | default |", "|---|---|---|"]
        for a in rows:
            required = " (required)" if a.required and a.option_strings else ""
            lines.append(f"| {_name(a)}{required} | {_cell(a.help or '')} | {_default(a)} |")
        lines.append("")
    return lines


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of ``parser`` (default: ``qhybrid.cli.build_parser()``)."""
    if parser is None:
        from qhybrid.cli import build_parser

        parser = build_parser()
    lines = ["# qhybrid command-line reference", "",
             f"Generated from `qhybrid.cli.build_parser()` by `{COMMAND}`; do not edit by hand "
             "(`tests/test_cli_reference.py` fails when this file is stale). Errors: bad input exits 2, a "
             "runtime failure 1, each with one `qhybrid: error: ...` line; `qhybrid --debug COMMAND ...` "
             "shows the traceback.", ""]

    def walk(p, help_text):
        lines.extend(_section(p, help_text))
        sub = _subparsers(p)
        if sub is not None:
            for choice in sub._choices_actions:
                walk(sub.choices[choice.dest], choice.help)

    walk(parser, None)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", default=str(DOCS), help="the Markdown file (default docs/cli.md)")
    cli.add_argument("--check", action="store_true", help="exit 1 if the file differs from the parser")
    args = cli.parse_args(argv)
    text, out = render(), Path(args.out)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is stale; regenerate it with '{COMMAND}'", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`storyboard --help` and every sub-command's help: plain text, one description line per command.

The parser is walked (sub-parsers found through argparse's actions), so commands added later are
checked without being named here.
"""

from __future__ import annotations

import argparse
import re

import pytest

from pipeline.commands.cli import build_parser

# reStructuredText / Sphinx markup that reads as noise in a terminal.
MARKUP = [
    (re.compile(r"``"), "double back-quotes"),
    (re.compile(r"`"), "back-quoted (interpreted) text"),
    (re.compile(r"(^|\s)::(\s|$)|[A-Za-z)]::$"), "literal-block marker '::'"),
    (re.compile(r":(class|func|mod|data|meth|attr|exc|ref|obj|py:\w+):`"), "Sphinx role"),
    (re.compile(r"^\s*\.\. \w+::", re.M), "directive"),
]


def walk(parser: argparse.ArgumentParser, prog: str = "storyboard"):
    """``(command line, parser, sub-parsers action or None)`` of ``parser`` and every parser below it."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prog} {name}")


def subcommand_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


PARSERS = list(walk(build_parser()))


def test_the_walk_finds_the_commands() -> None:
    names = {prog for prog, _ in PARSERS}
    assert {"storyboard", "storyboard run", "storyboard prepare", "storyboard start", "storyboard config show",
            "storyboard generate"} <= names


@pytest.mark.parametrize("prog, parser", PARSERS, ids=[prog for prog, _ in PARSERS])
def test_help_has_no_markup(prog: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    for line in text.splitlines():
        for pattern, what in MARKUP:
            assert not pattern.search(line), f"`{prog} --help` shows {what}: {line.strip()!r}"


@pytest.mark.parametrize("prog, parser", PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_subcommand_has_a_one_line_description(prog: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    for action in subcommand_actions(parser):
        described = {choice.dest: choice.help for choice in action._choices_actions}
        for name in action.choices:
            help_text = described.get(name)
            assert help_text and help_text.strip(), f"`{prog} --help` lists {name} without a description"
            assert "\n" not in help_text.strip(), f"{prog} {name}: the description is not one line"
            assert re.search(rf"^\s+{re.escape(name)}\s+\S", text, re.M) or name in text, (prog, name)


@pytest.mark.parametrize("prog, parser", PARSERS, ids=[prog for prog, _ in PARSERS])
def test_every_command_has_a_description(prog: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description and parser.description.strip(), f"`{prog} --help` has no description"


def test_main_help_lists_every_command_with_its_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser()
    for action in subcommand_actions(parser):
        for choice in action._choices_actions:
            first_words = " ".join(choice.help.split()[:3])
            assert choice.dest in out and first_words in " ".join(out.split()), choice.dest

"""Reliability probes on the command line (issue 21): argument errors that print enum reprs, and
numeric fields of the configs without sane bounds."""

from __future__ import annotations

import argparse

import pytest

from engine.cli import build_parser, main as cli


def _actions(parser: argparse.ArgumentParser, prog: str = "sessrec"):
    """(command, action) for every argument of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prog} {name}")
        else:
            yield prog, action


# ---- 14. argument errors name the choices as typed -------------------------------------------------
def test_14_every_choice_is_a_plain_string():
    # a StrEnum member in `choices` prints as <DataFormat.RETAILROCKET: 'retailrocket'> in the error
    bad = [(prog, a.dest, c) for prog, a in _actions(build_parser()) for c in (a.choices or ())
           if not isinstance(a, argparse._SubParsersAction) and type(c) is not str]
    assert bad == []


def test_14_an_invalid_choice_lists_the_plain_values(capsys):
    assert cli(["data", "import", "x.csv", "--format", "foo", "--name", "x"]) == 2
    assert capsys.readouterr().err == (
        "sessrec: error: argument --format: invalid choice: 'foo' (choose from 'retailrocket', 'rsc15', "
        "'diginetica', 'srgnn') (see `sessrec data import --help`)\n")

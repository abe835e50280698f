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
        "'diginetica', 'srgnn', 'events') (see `sessrec data import --help`)\n")


# ---- 13. numeric fields have sane bounds, in the configs ---------------------------------------------
def _configs():
    from engine.core.config import DataConfig, TrainConfig
    from engine.models.registry import SPECS
    return {DataConfig, TrainConfig, *(s.config for s in SPECS.values())}


def test_13_every_numeric_config_field_is_bounded_on_both_sides():
    unbounded = [f"{cls.__name__}.{p.name}" for cls in _configs() for p in cls.params()
                 if p.type in (int, float) and (p.min is None or p.max is None)]
    assert unbounded == []


@pytest.mark.parametrize("flags, error", [
    (["--epochs", "9" * 200], "argument --epochs: epochs: must be >= 1 and <= 100000 (got a number of 200 "
                              "characters)"),
    (["--epochs", "9" * 5000], "argument --epochs: epochs: must be >= 1 and <= 100000 (got a number of "
                               "5,000 characters)"),
    (["--lr", "1e300"], "argument --lr: lr: must be > 0 and <= 100 (got 1e+300)"),
    (["--seed", "-1"], "argument --seed: seed: must be >= 0 and <= 4294967295 (got -1)"),
    (["--hidden", "99999999"], "argument --hidden: hidden: must be >= 1 and <= 65536 (got 99999999)"),
])
def test_13_an_absurd_value_is_refused_before_a_run_folder_exists(tmp_path, capsys, flags, error):
    ws_root = tmp_path / "ws"
    assert cli(["--workspace", str(ws_root), "train", "--dataset", "demo-tiny", *flags]) == 2
    assert capsys.readouterr().err == f"sessrec: error: {error} (see `sessrec train --help`)\n"
    assert not (ws_root / "runs").exists()


@pytest.mark.parametrize("argv, error", [
    (["recommend", "r", "1", "--k", "0"], "argument --k: k: must be >= 1 and <= 100000 (got 0)"),
    (["eval", "r", "--eval-batch-size", "0"],
     "argument --eval-batch-size: eval_batch_size: must be >= 1 and <= 16777216 (got 0)"),
    (["demo", "--seed", "-1"], "argument --seed: seed: must be >= 0 and <= 4294967295 (got -1)"),
])
def test_13_hand_written_numeric_flags_use_the_same_rule(tmp_path, capsys, argv, error):
    assert cli(["--workspace", str(tmp_path / "ws"), *argv]) == 2
    assert error in capsys.readouterr().err

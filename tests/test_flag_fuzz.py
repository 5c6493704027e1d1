"""Every flag of every command (the core's and the installed plugins'), given hostile
values: each parses to a value its setting accepts, or is one line, exit status 2. Seeded
and bounded: a few hundred cases in a second or two."""

import argparse
import random

import pytest

from slimcore import UserError
from slimcore.commands.cli import build_parser
from slimcore.host.manager import SlimcorePluginManager

HOSTILE = ["abc", "", " ", "-1", "0", "1", "-0", "1e400", "-1e400", "nan", ".nan", ".inf",
           "9" * 23, "-" + "9" * 23, "0x10", "1_000", "3e-4", "[1, 2]", "{a: 1}", "null",
           "true", "\x00", "\ud800", "&a [*a]", "é" * 300, "1" * 5000, "-", "--"]


def flags_of(parser: argparse.ArgumentParser):
    """(command, [required positional fillers], flag, action) for every flag that takes a
    value, over every subcommand."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in sub.choices.items():
        positionals = [a for a in subparser._actions if not a.option_strings]
        fillers = ["x"] * sum(1 for a in positionals if a.nargs in (None, "+"))
        for action in subparser._actions:
            if action.option_strings and action.nargs != 0 and action.dest != "help":
                yield command, fillers, action.option_strings[-1], action


def cases(parser, count_per_flag: int = 10):
    rng = random.Random(20261204)
    for command, fillers, flag, action in flags_of(parser):
        values = rng.sample(HOSTILE, count_per_flag) + [
            str(rng.randint(-2**70, 2**70)), repr(rng.uniform(-1e6, 1e6))]
        for value in values:
            yield command, fillers, flag, action, value


def test_every_flag_of_every_command_parses_or_is_one_line():
    pm = SlimcorePluginManager()
    pm.discover()
    parser = build_parser(pm)
    seen, refused = 0, 0
    for command, fillers, flag, action, value in cases(parser):
        seen += 1
        try:
            args = parser.parse_args([command, *fillers, f"{flag}={value}"])
        except UserError as e:
            refused += 1
            message = str(e)
            assert "\n" not in message and len(message) < 600, (command, flag, value)
            assert "Traceback" not in message
            continue
        parsed = getattr(args, action.dest)
        if action.type is not None and action.type not in (str,):
            # a checked number: what its setting accepts, so bounded
            assert not isinstance(parsed, (int, float)) or abs(parsed) < 2**64, \
                (command, flag, value, parsed)
    assert seen > 200 and 0 < refused < seen

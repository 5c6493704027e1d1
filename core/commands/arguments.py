"""What every command's arguments share: a parser whose every error is one line (exit 2,
no usage block), and numeric flags checked as config keys are.

    parser = OneLineParser(prog="slimcore")                    subparsers inherit it
    gen.add_argument("--seed", type=setting_flag(RunSection, "seed"))   int, [0, 2**63)
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Callable

from ..config.parse import checked_value
from ..config.yaml_text import parse_override_value
from ..contracts.errors import ConfigError, UserError


QUOTED_AT_LENGTH = re.compile(r"('[^']{60})[^']*'")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as the rest of slimcore gives them: one line naming the
    argument and what to do (the CLI prints `slimcore: error: ...`, exit 2)."""

    def error(self, message: str):
        # argparse quotes what was given whole: a value of megabytes would be the message.
        message = QUOTED_AT_LENGTH.sub(r"\1...'", message.removeprefix("argument "))
        raise UserError(f"{message[:500]} (see `{self.prog} --help`)")


def setting_flag(cls: type, field: str) -> Callable[[str], Any]:
    """An argparse type for a flag that sets field `field` of dataclass `cls`: the text read
    as a `--set` value is, then checked against the field's type and valid values, so a
    flag takes what the config key takes (no 10**22 new tokens, no seed past 64 bits)."""

    def convert(text: str) -> Any:
        try:
            return checked_value(cls, field, parse_override_value(text, field), field)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(e.detail) from None

    convert.__name__ = field  # argparse names a failed type by it
    return convert

"""Every ``tradestats-serve`` flag from the environment too: ``--max-k`` is ``TRADESTATS_MAX_K``.

The variable sets the flag's default, so a flag given on the command line wins (a variable
whose flag is given is not even read). A value is checked exactly as the flag's would be (same
type, range and choices); a bad one is one line naming the variable, exit status 2, like a bad
flag (OneLineErrors: no usage block). On/off flags take 1/true/yes/on or
0/false/no/off. ``--help`` shows each flag's variable and its one default.
"""
from __future__ import annotations

import argparse
from typing import Mapping, Sequence

PREFIX = "TRADESTATS_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def variable_name(action: argparse.Action) -> str | None:
    """``TRADESTATS_<FLAG>`` for an option taking a value or a switch; None for --help and
    --version, which only print."""
    if action.default == argparse.SUPPRESS or isinstance(
            action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    long_options = [option for option in action.option_strings if option.startswith("--")]
    if not long_options:
        return None
    return PREFIX + long_options[0][2:].upper().replace("-", "_")


def is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0 and action.const is True


class OneLineErrors(argparse.ArgumentParser):
    """A refused command line or variable is one line on stderr (exit status 2): a service
    manager's log shows the reason, not a usage block of twenty lines above it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (--help lists every option)\n")


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str],
                      argv: Sequence[str] = ()) -> None:
    """Each flag's default from its variable, when set and the flag is not in argv."""
    for action in parser._actions:  # argparse offers no public list of its actions
        name = variable_name(action)
        if name is not None and name in environ and not given(action, argv):
            action.default = value_of(parser, action, name, environ[name])


def given(action: argparse.Action, argv: Sequence[str]) -> bool:
    """Whether the command line names the flag (``--flag``, ``--flag=value``)."""
    return any(word == option or word.startswith(option + "=")
               for word in argv for option in action.option_strings)


def value_of(parser: argparse.ArgumentParser, action: argparse.Action, name: str, text: str):
    if is_switch(action):
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        parser.error(f"{name}={text!r}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            parser.error(f"{name}: {error}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{name}={text!r}: choose from {', '.join(map(str, action.choices))}")
    return value


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its variable and its default, once: a flag may name its
    default in words (``default_text``), else the value is shown, else nothing (off, none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        name = variable_name(action)
        if name is None:
            return text
        default = getattr(action, "default_text", None)
        if getattr(action, "secret", False):
            default = None   # never print a key taken from the environment
        elif default is None and action.default not in (None, False):
            default = str(action.default)
        suffix = f"env {name}" + (f"; default: {default}" if default is not None else "")
        return f"{text} [{suffix.replace('%', '%%')}]"

"""The `slimcore` command: run, config, plugins, generate, eval, export, new-plugin,
build-native, and subcommands that plugins add.

Plugins are turned off before they are imported, so the CLI reads its `-p no:NAME` flags
and the YAML's `plugins.disable` before it discovers plugins, then builds the full parser
(plugin subcommands included) and dispatches.

Exit status: 0 done, 2 the user's mistake (one line on stderr, no traceback), 3 training
stopped itself, 128 + N after signal N, 1 a bug (traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field

from ..config.suggest import suggest
from ..config.yaml_text import apply_override, load_yaml
from ..contracts.errors import (ConfigError, TrainingHalted, UserError, describe_error,
                                traceback_wanted)
from ..host.manager import DISABLE_VARIABLE, SlimcorePluginManager, env_list
from . import evaluate, export, generate, new_plugin, plugin_list, training
from .arguments import OneLineParser

CONFIG_COMMANDS = ("run", "config")


def running_under_torchrun() -> bool:
    # Imported here: the module imports torch, which `slimcore --help` should not wait for.
    from ..train.distributed import launched_by_torchrun

    return launched_by_torchrun()


class Terminated(BaseException):
    """SIGTERM to a command other than `run` (which stops gracefully, saving): raised where
    the command is, so what it wrote aside is removed (an export's folder); exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated


def _thread_error_in_one_line(args) -> None:
    """A library's thread that dies (a tracker's writer on a full disk) is one line, as
    every error the user can act on is; SLIMCORE_TRACEBACK=1 adds where."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    print(f"slimcore: warning: thread {name} stopped: {describe_error(args.exc_value)}",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) \
        if argv[:1] != ["run"] and on_main_thread else None
    threads_hook, threading.excepthook = threading.excepthook, _thread_error_in_one_line
    try:
        code = _exit_status(argv)
    finally:
        threading.excepthook = threads_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if argv[:1] == ["run"] and running_under_torchrun():
        # Every output is flushed, fsynced and closed by now. A torchrun worker leaves
        # without the interpreter's teardown (and without destroying its process group,
        # see Distributed.stop): gloo's threads sometimes abort the process (exit -6) there,
        # failing a job that finished.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _exit_status(argv: list[str]) -> int:
    try:
        return _main(argv)
    except UserError as e:
        if traceback_wanted():
            traceback.print_exception(e)
        print(f"slimcore: error: {e}", file=sys.stderr)
        return 2
    except TrainingHalted as e:
        print(f"slimcore: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("slimcore: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("slimcore: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # What reads stdout went away (`slimcore generate ... | head`): as for SIGPIPE,
        # 128 + 13, quietly; stdout points at /dev/null so the exit's flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


@dataclass
class EarlyArgs:
    """What must be known before plugins are imported."""
    disabled: set[str] = field(default_factory=set)  # from -p no:NAME and plugins.disable
    strict: bool = False
    raw_config: dict | None = None


def read_early_args(argv: list[str]) -> EarlyArgs:
    early = EarlyArgs()
    values, assignments = [], []
    for i, token in enumerate(argv):
        if token == "-p" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif token.startswith("-p") and token not in ("-p",) and not token.startswith("--"):
            values.append(token[2:].lstrip("="))
        elif token == "--strict-plugins":
            early.strict = True
        elif token == "--set" and i + 1 < len(argv):
            assignments.append(argv[i + 1])
        elif token.startswith("--set="):
            assignments.append(token[len("--set="):])
    for value in values:
        if not value.startswith("no:") or len(value) == 3:
            raise UserError(f"-p {value}: expected -p no:NAME to disable plugin NAME")
        early.disabled.add(value[3:])
    positionals = [t for i, t in enumerate(argv) if not t.startswith("-")
                   and (i == 0 or argv[i - 1] not in ("-p", "--set"))]
    if len(positionals) >= 2 and positionals[0] in CONFIG_COMMANDS:
        early.raw_config = load_yaml(positionals[1])
        # The plugins section as the YAML and its --set overrides leave it (applied to a copy:
        # resolve_config applies every override in order later).
        plugins = {"plugins": dict(early.raw_config.get("plugins") or {})
                   if isinstance(early.raw_config.get("plugins"), dict) else {}}
        for assignment in assignments:
            if assignment.partition("=")[0].strip().startswith("plugins."):
                apply_override(plugins, assignment)
        section, source = plugins["plugins"], positionals[1]
        if any(a.partition("=")[0].strip() == "plugins.disable" for a in assignments):
            source = "--set"
        disable = section.get("disable") or []
        if not (isinstance(disable, list) and all(isinstance(n, str) for n in disable)):
            raise ConfigError("plugins.disable", "expected a list of plugin names", source)
        early.disabled.update(disable)
        early.strict = early.strict or section.get("strict") is True
    return early


def check_disabled_names(disabled: set[str], installed: dict) -> None:
    """A name switched off that no installed plugin has is a typo, not a no-op."""
    from_env = env_list(DISABLE_VARIABLE)
    unknown = sorted((disabled | from_env) - set(installed))
    if not unknown:
        return
    name = unknown[0]
    where = f"plugins.disable / -p no:{name}" if name in disabled else DISABLE_VARIABLE
    raise UserError(f"{where}: no plugin named '{name}' is installed{suggest(name, installed)} "
                    f"(installed: {', '.join(installed)}; see `slimcore plugins`)")


def _main(argv: list[str]) -> int:
    early = read_early_args(argv)
    pm = SlimcorePluginManager()
    pm.discover(disabled=early.disabled, strict=early.strict)
    check_disabled_names(early.disabled, pm.infos)
    parser = build_parser(pm)
    args = parser.parse_args(argv)
    args.plugin_manager = pm
    args.raw_config = early.raw_config
    args.argv = argv
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    return args.handler(args) or 0


def build_parser(pm: SlimcorePluginManager) -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("-p", dest="plugin_flags", action="append", default=[],
                        metavar="no:NAME", help="disable plugin NAME before it is imported")
    common.add_argument("--strict-plugins", action="store_true",
                        help="make every plugin load failure fatal")
    parser = OneLineParser(
        prog="slimcore", parents=[common],
        description="Train GPT-style language models on streamed text.")
    parser.add_argument("--version", action="version", version=f"slimcore {installed_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    training.add_parsers(sub, common, pm.flags)
    plugin_list.add_parser(sub, common)
    for command in (generate, evaluate, export):
        command.add_parser(sub, common)
    new_plugin.add_parser(sub)
    build = sub.add_parser("build-native", help="build the native libraries ahead of first use")
    build.add_argument("--cuda", action="store_true", help="the CUDA library too (needs nvcc)")
    build.set_defaults(handler=command_build_native)
    pm.hook.register_commands(subparsers=sub)
    return parser


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slimcore")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def command_build_native(args) -> int:
    from ..native.loader import command_build_native as build

    return build(args)

"""The `slimcore` command: run, config, plugins, generate, eval, export, and subcommands
that plugins add.

Plugins are turned off before they are imported, so the CLI reads its `-p no:NAME` flags
and the YAML's `plugins.disable` before it discovers plugins, then builds the full parser
(plugin subcommands included) and dispatches.

Exit status: 0 done, 2 the user's mistake (one line on stderr, no traceback), 1 a bug
(traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import dataclass, field

import yaml

from ..config.schema import (SMOKE_OVERRIDES, ConfigError, apply_override, load_yaml, resolve_config,
                     suggest)
from ..contracts.errors import TrainingHalted, UserError, traceback_wanted
from ..launch.distributed import launched_by_torchrun
from ..launch.training import execute_run
from ..commands.model_commands import add_commands as add_model_commands
from ..host.manager import SlimcorePluginManager

# The original scripts' flags, each a shorthand for one --set of a core key (plugins add
# theirs for their own keys through `declare_flags`).
CORE_FLAGS = {
    "--steps": ("run.steps", "optimizer steps (run.steps)"),
    "--viz-interval": ("intervals.viz", "steps between dashboards (intervals.viz)"),
    "--checkpoint-interval": ("intervals.checkpoint",
                              "steps between checkpoints (intervals.checkpoint)"),
    "--output-dir": ("output.dir", "where outputs go (output.dir; default runs/<name>)"),
    "--device": ("run.device", "auto, cpu, cuda, cuda:N (run.device)"),
    "--seed": ("run.seed", "seeds every generator and the data order (run.seed)"),
}
CONFIG_COMMANDS = ("run", "config")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    code = _exit_status(argv)
    if argv[:1] == ["run"] and launched_by_torchrun():
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


def _main(argv: list[str]) -> int:
    early = read_early_args(argv)
    pm = SlimcorePluginManager()
    pm.discover(disabled=early.disabled, strict=early.strict)
    unknown = sorted(early.disabled - set(pm.infos))
    if unknown:
        raise UserError(f"plugins.disable / -p no:{unknown[0]}: no plugin named '{unknown[0]}' "
                        f"is installed{suggest(unknown[0], pm.infos)} (installed: "
                        f"{', '.join(pm.infos)}; see `slimcore plugins`)")
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-p", dest="plugin_flags", action="append", default=[],
                        metavar="no:NAME", help="disable plugin NAME before it is imported")
    common.add_argument("--strict-plugins", action="store_true",
                        help="make every plugin load failure fatal")
    parser = argparse.ArgumentParser(
        prog="slimcore", parents=[common],
        description="Train GPT-style language models on streamed text.")
    parser.add_argument("--version", action="version", version=f"slimcore {installed_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    flags = config_flags(pm)
    run = sub.add_parser("run", parents=[common], help="train as a YAML config says")
    add_config_arguments(run, flags)
    run.set_defaults(handler=command_run, flags=flags)

    config = sub.add_parser("config", parents=[common], help="print the resolved config")
    add_config_arguments(config, flags)
    config.set_defaults(handler=command_config, flags=flags)

    plugins = sub.add_parser("plugins", parents=[common], help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--check", action="store_true",
                         help="exit 1 when a plugin failed to load (for a plugin's CI)")
    plugins.set_defaults(handler=command_plugins)

    add_model_commands(sub, common)

    from ..commands.new_plugin import KINDS, command_new_plugin

    new = sub.add_parser("new-plugin", help="write a new plugin distribution to start from",
                         description="Write an installable plugin distribution of KIND, with "
                                     "tests that pass as generated.")
    new.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    new.add_argument("name", metavar="NAME", help="the plugin's name (lower case, digits, _)")
    new.add_argument("--output", metavar="DIR",
                     help="where to write it (default ./slimcore-NAME)")
    new.set_defaults(handler=command_new_plugin)

    build = sub.add_parser("build-native", help="build the native kernels ahead of first use")
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


def config_flags(pm: SlimcorePluginManager) -> dict[str, tuple[str, str]]:
    """{flag: (dotted key, help)}: the core's and every loaded plugin's (`declare_flags`)."""
    flags, owners = dict(CORE_FLAGS), {flag: "slimcore" for flag in CORE_FLAGS}
    for impl in pm.hook.declare_flags.get_hookimpls():
        for flag, (key, text) in (impl.function() or {}).items():
            if flag in flags or not flag.startswith("--"):
                raise UserError(f"plugin '{impl.plugin_name}' declares the flag {flag!r}, "
                                + (f"which '{owners[flag]}' already has" if flag in flags
                                   else "which does not start with --")
                                + "; disable one of them")
            flags[flag], owners[flag] = (key, text), impl.plugin_name
    return flags


def add_config_arguments(parser: argparse.ArgumentParser,
                         flags: dict[str, tuple[str, str]]) -> None:
    parser.add_argument("config", help="the run's YAML file")
    for flag, (key, text) in flags.items():
        # The value is read as YAML and checked by its section, like --set's.
        parser.add_argument(flag, dest=_dest(flag), metavar="VALUE", help=text)
    parser.add_argument("--test", action="store_true", help="smoke run: tiny model, few steps")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from a checkpoint; auto: the newest intact one, if any")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder that holds an earlier run (it is "
                             "moved to <folder>.replaced-<time>, not deleted)")
    parser.add_argument("--set", dest="assignments", action="append", default=[],
                        metavar="KEY=VALUE", help="set any config key, e.g. model.width=256")


def overrides_from(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `dotted.key=value` overrides the flags make, in order (--test, the flags, --set),
    and the flag each key came from, for error messages."""
    overrides = list(SMOKE_OVERRIDES) if args.test else []
    origins = {a.partition("=")[0]: "--test" for a in overrides}
    for flag, (key, _) in args.flags.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            overrides.append(f"{key}={value}")
            origins[key] = flag
    for assignment in args.assignments:
        origins[assignment.partition("=")[0].strip()] = "--set"
    return overrides + args.assignments, origins


def _dest(flag: str) -> str:
    return "flag_" + flag.lstrip("-").replace("-", "_")


def command_run(args: argparse.Namespace) -> int:
    overrides, origins = overrides_from(args)
    config = resolve_config(args.config, overrides, args.plugin_manager, raw=args.raw_config,
                            origins=origins)
    run = execute_run(config, args.plugin_manager, resume=args.resume, overwrite=args.overwrite)
    if run.stop_signal is not None:
        if config.checkpoint.checkpointer and run.is_main_process:
            print(f"slimcore: stopped; go on with: {resume_command(args.argv)}",
                  file=sys.stderr, flush=True)
        return 128 + run.stop_signal  # 143 for SIGTERM, as schedulers expect
    return 0


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same, with `--resume auto`."""
    import shlex

    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--resume":
            skip = True
        elif not token.startswith("--resume=") and token != "--overwrite":
            kept.append(token)
    return shlex.join(["slimcore", *kept, "--resume", "auto"])


def command_config(args: argparse.Namespace) -> int:
    overrides, origins = overrides_from(args)
    config = resolve_config(args.config, overrides, args.plugin_manager, raw=args.raw_config,
                            origins=origins)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def command_plugins(args: argparse.Namespace) -> int:
    report = args.plugin_manager.report()
    failed = [p["name"] for p in report if p["status"] == "failed"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        rows = [("NAME", "VERSION", "DISTRIBUTION", "STATUS", "HOOKS OR ERROR")]
        rows += [(p["name"], p["version"], p["distribution"], p["status"],
                  ", ".join(p["hooks"]) if p["status"] == "loaded" else (p["error"] or ""))
                 for p in report]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[4])
    if args.check and failed:
        print(f"slimcore: {len(failed)} plugin(s) failed to load: {', '.join(failed)} "
              "(SLIMCORE_TRACEBACK=1 shows why in full)", file=sys.stderr)
        return 1
    return 0
